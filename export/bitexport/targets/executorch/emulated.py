"""A bundle's .pte on emulated aarch64: ExecuTorch's C++ runtime from the aarch64 executorch wheel,
with bitexport's kernels, under qemu-user (bitexport.runtime_ops.emulate). A Runner like the
desktop ExecutorchRunner, so `bitexport run/verify --emulate aarch64` report it the same way;
its tokens/s are qemu's (an x86 core translating aarch64 code), not a phone's.
"""

from __future__ import annotations

from pathlib import Path

from bitexport.bundle.store import Artifact, Bundle
from bitexport.errors import BundleError, InputError
from bitexport.runtime.generate import Generation, TokenCallback
from bitexport.runtime.sampling import GREEDY, SamplingConfig

# what `--emulate` accepts
EMULATED_ARCHES = ("aarch64",)


class EmulatedExecutorchRunner:
    name = "executorch (emulated aarch64, qemu)"
    emulated = "aarch64"

    def __init__(self, pte: str | Path, max_seq_len: int, stop_ids: tuple[int, ...] = ()) -> None:
        from bitexport.runtime_ops import emulate

        self.pte = Path(pte)
        if not self.pte.is_file():
            raise BundleError(f"{self.pte}: missing; export the bundle again")
        self.max_seq_len = int(max_seq_len)
        self.stop_ids = tuple(stop_ids)
        self._threads: int | None = None
        # toolchain, wheel and build problems surface when the runner is opened, as a desktop
        # runner's missing kernels do, not halfway through a verify
        emulate.build_runner()
        emulate.check_tools()

    @classmethod
    def for_artifact(cls, bundle: Bundle, artifact: Artifact) -> "EmulatedExecutorchRunner":
        return cls(bundle.path / artifact.path, bundle.max_seq_len, bundle.stop_token_ids)

    def set_threads(self, n: int) -> None:
        """The emulated runtime's thread-pool size for the next generate() (qemu runs each guest
        thread on a host thread, so this is a host thread count too)."""
        if n < 1:
            raise InputError("--threads must be at least 1")
        self._threads = int(n)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, sampling: SamplingConfig = GREEDY,
                 on_token: TokenCallback | None = None) -> Generation:
        """Greedy only: the emulated C++ runner picks argmax itself. Its tokens reach `on_token`
        when the emulated run ends (qemu hands them back at once)."""
        from bitexport.runtime_ops.emulate import emulated_generation

        if not sampling.greedy:
            raise InputError("--emulate aarch64 decodes greedily only (the C++ runner picks argmax); "
                             "drop --temperature or run without --emulate")
        if not prompt_ids:
            raise InputError("the prompt is empty")
        if len(prompt_ids) >= self.max_seq_len:
            raise InputError(
                f"the prompt has {len(prompt_ids)} tokens; this .pte holds {self.max_seq_len} positions: "
                "shorten the prompt or export with a larger --max-seq-len"
            )
        gen = emulated_generation(self.pte, prompt_ids, max_new_tokens, self._threads, self.stop_ids)
        for t in gen.tokens if on_token is not None else ():
            on_token(t)
        return gen


def check_arch(arch: str) -> str:
    if arch not in EMULATED_ARCHES:
        raise InputError(f"--emulate {arch}: only {', '.join(EMULATED_ARCHES)} can be emulated; use --emulate aarch64")
    return arch


def emulated_runner(bundle: Bundle, artifact: Artifact, arch: str) -> EmulatedExecutorchRunner:
    """The emulated runner of one of `bundle`'s artifacts; only ExecuTorch .pte files emulate."""
    check_arch(arch)
    if artifact.target != "executorch":
        raise InputError(
            f"{artifact.path} is a {artifact.target} artifact; --emulate {arch} runs ExecuTorch .pte files only "
            "(export one with `bitexport export --target android`)"
        )
    return EmulatedExecutorchRunner.for_artifact(bundle, artifact)


__all__ = ["EMULATED_ARCHES", "EmulatedExecutorchRunner", "check_arch", "emulated_runner"]
