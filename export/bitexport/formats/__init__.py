"""load: a model folder, a GGUF file or a Hub id in, one LoadedModel out. One module per checkpoint format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bitexport.errors import InputError
from bitexport.formats import gguf_model, hf_bitnet, llama_bitnet, onebit_llm
from bitexport.formats.common import LoadedModel, StoredFormat, generation_eos_ids
from bitexport.formats.folder import ModelFolder, open_folder
from bitexport.formats.hub import resolve_model

DEFAULT_MAX_SEQ_LEN = 512

SUPPORTED = (
    "model_type 'bitnet' (BitNetForCausalLM), model_type 'llama' with architectures ['BitnetForCausalLM'] "
    "(1bitLLM), a Llama checkpoint with quantization_config.quant_method 'bitnet' (Falcon3-1.58bit, "
    "Falcon-E, Llama3-8B-1.58), or a GGUF file (architectures 'bitnet', 'llama'; TQ1_0/TQ2_0 linears)"
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


def is_model_input(path: str | Path) -> bool:
    """A model folder (config.json) or a GGUF file: what load_model reads from a local path."""
    p = Path(path)
    return (p / "config.json").is_file() or gguf_model.is_gguf(p)


def load_model(path: str | Path, max_seq_len: int | None = None, options: LoadOptions = LoadOptions(), *,
               revision: str | None = None) -> LoadedModel:
    """Read, validate and build the model `path` names (a model folder, a GGUF file, or a Hub id
    when no such local path exists); the KV cache holds `max_seq_len` positions."""
    loaded = _load(resolve_model(path, revision), max_seq_len, options)
    # generation_config.json beside the tokenizer (the model folder; a GGUF's converted tokenizer
    # folder) adds stop tokens, as it does for transformers' generate
    loaded.generation_eos_ids = generation_eos_ids(loaded.tokenizer_path.parent, loaded.config.vocab_size)
    return loaded


def _load(path: Path, max_seq_len: int | None, options: LoadOptions) -> LoadedModel:
    if gguf_model.is_gguf(path):
        if options.ternarize:
            raise InputError(f"{path}: a GGUF file holds ternary codes already; drop --ternarize")
        f = gguf_model.open_gguf(path)
        cfg = gguf_model.parse_config(f)
        return gguf_model.load(f, cfg, _seq_len(max_seq_len, cfg.max_position_embeddings))
    folder = open_folder(path)
    fmt = detect_format(folder, options.ternarize)
    max_seq_len = _seq_len(max_seq_len, int(folder.config.get("max_position_embeddings", DEFAULT_MAX_SEQ_LEN)))
    if fmt == "llama-bitnet":
        return llama_bitnet.load(folder, max_seq_len, options.ternarize)
    if fmt == "hf-bitnet":
        return hf_bitnet.load(folder, max_seq_len, options.ternarize)
    return onebit_llm.load(folder, max_seq_len)  # shadow weights: ternarized at load anyway


def _seq_len(asked: int | None, context: int) -> int:
    n = min(DEFAULT_MAX_SEQ_LEN, context) if asked is None else asked
    if n < 2:
        raise InputError(f"--max-seq-len must be at least 2 (got {n})")
    return n


__all__ = ["LoadOptions", "LoadedModel", "StoredFormat", "detect_format", "is_model_input", "load_model", "open_folder",
           "resolve_model"]
