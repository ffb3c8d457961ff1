"""Runs a bundle's .pte on this desktop through ExecuTorch's Python runtime.

The loop is the LLM runners' (TextLLMRunner, Android LlmModule, iOS TextRunner): `forward` once
with the whole prompt at start_pos 0, then once per new token; the KV cache stays inside the
program. Token picks (greedy or sampled), stop tokens, streaming and timings as in
bitexport.runtime.generate; the stop tokens are the program's own `get_eos_ids`, as those
runners read them.

Kernels: the LLM custom ops (KV cache, SDPA) come with the executorch wheel; a tq2 .pte also needs
bitexport's kernel library, built or found by runtime_ops.load_kernels(). Threads: ExecuTorch's
one thread pool serves XNNPACK and the tq2 kernel alike; `set_threads` resizes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import weakref
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from bitexport.bundle.store import Artifact, Bundle
from bitexport.errors import BundleError, EnvironmentProblem, InputError
from bitexport.runtime.base import check_fits
from bitexport.runtime.generate import Generation, TokenCallback, timed_generate
from bitexport.runtime.sampling import GREEDY, SamplingConfig
from bitexport.targets.executorch.kernels import TQ2, load_runtime_kernels

KERNELS_FIX = (
    "let bitexport build them (needs a C++17 compiler and `pip install 'cmake>=3.28' ninja`) or point "
    "BITEXPORT_KERNELS_LIB at a prebuilt libbitexport_kernels; or export with --weights int4 for a stock runtime"
)


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to fd 2 (ExecuTorch logs each missing kernel there, dozens
    of lines) so that a failure becomes one line; the text is handed back in the yielded list."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


# every ExecutorchRunner not yet collected: set_threads reloads them all (see there)
_LIVE: "weakref.WeakSet[ExecutorchRunner]" = weakref.WeakSet()


def _portable_lib():
    from executorch.extension.pybindings import portable_lib

    return portable_lib


class ExecutorchRunner:
    name = "executorch"

    def __init__(self, pte: str | Path, stop_ids: tuple[int, ...] | None = None, needs: list[str] | None = None) -> None:
        """`stop_ids`: the tokens that end a generation; None: the program's `get_eos_ids`."""
        self.pte = Path(pte)
        if not self.pte.is_file():
            raise BundleError(f"{self.pte}: missing; export the bundle again")
        self.needs = list(needs) if needs is not None else [TQ2]
        load_runtime_kernels(self.needs)
        self._load()
        self.max_seq_len = int(self._program.load_method("get_max_seq_len").execute([])[0])
        self.stop_ids = self.program_stop_ids() if stop_ids is None else tuple(stop_ids)
        _LIVE.add(self)

    def _load(self) -> None:
        """Load the program and its forward method on the thread pool as it is now."""
        from executorch.runtime import Runtime

        try:
            program = Runtime.get().load_program(self.pte)
        except (RuntimeError, ValueError) as e:
            raise BundleError(f"{self.pte}: not a loadable .pte ({e}); export the bundle again") from None
        self._program = program  # a Method does not keep its Program alive
        log: list[str] = []
        try:
            with _captured_stderr() as log:
                self._forward = program.load_method("forward")
        except RuntimeError as e:
            raise self._load_error(e, log) from None

    def program_stop_ids(self) -> tuple[int, ...]:
        """The program's constant method `get_eos_ids` (what ExecuTorch's LLM runners stop at);
        () for a program without it."""
        if "get_eos_ids" not in self._program.method_names:
            return ()
        return tuple(int(i) for i in self._program.load_method("get_eos_ids").execute([]))

    @classmethod
    def for_artifact(cls, bundle: Bundle, artifact: Artifact) -> "ExecutorchRunner":
        needs = artifact.details.get("custom_kernels")
        if needs is None:  # a manifest without the field: assume what its weight format implies
            needs = [TQ2] if artifact.weight_format == "tq2" else []
        return cls(bundle.path / artifact.path, None, needs)

    def _load_error(self, e: RuntimeError, log: list[str]) -> Exception:
        text = str(e).strip()
        # ExecuTorch reports a kernel it cannot find as Error::OperatorMissing (0x14) at load_method
        # and logs "Missing operator: [i] ns::name.overload" for each
        missing = sorted({m.group(1) for line in log if (m := re.search(r"Missing operator: \[\d+\] (\S+)", line))})
        if missing or "0x14" in text or "0x:14" in text:
            ops = ", ".join(missing) or "unknown"
            if any(op.startswith("bitexport::") for op in missing) or (not missing and TQ2 in self.needs):
                return EnvironmentProblem(
                    f"this .pte needs bitexport's tq2 kernels ({ops}), which this ExecuTorch runtime has not "
                    f"loaded; {KERNELS_FIX}"
                )
            return EnvironmentProblem(
                f"{self.pte.name} uses operators this ExecuTorch runtime lacks ({ops}); "
                "install executorch==1.5.1 (its LLM custom ops and quantized kernels) or export the bundle again"
            )
        return BundleError(f"{self.pte}: ExecuTorch could not load its forward method ({text}); export the bundle again")

    def set_threads(self, n: int) -> None:
        """Resize ExecuTorch's thread pool (XNNPACK and the tq2 kernel both run on it).

        The pool is one per process, and XNNPACK keeps the pool it was handed when a method was
        loaded: `_unsafe_reset_threadpool` frees that pool, so a method loaded before it ran on
        freed memory (intermittent segfaults and futex aborts). So every live runner's program
        and methods are dropped first and loaded again on the new pool; the KV cache goes with
        them, which loses nothing (each generate() starts at position 0)."""
        if n < 1:
            raise InputError("--threads must be at least 1")
        pl = _portable_lib()
        if pl._threadpool_get_thread_count() == n:
            return
        live = list(_LIVE)
        for r in live:
            # the Program caches its loaded methods: dropping both frees the XNNPACK runtimes
            r._forward = r._program = None
        pl._unsafe_reset_threadpool(n)
        for r in live:
            r._load()

    @staticmethod
    def threads() -> int:
        return int(_portable_lib()._threadpool_get_thread_count())

    def _step(self, tokens: list[int], pos: int) -> torch.Tensor:
        logits = self._forward.execute([torch.tensor([tokens], dtype=torch.long), torch.tensor([pos], dtype=torch.long)])[0]
        return logits.reshape(-1, logits.shape[-1])[-1]

    def logits(self, tokens: list[int], pos: int) -> torch.Tensor:
        """One forward call: logits [1, V] of the last of `tokens` placed at `pos` (for tests)."""
        return self._forward.execute([torch.tensor([tokens], dtype=torch.long), torch.tensor([pos], dtype=torch.long)])[0]

    def next_token_logits(self, prompt_ids: list[int], continuation: list[int]) -> "np.ndarray":
        """The LLM-runner loop with every step's logits kept: the prompt in one call, then one
        token a call, as `generate` runs it (so these are the logits its picks came from)."""
        check_fits(len(prompt_ids) + len(continuation), self.max_seq_len + 1, "this .pte")
        # the output buffer is planned memory that the next call overwrites: copy each row out
        rows = [self.logits(list(prompt_ids), 0).reshape(-1).float().numpy().copy()]
        pos = len(prompt_ids)
        for t in continuation:
            rows.append(self.logits([int(t)], pos).reshape(-1).float().numpy().copy())
            pos += 1
        return np.stack(rows)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, sampling: SamplingConfig = GREEDY,
                 on_token: TokenCallback | None = None) -> Generation:
        if not prompt_ids:
            raise InputError("the prompt is empty")
        check_fits(len(prompt_ids), self.max_seq_len, "this .pte")
        # positions >= start_pos + n are never read (causal SDPA from start_pos), so a new prompt
        # at position 0 needs no cache reset
        return timed_generate(self._step, prompt_ids, max_new_tokens, self.max_seq_len, self.stop_ids, sampling, on_token)
