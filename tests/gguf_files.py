"""GGUF files written with llama.cpp's own `gguf` package (GGUFWriter, gguf.quants.quantize), from a
loaded model, laid out as llama.cpp's converter lays them out: the reference the GGUF import is
tested against. Nothing here comes from bitexport's GGUF reader.

- arch "bitnet": tensors unpermuted, sub-norms, tied head, rope scaling 'linear' x1.0 (what the
  converter writes for BitNet); per-tensor scales inside the TQ blocks, or (`separate_scales`) as
  `blk.N.<linear>.scale` tensors with blocks of scale 1.
- arch "llama": attn_q/attn_k rows permuted for llama.cpp's adjacent-pair RoPE (the converter's
  LlamaModel.permute), `output.weight` when the head is untied, no sub-norms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter, RopeScalingType, TokenType
from gguf.quants import quantize

LINEARS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down"}


def permute_for_llama_rope(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter: reshape(heads, 2, rows/heads/2, k).swapaxes(1, 2)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_tokenizer(writer: GGUFWriter, tokenizer_json: Path, bos: int | None, eos: tuple[int, ...], chat_template: str | None = None) -> None:
    """A byte-level BPE tokenizer.json as llama.cpp's 'gpt2' tokenizer metadata."""
    spec = json.loads(Path(tokenizer_json).read_text())
    vocab = spec["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    special = {a["id"] for a in spec.get("added_tokens", []) if a.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL if i in special else TokenType.NORMAL for i in range(len(tokens))])
    writer.add_token_merges(merges)
    if bos is not None:
        writer.add_bos_token_id(bos)
    if eos:
        writer.add_eos_token_id(eos[0])
    if chat_template:
        writer.add_chat_template(chat_template)


def write_gguf(
    loaded,
    path: Path,
    *,
    arch: str = "bitnet",
    kind: str = "TQ2_0",
    separate_scales: bool = False,
    extra_tensors: dict[str, np.ndarray] | None = None,
    chat_template: str | None = None,
    metadata: dict | None = None,
    embedding_type: str = "F32",
) -> Path:
    """`embedding_type` (F32, F16, BF16) for token_embd and output: F32 keeps the source's values."""
    cfg = loaded.config
    model = loaded.model
    qtype = GGMLQuantizationType[kind]
    w = GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    if arch == "bitnet":
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(1.0)
    for key, value in (metadata or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    add_tokenizer(w, loaded.tokenizer_path, cfg.bos_token_id, cfg.eos_token_ids, chat_template)

    def f32(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().numpy().astype(np.float32)

    def matrix(name: str, t: torch.Tensor) -> None:
        if embedding_type == "BF16":  # numpy has no bfloat16: its bytes, as GGUFWriter takes raw types
            raw = t.detach().to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
            w.add_tensor(name, raw, raw_dtype=GGMLQuantizationType.BF16)
        else:
            w.add_tensor(name, f32(t).astype(np.float16 if embedding_type == "F16" else np.float32))

    matrix("token_embd.weight", model.embed_tokens.weight)
    w.add_tensor("output_norm.weight", f32(model.norm.weight))
    if model.lm_head is not None:
        matrix("output.weight", model.lm_head.weight)
    for i, layer in enumerate(model.layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", f32(layer.input_layernorm.weight))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", f32(layer.post_attention_layernorm.weight))
        if layer.self_attn.attn_sub_norm is not None:
            w.add_tensor(f"blk.{i}.attn_sub_norm.weight", f32(layer.self_attn.attn_sub_norm.weight))
        if layer.mlp.ffn_sub_norm is not None:
            w.add_tensor(f"blk.{i}.ffn_sub_norm.weight", f32(layer.mlp.ffn_sub_norm.weight))
        for ours, theirs in LINEARS.items():
            lin = layer.get_submodule(ours)
            codes = lin.codes.numpy().astype(np.float32)
            scale = np.float32(lin.scale.float().reshape(-1)[0])
            if arch == "llama" and theirs in ("attn_q", "attn_k"):
                codes = permute_for_llama_rope(codes, cfg.num_heads if theirs == "attn_q" else cfg.num_kv_heads)
            name = f"blk.{i}.{theirs}"
            if separate_scales:
                w.add_tensor(f"{name}.weight", quantize(codes, qtype), raw_dtype=qtype)
                w.add_tensor(f"{name}.scale", np.array([scale], dtype=np.float32))
            else:
                w.add_tensor(f"{name}.weight", quantize(codes * scale, qtype), raw_dtype=qtype)
    for name, t in (extra_tensors or {}).items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
