"""load: a model folder in, one LoadedModel out. One module per checkpoint format."""

from __future__ import annotations

from pathlib import Path

from bitexport.errors import InputError
from bitexport.formats import hf_bitnet, onebit_llm
from bitexport.formats.common import LoadedModel, StoredFormat
from bitexport.formats.folder import ModelFolder, open_folder

DEFAULT_MAX_SEQ_LEN = 512

SUPPORTED = "model_type 'bitnet' (BitNetForCausalLM) or model_type 'llama' with architectures ['BitnetForCausalLM'] (1bitLLM)"


def detect_format(folder: ModelFolder) -> str:
    raw = folder.config
    model_type = raw.get("model_type")
    archs = raw.get("architectures") or []
    if model_type == "bitnet":
        return "hf-bitnet"
    if model_type == "llama" and onebit_llm.ARCHITECTURE in archs:
        return "1bitllm"
    raise InputError(
        f"{folder.path}: unsupported model (model_type {model_type!r}, architectures {archs}); "
        f"bitexport reads {SUPPORTED}"
    )


def load_model(path: str | Path, max_seq_len: int | None = None) -> LoadedModel:
    """Read, validate and build the model in `path`; the KV cache holds `max_seq_len` positions."""
    folder = open_folder(path)
    fmt = detect_format(folder)
    if max_seq_len is None:
        max_seq_len = min(DEFAULT_MAX_SEQ_LEN, int(folder.config.get("max_position_embeddings", DEFAULT_MAX_SEQ_LEN)))
    if max_seq_len < 2:
        raise InputError(f"--max-seq-len must be at least 2 (got {max_seq_len})")
    module = hf_bitnet if fmt == "hf-bitnet" else onebit_llm
    return module.load(folder, max_seq_len)


__all__ = ["LoadedModel", "StoredFormat", "detect_format", "load_model", "open_folder"]
