"""A runner for what the user points at: a bundle (the first artifact this machine can run, or a
chosen one) or a model folder (the PyTorch reference). `bitexport run`, `bench` and the tests open
runners only through this."""

from __future__ import annotations

from pathlib import Path

from bitexport.errors import EnvironmentProblem, InputError
from bitexport.runtime.base import Runner


def open_runner(
    path: str | Path,
    threads: int | None = None,
    *,
    artifact: int | None = None,
    max_seq_len: int | None = None,
    emulate: str | None = None,
) -> tuple[Runner, Path]:
    """(runner, the tokenizer.json its prompts are encoded with). `max_seq_len` applies to model
    folders only (a bundle's cache length was fixed at export). `emulate="aarch64"`: the bundle's
    first ExecuTorch .pte (or the chosen artifact) on emulated aarch64 under qemu
    (targets/executorch/emulated.py)."""
    from bitexport.bundle.store import is_bundle, read_bundle

    path = Path(path)
    if emulate is not None:
        return _open_emulated(path, threads, artifact, emulate)
    if path.is_dir() and is_bundle(path):
        from bitexport.targets import get_target

        bundle = read_bundle(path)
        # runtimes' loaders can crash on a damaged file instead of raising: check it first
        bundle.check_before_loading()
        candidates = bundle.artifacts if artifact is None else [bundle.artifacts[artifact]]
        why: list[tuple[str, EnvironmentProblem]] = []
        for a in candidates:
            try:
                runner = get_target(a.target).runner(bundle, a)
            except EnvironmentProblem as e:
                why.append((a.path, e))
                continue
            if threads:
                runner.set_threads(threads)
            return runner, bundle.tokenizer_path
        if len(why) == 1:  # the artifact's own reason names the fix best
            raise why[0][1]
        raise EnvironmentProblem(
            f"{path}: no artifact of this bundle runs on this machine ({'; '.join(f'{p}: {e}' for p, e in why)}); "
            "export one for this desktop with `bitexport export --target desktop`"
        )
    from bitexport.formats import load_model
    from bitexport.runtime.reference import ReferenceRunner

    loaded = load_model(path, max_seq_len)
    return ReferenceRunner(loaded, threads), loaded.tokenizer_path


def _open_emulated(path: Path, threads: int | None, artifact: int | None, arch: str) -> tuple[Runner, Path]:
    from bitexport.bundle.store import is_bundle, read_bundle
    from bitexport.targets.executorch.emulated import check_arch, emulated_runner

    check_arch(arch)
    if not (path.is_dir() and is_bundle(path)):
        raise InputError(
            f"{path} is not a bundle; --emulate {arch} runs a bundle's .pte (export one with "
            "`bitexport export --target android`)"
        )
    bundle = read_bundle(path)
    if artifact is not None:
        chosen = bundle.artifacts[artifact]
    else:
        pte = [a for a in bundle.artifacts if a.target == "executorch"]
        if not pte:
            raise InputError(
                f"{path} holds no ExecuTorch .pte ({', '.join(a.target for a in bundle.artifacts)} only); "
                f"--emulate {arch} runs ExecuTorch artifacts: export one with `bitexport export --target android`"
            )
        chosen = pte[0]
    runner = emulated_runner(bundle, chosen, arch)
    if threads:
        runner.set_threads(threads)
    return runner, bundle.tokenizer_path
