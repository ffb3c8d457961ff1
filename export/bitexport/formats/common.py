"""What both checkpoint formats share: the loaded-model record and building the decoder."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bitexport.model.config import ATTENTION_LINEARS, MLP_LINEARS, ModelConfig
from bitexport.errors import InputError
from bitexport.formats.checks import refuse_unused, tied_copy_of_embedding
from bitexport.formats.folder import TensorTable
from bitexport.model.bitlinear import BitLinear
from bitexport.model.decoder import BitNetDecoder
from bitexport.model.rope import Llama3Rope

# Reads one ternary linear: (tensor-name prefix, (out, in)) -> (int8 codes [out, in], scale [1]).
LinearReader = Callable[[str, tuple[int, int]], tuple[torch.Tensor, torch.Tensor]]

@dataclass(frozen=True)
class SubNormNames:
    """Where a format stores the two BitNet sub-norms, relative to a layer's attention and MLP."""

    attn: str = "self_attn.attn_sub_norm"
    ffn: str = "mlp.ffn_sub_norm"


@dataclass
class StoredFormat:
    """How one group of tensors is stored in the source checkpoint, for `inspect`."""

    format: str
    weights: int = 0
    bytes: int = 0

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.bytes / self.weights if self.weights else 0.0


@dataclass
class LoadedModel:
    name: str
    source_format: str  # "hf-bitnet" or "1bitllm"
    config: ModelConfig
    model: BitNetDecoder
    tokenizer_path: Path
    source_path: Path
    stored: dict[str, StoredFormat] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    # generation_config.json's eos_token_id (transformers' generate stops at these, e.g. Llama 3
    # Instruct's <|eom_id|> and <|eot_id|> beside config.json's <|end_of_text|>)
    generation_eos_ids: tuple[int, ...] = ()

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """Every token that ends a generation: config.json's eos first, then generation_config's.
        What the artifacts carry (the .pte's get_eos_ids, Core ML metadata, genai_config.json)."""
        return tuple(dict.fromkeys((*self.config.eos_token_ids, *self.generation_eos_ids)))


def cfg_int(raw: dict, key: str, source: Path, default: int | None = None) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"{source}/config.json: {key!r} must be a positive integer (got {value!r}); fix config.json")
    return value


def eos_ids(raw: dict) -> tuple[int, ...]:
    eos = raw.get("eos_token_id")
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, list) else (int(eos),)


def generation_eos_ids(folder: Path, vocab_size: int) -> tuple[int, ...]:
    """generation_config.json's eos_token_id (an id or a list), () without the file or the field."""
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return ()
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e}); fix or remove it") from None
    eos = raw.get("eos_token_id") if isinstance(raw, dict) else None
    ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab_size:
            raise InputError(f"{path}: eos_token_id {eos!r} must be token ids below the vocabulary size "
                             f"{vocab_size}; fix generation_config.json")
    return tuple(ids)


ROPE_TYPES = ("default", "llama3")
LLAMA3_FIELDS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _rope_fields(raw: dict) -> dict:
    # transformers 5 writes `rope_parameters` (type, theta and scaling in one); 4.x `rope_scaling`
    return raw.get("rope_parameters") or raw.get("rope_scaling") or {}


def rope_theta(raw: dict, default: float) -> float:
    return positive_number(raw.get("rope_theta", _rope_fields(raw).get("rope_theta", default)), "rope_theta")


def rope_scaling(raw: dict, src: Path) -> Llama3Rope | None:
    """None for plain RoPE, Llama 3's scaling for rope_type "llama3"; any other type is refused."""
    fields = _rope_fields(raw)
    kind = fields.get("rope_type", fields.get("type", "default"))
    if kind in ("default", None):
        return None
    if kind != "llama3":
        raise InputError(
            f"{src}/config.json: rope scaling type {kind!r} is not supported (bitexport implements "
            f"{' and '.join(ROPE_TYPES)}); use a checkpoint with one of those"
        )
    missing = [k for k in LLAMA3_FIELDS if k not in fields]
    if missing:
        raise InputError(f"{src}/config.json: llama3 rope scaling lacks {', '.join(missing)}; fix config.json")
    try:
        return Llama3Rope(
            factor=float(fields["factor"]),
            low_freq_factor=float(fields["low_freq_factor"]),
            high_freq_factor=float(fields["high_freq_factor"]),
            original_max_position_embeddings=int(fields["original_max_position_embeddings"]),
        )
    except (TypeError, ValueError) as e:
        raise InputError(f"{src}/config.json: {e}; fix config.json") from None


def rms_norm_eps(raw: dict, default: float) -> float:
    return positive_number(raw.get("rms_norm_eps", default), "rms_norm_eps")


