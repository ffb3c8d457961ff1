"""1bitLLM-style checkpoints (`architectures: ["BitnetForCausalLM"]`, `model_type: "llama"`).

Llama tensors in full precision (fp16 shadow weights); every q/k/v/o/gate/up/down linear is a
BitLinear, ternarized with absmean at load exactly as the model ternarizes on the fly. SiLU gate;
separate output head unless tie_word_embeddings.

Sub-norms, as 1bitLLM's modeling_bitnet.py places them (llama.cpp's converter maps the same two
names to its BitNet ATTN_SUB_NORM / FFN_SUB_NORM): `self_attn.inner_attn_ln`, an RMSNorm over the
attention output before `o_proj`, and `mlp.ffn_layernorm`, an RMSNorm over silu(gate) * up before
`down_proj`; both with the config's `rms_norm_eps`. Each is applied where its tensors exist, so a
1bitLLM-shaped checkpoint without them still loads.

1bitLLM's attention takes head_dim = hidden_size / num_attention_heads and ignores a `head_dim`
field, so a config.json that says otherwise is refused rather than read differently from it.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from bitexport.model.config import ModelConfig
from bitexport.errors import InputError
from bitexport.formats.checks import ternarize_shadow
from bitexport.formats.common import (
    LoadedModel,
    StoredFormat,
    SubNormNames,
    build_decoder,
    llama_shaped_config,
    record,
)
from bitexport.formats.folder import ModelFolder, TensorTable, read_tensors, require_tokenizer

ARCHITECTURE = "BitnetForCausalLM"
SUB_NORMS = SubNormNames(attn="self_attn.inner_attn_ln", ffn="mlp.ffn_layernorm")


def parse_config(folder: ModelFolder) -> ModelConfig:
    """The architecture in config.json, sub-norms off (`with_sub_norms` turns on those present)."""
    raw, src = folder.config, folder.path
    act = raw.get("hidden_act", "silu")
    if act not in ("relu2", "silu"):
        raise InputError(f"{src}: hidden_act {act!r} is not supported; bitexport handles relu2 and silu")
    if raw.get("weight_bits", 1) != 1 or raw.get("input_bits", 8) != 8:
        raise InputError(f"{src}: only weight_bits=1 (ternary) and input_bits=8 are supported")
    cfg = llama_shaped_config(
        raw,
        src,
        act=act,
        rope_default=10000.0,
        eps_default=1e-6,
        attn_sub_norm=False,
        ffn_sub_norm=False,
    )
    if cfg.head_dim * cfg.num_heads != cfg.hidden_size:
        raise InputError(
            f"{src}/config.json: head_dim {cfg.head_dim} x {cfg.num_heads} heads != hidden_size {cfg.hidden_size}; "
            "1bitLLM's BitnetForCausalLM uses hidden_size / num_attention_heads: remove head_dim from config.json"
        )
    return cfg


def with_sub_norms(cfg: ModelConfig, table: TensorTable) -> ModelConfig:
    """Layer 0 decides; a later layer missing one is then a missing tensor, one holding an extra
    one an unused tensor: both are refused by name."""
    return replace(
        cfg,
        attn_sub_norm=f"model.layers.0.{SUB_NORMS.attn}.weight" in table,
        ffn_sub_norm=f"model.layers.0.{SUB_NORMS.ffn}.weight" in table,
    )


def load(folder: ModelFolder, max_seq_len: int) -> LoadedModel:
    cfg = parse_config(folder)
    tokenizer = require_tokenizer(folder)
    table = TensorTable(read_tensors(folder), folder.path)
    cfg = with_sub_norms(cfg, table)
    stored: dict[str, StoredFormat] = {}

    def read_linear(prefix: str, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        w = table.take(f"{prefix}.weight", shape)
        record(stored, "ternary", f"{str(w.dtype).removeprefix('torch.')} shadow (ternarized at load)", w, w.numel())
        return ternarize_shadow(table, f"{prefix}.weight", w)

    model = build_decoder(cfg, table, read_linear, stored, max_seq_len, SUB_NORMS)
    return LoadedModel(
        name=folder.name,
        source_format="1bitllm",
        config=cfg,
        model=model,
        tokenizer_path=tokenizer,
        source_path=folder.path,
        stored=stored,
    )
