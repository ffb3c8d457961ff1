"""A runner for what the user points at: a bundle (the first artifact this machine can run, or a
chosen one) or a model folder (the PyTorch reference). `bitexport run`, `bench` and the tests open
runners only through this."""

from __future__ import annotations

from pathlib import Path

from bitexport.errors import EnvironmentProblem
from bitexport.runtime.base import Runner


def open_runner(
    path: str | Path, threads: int | None = None, *, artifact: int | None = None, max_seq_len: int | None = None
) -> tuple[Runner, Path]:
    """(runner, the tokenizer.json its prompts are encoded with). `max_seq_len` applies to model
    folders only (a bundle's cache length was fixed at export)."""
    from bitexport.bundle.store import is_bundle, read_bundle

    path = Path(path)
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