def positive_number(value, key: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not (x > 0 and math.isfinite(x)):
        raise InputError(f"config.json: {key!r} must be a positive number (got {value!r}); fix config.json")
    return x


def record(stored: dict[str, StoredFormat], group: str, fmt: str, t: torch.Tensor, weights: int) -> None:
    entry = stored.setdefault(group, StoredFormat(fmt))
    entry.weights += weights
    entry.bytes += t.numel() * t.element_size()


def build_decoder(
    cfg: ModelConfig,
    table: TensorTable,
    read_linear: LinearReader,
    stored: dict[str, StoredFormat],
    max_seq_len: int,
    sub_norms: SubNormNames = SubNormNames(),
) -> BitNetDecoder:
    """Fill a BitNetDecoder from HF-named tensors; every shape is checked against `cfg`, and a
    checkpoint holding tensors the architecture does not use is refused."""
    model = BitNetDecoder(cfg, max_seq_len)
    h = cfg.hidden_size
    with torch.no_grad():
        emb = table.take("model.embed_tokens.weight", (cfg.vocab_size, h))
        record(stored, "embedding", str(emb.dtype).removeprefix("torch."), emb, emb.numel())
        model.embed_tokens.weight.copy_(emb.float())
        shapes = cfg.linear_shapes()
        for i, layer in enumerate(model.layers):
            p = f"model.layers.{i}"
            for module, names in ((layer.self_attn, ATTENTION_LINEARS), (layer.mlp, MLP_LINEARS)):
                kind = "self_attn" if module is layer.self_attn else "mlp"
                for name in names:
                    prefix = f"{p}.{kind}.{name}"
                    codes, scale = read_linear(prefix, shapes[name])
                    norm = None
                    if cfg.linear_norm:  # use_rms_norm: the linear's own input norm
                        norm = table.take(f"{prefix}.rms_norm.weight", (shapes[name][1],))
                        record(stored, "norms", str(norm.dtype).removeprefix("torch."), norm, norm.numel())
                    setattr(module, name, BitLinear.from_ternary(codes, scale, norm, cfg.linear_norm_eps))
            _norm(layer.input_layernorm, table, f"{p}.input_layernorm.weight", h, stored)
            _norm(layer.post_attention_layernorm, table, f"{p}.post_attention_layernorm.weight", h, stored)
            if cfg.attn_sub_norm:
                _norm(layer.self_attn.attn_sub_norm, table, f"{p}.{sub_norms.attn}.weight", cfg.q_size, stored)
            if cfg.ffn_sub_norm:
                _norm(layer.mlp.ffn_sub_norm, table, f"{p}.{sub_norms.ffn}.weight", cfg.intermediate_size, stored)
        _norm(model.norm, table, "model.norm.weight", h, stored)
        if model.lm_head is not None:
            head = table.take("lm_head.weight", (cfg.vocab_size, h))
            record(stored, "lm_head", str(head.dtype).removeprefix("torch."), head, head.numel())
            model.lm_head.weight.copy_(head.float())
        elif "lm_head.weight" in table:
            tied_copy_of_embedding(table, emb)
    refuse_unused(table)
    model.eval()
    return model


def _norm(norm, table: TensorTable, name: str, size: int, stored: dict[str, StoredFormat]) -> None:
    w = table.take(name, (size,))
    record(stored, "norms", str(w.dtype).removeprefix("torch."), w, w.numel())
    norm.weight.copy_(w.float())


def llama_shaped_config(
    raw: dict,
    src: Path,
    *,
    act: str,
    rope_default: float,
    eps_default: float,
    attn_sub_norm: bool,
    ffn_sub_norm: bool,
    linear_norm: bool = False,
    linear_norm_eps: float = 1e-6,
) -> ModelConfig:
    """The Llama-shaped fields every BitNet config.json shares; each format supplies its defaults
    (the values its reference implementation assumes when a field is absent) and its switches."""
    heads = cfg_int(raw, "num_attention_heads", src)
    hidden = cfg_int(raw, "hidden_size", src)
    try:
        return ModelConfig(
            vocab_size=cfg_int(raw, "vocab_size", src),
            hidden_size=hidden,
            intermediate_size=cfg_int(raw, "intermediate_size", src),
            num_layers=cfg_int(raw, "num_hidden_layers", src),
            num_heads=heads,
            num_kv_heads=cfg_int(raw, "num_key_value_heads", src, heads),
            head_dim=raw.get("head_dim") or hidden // heads,
            hidden_act=act,
            rope_theta=rope_theta(raw, rope_default),
            rms_norm_eps=rms_norm_eps(raw, eps_default),
            rope_scaling=rope_scaling(raw, src),
            linear_norm=linear_norm,
            linear_norm_eps=linear_norm_eps,
            attn_sub_norm=attn_sub_norm,
            ffn_sub_norm=ffn_sub_norm,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids(raw),
        )
    except ValueError as e:
        raise InputError(f"{src}/config.json: {e}; fix config.json") from None
