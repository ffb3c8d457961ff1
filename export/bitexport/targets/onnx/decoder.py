"""BitNetDecoder -> one ONNX decoder graph in the form onnxruntime-genai runs.

Inputs `input_ids` int64 [B, S], `attention_mask` int64 [B, T] (T = past + S), and per layer
`past_key_values.<i>.key|value` float [B, n_kv, P, head_dim] (BNSH); outputs `logits` [B, 1, V]
(the last position only: genai reads the last row, and the head is not run on the rest of a prompt)
and `present.<i>.key|value`. Attention is com.microsoft.GroupQueryAttention with its own rotary
embedding (do_rotary=1, rotate-half, cos/sin caches [max_seq_len, head_dim/2] taken from the
reference's tables), fed the two values genai's models compute from the mask:
seqlens_k = sum(mask) - 1 and total_sequence_length = T.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch

from bitexport import __version__
from bitexport.targets.onnx.graph import FLOAT, INT32, INT64, MS_DOMAIN, Graph
from bitexport.targets.onnx.ops import (
    LinearFormat,
    Table,
    activation,
    add_rms_norm,
    embedding,
    head,
    bitlinear,
    rms_norm,
)
from bitexport.model.bitlinear import BitLinear
from bitexport.model.decoder import BitNetDecoder

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
PAST_KEY = "past_key_values.%d.key"
PAST_VALUE = "past_key_values.%d.value"
LOGITS = "logits"
PRESENT_KEY = "present.%d.key"
PRESENT_VALUE = "present.%d.value"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _linear(g: Graph, x: str, lins: list[BitLinear], fmt: LinearFormat, name: str) -> str:
    parts = [(lin.codes.detach().cpu().numpy().astype(np.int8), float(lin.scale.reshape(-1)[0])) for lin in lins]
    return bitlinear(g, x, parts, fmt, name)


def _projections(g: Graph, x: str, lins: list[BitLinear], names: list[str], fmt: LinearFormat, prefix: str) -> list[str]:
    """The outputs of linears that read x: one fused node split into its parts, or (use_rms_norm:
    each linear normalizes x with its own weight before quantizing it) one norm + node per linear."""
    if all(lin.rms_norm is None for lin in lins):
        if len(lins) == 1:
            return [_linear(g, x, lins, fmt, f"{prefix}.{names[0]}")]
        fused = _linear(g, x, lins, fmt, f"{prefix}.{'_'.join(n.removesuffix('_proj') for n in names)}_proj")
        return list(g.node("Split", [fused, g.const([lin.out_features for lin in lins], np.int64)],
                           f"{prefix}/split_{'_'.join(names)}", n_out=len(lins), axis=-1))
    outs = []
    for lin, n in zip(lins, names):
        if lin.rms_norm is None:
            raise ValueError(f"{prefix}.{n}: either every linear has an input norm or none has")
        normed = rms_norm(g, x, _np(lin.rms_norm.weight), lin.rms_norm.eps, f"{prefix}.{n}.rms_norm")
        outs.append(_linear(g, normed, [lin], fmt, f"{prefix}.{n}"))
    return outs


def build_decoder_graph(
    model: BitNetDecoder, fmt: LinearFormat, head_format: str = "int4", embedding_format: str = "fp32"
) -> onnx.ModelProto:
    cfg = model.config
    eps = cfg.rms_norm_eps
    g = Graph("bitnet_decoder")
    ids = g.add_input(INPUT_IDS, INT64, ["batch_size", "sequence_length"])
    mask = g.add_input(ATTENTION_MASK, INT64, ["batch_size", "total_sequence_length"])
    kv_shape = ["batch_size", cfg.num_kv_heads, "past_sequence_length", cfg.head_dim]
    present_shape = ["batch_size", cfg.num_kv_heads, "total_sequence_length", cfg.head_dim]

    total = g.op("Shape", [mask], "mask/shape")
    total = g.op("Gather", [total, g.const(1, np.int64)], "mask/total", axis=0)
    total = g.op("Cast", [total], "mask/total_i32", to=INT32)
    seqlens = g.op("ReduceSum", [mask, g.const([1], np.int64)], "mask/sum", keepdims=0)
    seqlens = g.op("Cast", [g.op("Sub", [seqlens, g.const(1, np.int64)], "mask/sub")], "mask/seqlens_k", to=INT32)

    half = cfg.head_dim // 2
    cos = g.init("rope.cos_cache", _np(model.rope_cos)[:, :half])
    sin = g.init("rope.sin_cache", _np(model.rope_sin)[:, :half])

    x, table = embedding(g, ids, _np(model.embed_tokens.weight), embedding_format, "embed_tokens")
    h = rms_norm(g, x, _np(model.layers[0].input_layernorm.weight), eps, "layers.0.input_layernorm")
    for i, layer in enumerate(model.layers):
        p = f"layers.{i}"
        attn = layer.self_attn
        # q, k and v as one packed [.., q + 2 kv] product, the packed-QKV form GQA reads directly;
        # with input norms (use_rms_norm) three products, which GQA reads as separate inputs
        if attn.q_proj.rms_norm is None:
            qkv_inputs = [_linear(g, h, [attn.q_proj, attn.k_proj, attn.v_proj], fmt, f"{p}.self_attn.qkv_proj"), "", ""]
        else:
            qkv_inputs = _projections(g, h, [attn.q_proj, attn.k_proj, attn.v_proj], ["q_proj", "k_proj", "v_proj"],
                                      fmt, f"{p}.self_attn")
        past_k = g.add_input(PAST_KEY % i, FLOAT, kv_shape)
        past_v = g.add_input(PAST_VALUE % i, FLOAT, kv_shape)
        a, pres_k, pres_v = g.node(
            "GroupQueryAttention", [*qkv_inputs, past_k, past_v, seqlens, total, cos, sin], f"{p}.self_attn.gqa",
            n_out=3, domain=MS_DOMAIN, outputs=[f"{p}.self_attn.gqa/out0", PRESENT_KEY % i, PRESENT_VALUE % i],
            num_heads=cfg.num_heads, kv_num_heads=cfg.num_kv_heads, do_rotary=1, rotary_interleaved=0,
        )
        g.add_output(pres_k, FLOAT, present_shape)
        g.add_output(pres_v, FLOAT, present_shape)
        if attn.attn_sub_norm is not None:
            a = rms_norm(g, a, _np(attn.attn_sub_norm.weight), eps, f"{p}.self_attn.attn_sub_norm")
        [o] = _projections(g, a, [attn.o_proj], ["o_proj"], fmt, f"{p}.self_attn")
        h, x = add_rms_norm(g, o, x, _np(layer.post_attention_layernorm.weight), eps, f"{p}.post_attention_layernorm")

        mlp = layer.mlp
        if mlp.gate_proj.rms_norm is None:
            gate_up = _linear(g, h, [mlp.gate_proj, mlp.up_proj], fmt, f"{p}.mlp.gate_up_proj")
            gate, up = g.node("Split", [gate_up], f"{p}.mlp/split", n_out=2, axis=-1, num_outputs=2)
        else:
            gate, up = _projections(g, h, [mlp.gate_proj, mlp.up_proj], ["gate_proj", "up_proj"], fmt, f"{p}.mlp")
        m = g.op("Mul", [activation(g, gate, cfg.hidden_act, f"{p}.mlp.act"), up], f"{p}.mlp/gated")
        if mlp.ffn_sub_norm is not None:
            m = rms_norm(g, m, _np(mlp.ffn_sub_norm.weight), eps, f"{p}.mlp.ffn_sub_norm")
        [d] = _projections(g, m, [mlp.down_proj], ["down_proj"], fmt, f"{p}.mlp")
        last = i == len(model.layers) - 1
        norm_w = model.norm.weight if last else model.layers[i + 1].input_layernorm.weight
        h, x = add_rms_norm(g, d, x, _np(norm_w), eps, "norm" if last else f"layers.{i + 1}.input_layernorm")

    h_last = g.op(
        "Slice", [h, g.const([-1], np.int64), g.const([np.iinfo(np.int64).max], np.int64), g.const([1], np.int64)],
        "last_position",
    )
    if model.lm_head is None:
        head(g, h_last, _np(model.embed_tokens.weight), table, head_format, fmt.accuracy_level, "lm_head", LOGITS)
    else:
        head(g, h_last, _np(model.lm_head.weight), Table(), head_format, fmt.accuracy_level, "lm_head", LOGITS)
    g.add_output(LOGITS, FLOAT, ["batch_size", 1, cfg.vocab_size])
    return g.model("bitexport", __version__)
