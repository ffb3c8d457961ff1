"""The Python API, beside the CLI: `bitexport.export(model, target, out, config=...) -> Bundle`.

    import bitexport
    from bitexport.targets.executorch.config import ExecutorchConfig

    bundle = bitexport.export("path/to/model", "android", "bundles/android",
                              config=ExecutorchConfig(weights="int4"))

model folder -> load -> each target's check, then emit into a temporary folder -> one bundle,
renamed into place (a failed export leaves nothing behind).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Iterable

from bitexport.bundle.chat import chat_fields
from bitexport.bundle.store import (
    Bundle, check_destination, read_bundle, staged_bundle, tokenizer_adds_bos, write_manifest,
)
from bitexport.errors import TargetError
from bitexport.formats import LoadedModel, LoadOptions, load_model
from bitexport.log import step
from bitexport.targets import TargetConfig, config_class, platform_targets, targets_for

log = logging.getLogger("bitexport")


def source_summary(loaded: LoadedModel) -> dict:
    return {
        "name": loaded.name,
        "format": loaded.source_format,
        "path": str(loaded.source_path.resolve()),
        "config": loaded.config.to_dict(),
        "parameters": loaded.config.parameter_counts(),
        **loaded.details,
    }


def resolve_configs(platform: str, config: TargetConfig | Iterable[TargetConfig] | None) -> dict[str, TargetConfig]:
    """One config per target of `platform`: the ones given, the defaults for the rest. A config
    for a target the platform does not hold is an error (it would be silently ignored)."""
    names = platform_targets(platform)
    given = [config] if isinstance(config, TargetConfig) else list(config or ())
    configs = {}
    for c in given:
        if c.target not in names:
            raise TargetError(f"a {type(c).__name__} was given, but --target {platform} holds {', '.join(names)}")
        configs[c.target] = c
    return {n: configs.get(n) or config_class(n)() for n in names}


def export(
    model: str | Path,
    target: str,
    out: str | Path,
    *,
    config: TargetConfig | Iterable[TargetConfig] | None = None,
    max_seq_len: int | None = None,
    force: bool = False,
    load: LoadOptions = LoadOptions(),
    revision: str | None = None,
) -> Bundle:
    """Export `model` (a model folder, a GGUF file, or a Hugging Face Hub id at `revision`) for
    `target` (a platform: android, ios, desktop, or a target name) into the bundle folder `out`;
    `config` holds each target's options (defaults otherwise)."""
    out = Path(out)
    check_destination(out, force)
    configs = resolve_configs(target, config)
    targets = targets_for(target)
    t0 = time.perf_counter()
    with step(f"loading {model}"):
        loaded = load_model(model, max_seq_len, load, revision=revision)
    for t in targets:
        t.check(loaded, configs[t.name])
    with staged_bundle(out, force) as tmp:
        artifacts = []
        for t in targets:
            cfg = configs[t.name]
            with step(f"exporting {t.name} ({cfg.weights})"):
                artifacts += t.emit(loaded, cfg, tmp)
        shutil.copyfile(loaded.tokenizer_path, tmp / "tokenizer.json")
        eos = list(loaded.config.eos_token_ids)
        # the folder beside tokenizer.json holds tokenizer_config.json / generation_config.json: the
        # model folder, or for a GGUF the folder its converted tokenizer was written to
        chat = chat_fields(loaded.tokenizer_path.parent, tmp / "tokenizer.json", loaded.config.bos_token_id, eos,
                           tokenizer_adds_bos(tmp / "tokenizer.json", loaded.config.bos_token_id))
        write_manifest(
            tmp,
            target=target,
            source=source_summary(loaded),
            tokenizer="tokenizer.json",
            bos_token_id=loaded.config.bos_token_id,
            eos_token_ids=eos,
            max_seq_len=loaded.model.max_seq_len,
            vocab_size=loaded.config.vocab_size,
            artifacts=artifacts,
            chat=chat,
        )
    log.info("wrote %s in %.1f s", out, time.perf_counter() - t0)
    return read_bundle(out)
