"""export: model folder -> load -> each target's emit -> one bundle, written atomically."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from bitexport.bundle import check_destination, staged_bundle, write_manifest
from bitexport.errors import TargetError
from bitexport.load import LoadedModel, load_model
from bitexport.targets import ExportOptions, targets_for


def progress(msg: str) -> None:
    print(f"[bitexport] {msg}", file=sys.stderr, flush=True)


def source_summary(loaded: LoadedModel) -> dict:
    return {
        "name": loaded.name,
        "format": loaded.source_format,
        "path": str(loaded.source_path.resolve()),
        "config": loaded.config.to_dict(),
        "parameters": loaded.config.parameter_counts(),
        **loaded.details,
    }


def export_bundle(model_path: str | Path, platform: str, out: str | Path, options: ExportOptions, force: bool = False) -> Path:
    out = Path(out)
    check_destination(out, force)
    targets = targets_for(platform)
    for t in targets:
        if options.weights is not None and options.weights not in t.weights:
            raise TargetError(
                f"--weights {options.weights} is not available for target {t.name}; choose one of {', '.join(t.weights)}"
            )
    t0 = time.perf_counter()
    progress(f"loading {model_path}")
    loaded = load_model(model_path, options.max_seq_len)
    options = replace(options, max_seq_len=loaded.model.max_seq_len)
    for t in targets:
        t.check(loaded, options)
    with staged_bundle(out, force) as tmp:
        artifacts = []
        for t in targets:
            opts = options if options.weights is not None else replace(options, weights=t.weights[0])
            progress(f"exporting {t.name} ({opts.weights})")
            artifacts += t.emit(loaded, opts, tmp)
        shutil.copyfile(loaded.tokenizer_path, tmp / "tokenizer.json")
        write_manifest(
            tmp,
            target=platform,
            source=source_summary(loaded),
            tokenizer="tokenizer.json",
            bos_token_id=loaded.config.bos_token_id,
            eos_token_ids=list(loaded.config.eos_token_ids),
            max_seq_len=options.max_seq_len,
            vocab_size=loaded.config.vocab_size,
            artifacts=artifacts,
        )
    progress(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return out
