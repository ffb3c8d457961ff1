"""Silence the libraries' chatter that tells a bitexport user nothing they can act on.

torch, torchao, ExecuTorch and coremltools print on import and during export: CUDA-only torchao
extensions failing to load on a CPU machine, coremltools' untested-version and missing-macOS-
framework notices, deprecation warnings from inside the libraries, buffer-mutation notices that
the LLM-runner contract (KV cache in mutable buffers) makes expected, and coremltools' progress
bars. Without this a desktop export prints some sixty lines around our own five.
`bitexport --verbose` leaves all of it on.
"""

from __future__ import annotations

import logging
import os
import warnings

_LOGGERS = ("torchao", "torch.utils._pytree", "coremltools")
_EXPECTED = (
    "Mutation on a buffer",  # the KV cache lives in mutable buffers by design
    "Torch var .* is added again",
)


def quiet_loggers() -> None:
    """The libraries' own loggers only: safe to call from library code (lowering, runners)."""
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_libraries() -> None:
    """Loggers, warnings and progress bars: for the command-line tool's process only."""
    # tqdm reads TQDM_* when it is imported: set before coremltools imports it
    os.environ.setdefault("TQDM_DISABLE", "1")
    quiet_loggers()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for message in _EXPECTED:
        warnings.filterwarnings("ignore", message=message)
