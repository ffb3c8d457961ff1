"""bitexport's one logger, its progress display, and the silencing of the libraries' chatter.

Library code logs to `logging.getLogger("bitexport")`; the CLI attaches one handler that prints
"[bitexport] message" on stderr (`--verbose` adds debug lines, such as each lowering pass's count).
Long work shows one tqdm bar (`progress`), on a terminal only.

torch, torchao, ExecuTorch and coremltools print on import and during export: CUDA-only torchao
extensions failing to load on a CPU machine, coremltools' untested-version and missing-macOS-
framework notices, deprecation warnings from inside the libraries, buffer-mutation notices that
the LLM-runner contract (KV cache in mutable buffers) makes expected, and coremltools' progress
bars. Without `quiet_libraries` a desktop export prints some sixty lines around our own five.
`bitexport --verbose` leaves all of it on.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger("bitexport")

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


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (redirected, captured by a test), not to the
    stream that was current when the handler was made."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(verbose: bool = False) -> None:
    """The CLI's handler: one "[bitexport] ..." line per message on stderr."""
    if any(getattr(h, "_bitexport", False) for h in log.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("[bitexport] %(message)s"))
    handler._bitexport = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """Log the start of a long step and, at debug level, how long it took."""
    log.info(message)
    t0 = time.perf_counter()
    yield
    log.debug("%s: %.1f s", message, time.perf_counter() - t0)


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    """A progress bar over `items` on stderr when it is a terminal; the items unchanged otherwise."""
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    # explicit disable=False: quiet_libraries sets TQDM_DISABLE for the libraries' own bars
    return tqdm(items, desc=f"[bitexport] {description}", total=total, disable=False, leave=False, file=sys.stderr)
