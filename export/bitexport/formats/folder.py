"""Reading a model folder: config.json, single or sharded safetensors, tokenizer.json.

Every failure here is an InputError whose message names the file and the fix, raised before
any model is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from bitexport.errors import InputError

INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class ModelFolder:
    path: Path
    config: dict
    weight_files: list[Path]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def name(self) -> str:
        from bitexport.formats.hub import snapshot_name

        return snapshot_name(self.path) or self.path.resolve().name


def open_folder(path: str | Path) -> ModelFolder:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder; pass the path of a model folder or a bundle")
    if not p.is_dir():
        raise InputError(f"{p}: is a file, not a model folder; pass the folder holding config.json")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise InputError(
            f"{p}: not a model folder (no config.json); pass a Hugging Face checkpoint folder "
            "with config.json, *.safetensors and tokenizer.json"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{cfg_path}: is not valid JSON ({e}); restore the file from the checkpoint") from None
    if not isinstance(config, dict):
        raise InputError(f"{cfg_path}: must hold a JSON object; restore the file from the checkpoint")
    return ModelFolder(p, config, _weight_files(p))


def _weight_files(p: Path) -> list[Path]:
    index = p / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{index}: not a valid safetensors index; restore it from the checkpoint") from None
        files = [p / f for f in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{p}: shard(s) {', '.join(missing)} named by {INDEX_FILE} are missing; download them")
        return files
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise InputError(f"{p}: no *.safetensors weights; bitexport reads safetensors checkpoints only")
    return files


def read_tensors(folder: ModelFolder) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint, by name. Corrupt or truncated files become InputError."""
    tensors: dict[str, torch.Tensor] = {}
    for f in folder.weight_files:
        try:
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    tensors[key] = sf.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(
                f"{f}: truncated or corrupt safetensors file ({reason}); download it again"
            ) from None
    return tensors


def require_tokenizer(folder: ModelFolder) -> Path:
    tok = folder.tokenizer_path
    if not tok.is_file():
        raise InputError(
            f"{folder.path}: no {TOKENIZER_FILE}; copy the model's tokenizer.json into the folder "
            "(bitexport bundles need a Hugging Face tokenizer.json)"
        )
    return tok


class TensorTable:
    """Named tensors with shape and finiteness checks that report the offending name.

    `used` records every tensor the loader took, so that the loader can refuse a checkpoint
    holding tensors its architecture has no place for (they would be silently dropped)."""

    def __init__(self, tensors: dict[str, torch.Tensor], source: Path, described_by: str = "config.json") -> None:
        self.tensors = tensors
        self.source = source
        self.described_by = described_by  # what states the architecture, for messages
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if name not in self.tensors:
            raise InputError(
                f"{self.source}: tensor {name!r} is missing; the weights do not match {self.described_by} "
                "(wrong or incomplete checkpoint)"
            )
        t = self.tensors[name]
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise InputError(
                f"{self.source}: tensor {name!r} has shape {tuple(t.shape)} but {self.described_by} implies "
                f"{tuple(shape)}; fix {self.described_by} or use the weights it belongs to"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InputError(
                f"{self.source}: tensor {name!r} holds NaN or inf; the checkpoint is damaged, "
                "download or export it again"
            )
        self.used.add(name)
        return t

    def unused(self) -> list[str]:
        return sorted(set(self.tensors) - self.used)
