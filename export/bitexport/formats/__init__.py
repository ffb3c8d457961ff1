"""load: a model folder in, one LoadedModel out. One module per checkpoint format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bitexport.errors import InputError
from bitexport.formats import hf_bitnet, llama_bitnet, onebit_llm
from bitexport.formats.common import LoadedModel, StoredFormat
from bitexport.formats.folder import ModelFolder, open_folder

DEFAULT_MAX_SEQ_LEN = 512

SUPPORTED = (
    "model_type 'bitnet' (BitNetForCausalLM), model_type 'llama' with architectures ['BitnetForCausalLM'] "
    "(1bitLLM), or a Llama checkpoint with quantization_config.quant_method 'bitnet' (Falcon3-1.58bit, "
    "Falcon-E, Llama3-8B-1.58)"
)


@dataclass(frozen=True)
class LoadOptions:
    """How a checkpoint is read. `ternarize`: absmean-ternarize the layer linears of a full-precision
    checkpoint at load (Falcon-E's prequantized revision, any BitNet-trained bf16 weights), as
    transformers' online mode does; `bitexport export --ternarize`."""

    ternarize: bool = False


def detect_format(folder: ModelFolder, ternarize: bool = False) -> str:
    raw = folder.config
    model_type = raw.get("model_type")
    archs = raw.get("architectures") or []
    if model_type == "bitnet":
        return "hf-bitnet"
    if model_type == "llama" and onebit_llm.ARCHITECTURE in archs:
        return "1bitllm"
    if llama_bitnet.is_llama(raw) and (llama_bitnet.has_bitnet_quantization(raw) or ternarize):
        return "llama-bitnet"
    if llama_bitnet.is_llama(raw):
        raise InputError(
            f"{folder.path}: a Llama checkpoint without quantization_config.quant_method 'bitnet' (full-precision "
            "weights); if it was trained as BitNet (e.g. Falcon-E's prequantized revision) pass --ternarize to "
            "ternarize its linears at load"
        )
    raise InputError(
        f"{folder.path}: unsupported model (model_type {model_type!r}, architectures {archs}); "
        f"bitexport reads {SUPPORTED}"
    )


def load_model(path: str | Path, max_seq_len: int | None = None, options: LoadOptions = LoadOptions()) -> LoadedModel:
    """Read, validate and build the model in `path`; the KV cache holds `max_seq_len` positions."""
    folder = open_folder(path)
    fmt = detect_format(folder, options.ternarize)
    if max_seq_len is None:
        max_seq_len = min(DEFAULT_MAX_SEQ_LEN, int(folder.config.get("max_position_embeddings", DEFAULT_MAX_SEQ_LEN)))
    if max_seq_len < 2:
        raise InputError(f"--max-seq-len must be at least 2 (got {max_seq_len})")
    if fmt == "llama-bitnet":
        return llama_bitnet.load(folder, max_seq_len, options.ternarize)
    if fmt == "hf-bitnet":
        return hf_bitnet.load(folder, max_seq_len, options.ternarize)
    return onebit_llm.load(folder, max_seq_len)  # shadow weights: ternarized at load anyway


__all__ = ["LoadOptions", "LoadedModel", "StoredFormat", "detect_format", "load_model", "open_folder"]
