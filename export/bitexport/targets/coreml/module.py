"""The Core ML form of the decoder: the module that is traced and handed to `ct.convert`.

It is built from a frozen `BitNetDecoder` and computes the same thing with Core ML's conventions:

- inputs `input_ids` int32 [1, n] and `causal_mask` [1, 1, n, end] (additive: 0 keeps a key,
  -inf drops it), with end = past + n: the position of the first new token, `past`, is read off
  the two shapes, so one traced function serves a prompt of any length and a single token;
- the KV cache is two buffers, `key_cache` / `value_cache` [layers, 1, kv_heads, max_seq_len,
  head_dim], written by slice assignment (they become Core ML states) and read up to `end` only;
- output `logits` [1, V] for the last position, as the phone runners need;
- every ternary linear is lowered to `QuantLinear`: BitNet's per-token int8 activation
  quantization (`ActQuant`) followed by a plain `nn.Linear` whose weight is codes * scale, which
  is what coremltools' palettizer can store as exact 2-bit indices;
- the elementwise steps of the MLP and of attention are submodules of their own, because the
  fp16-safety analysis (coreml_fp16.py) keeps ops in fp32 by the module scope that coremltools
  carries from the trace onto each MIL op: one scope must hold one hazard, not a whole layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitexport.model.bitlinear import BitLinear

from bitexport.model.quant import ACT_EPS
from bitexport.model.decoder import BitNetDecoder, RMSNorm, _rotate_half

STATE_NAMES = ("key_cache", "value_cache")
INPUT_NAMES = ("input_ids", "causal_mask")
OUTPUT_NAME = "logits"


class ActQuant(nn.Module):
    """Per-token absmax int8 fake quantization: round(x * 127/max|x|) * max|x|/127 as floats.

    Dequantizing before the matmul (rather than after it, as BitLinear does) keeps the matmul's
    partial sums at the size of the layer's output, so fp16 range checks on the output cover it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("eps", torch.tensor(ACT_EPS), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # maximum() rather than clamp(min=): a one-sided clamp converts to a clip whose upper
        # bound is fp32's largest value, which overflows when cast to fp16
        m = torch.maximum(x.abs().amax(dim=-1, keepdim=True), self.eps)
        s = 127.0 / m
        return (x * s).round().clamp(-128, 127) / s


class QuantLinear(nn.Module):
    """A lowered BitLinear: its input norm (use_rms_norm) if it has one, activation fake-quant,
    then a dense linear holding codes * scale."""

    def __init__(self, source: BitLinear) -> None:
        super().__init__()
        if not source.frozen:
            raise ValueError("QuantLinear needs a frozen BitLinear (codes and scale)")
        self.rms_norm = _copy_norm(source.rms_norm)
        self.quant = ActQuant()
        self.linear = nn.Linear(source.in_features, source.out_features, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(source.codes.float() * source.scale.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rms_norm is not None:
            x = self.rms_norm(x)
        return self.linear(self.quant(x))


class Relu2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class SiLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class Mul(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class Add(nn.Module):
    """The residual add, a module so that its scope names it."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class TiedHead(nn.Module):
    """The output head reading the embedding table (a module so that its op has a scope)."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight)


class Rope(nn.Module):
    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return x * cos + _rotate_half(x) * sin


class Sdpa(nn.Module):
    """Grouped-query attention without repeating K/V: queries are grouped under their KV head
    ([1, kv, rep, n, d] against [1, kv, 1, end, d]) and the batch dims broadcast."""

    def __init__(self, num_heads: int, num_kv_heads: int) -> None:
        super().__init__()
        self.num_kv_heads, self.rep = num_kv_heads, num_heads // num_kv_heads

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, h, n, d = q.shape
        q = q.reshape(b, self.num_kv_heads, self.rep, n, d)
        out = F.scaled_dot_product_attention(q, k.unsqueeze(2), v.unsqueeze(2), attn_mask=mask.unsqueeze(1))
        return out.reshape(b, h, n, d)


class CoreMLAttention(nn.Module):
    def __init__(self, src, index: int) -> None:
        super().__init__()
        self.index = index
        self.num_heads, self.num_kv_heads, self.head_dim = src.num_heads, src.num_kv_heads, src.head_dim
        self.q_proj, self.k_proj = QuantLinear(src.q_proj), QuantLinear(src.k_proj)
        self.v_proj, self.o_proj = QuantLinear(src.v_proj), QuantLinear(src.o_proj)
        self.attn_sub_norm = _copy_norm(src.attn_sub_norm)
        self.rope_q, self.rope_k = Rope(), Rope()
        self.sdpa = Sdpa(self.num_heads, self.num_kv_heads)

    def forward(self, x, cos, sin, mask, past, end, key_cache, value_cache):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = self.rope_q(q, cos, sin)
        k = self.rope_k(k, cos, sin)
        i = self.index
        key_cache[i : i + 1, :, :, past:end, :] = k.unsqueeze(0)
        value_cache[i : i + 1, :, :, past:end, :] = v.unsqueeze(0)
        keys = key_cache[i, :, :, :end, :]
        values = value_cache[i, :, :, :end, :]
        out = self.sdpa(q, keys, values, mask)
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        if self.attn_sub_norm is not None:
            out = self.attn_sub_norm(out)
        return self.o_proj(out)


class CoreMLMLP(nn.Module):
    def __init__(self, src) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = QuantLinear(src.gate_proj), QuantLinear(src.up_proj)
        self.down_proj = QuantLinear(src.down_proj)
        self.act = Relu2() if src.relu2 else SiLU()
        self.mul = Mul()
        self.ffn_sub_norm = _copy_norm(src.ffn_sub_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mul(self.act(self.gate_proj(x)), self.up_proj(x))
        if self.ffn_sub_norm is not None:
            h = self.ffn_sub_norm(h)
        return self.down_proj(h)


class CoreMLLayer(nn.Module):
    def __init__(self, src, index: int) -> None:
        super().__init__()
        self.input_layernorm = _copy_norm(src.input_layernorm)
        self.self_attn = CoreMLAttention(src.self_attn, index)
        self.post_attention_layernorm = _copy_norm(src.post_attention_layernorm)
        self.mlp = CoreMLMLP(src.mlp)
        self.attn_residual, self.mlp_residual = Add(), Add()

    def forward(self, x, cos, sin, mask, past, end, key_cache, value_cache):
        a = self.self_attn(self.input_layernorm(x), cos, sin, mask, past, end, key_cache, value_cache)
        x = self.attn_residual(x, a)
        return self.mlp_residual(x, self.mlp(self.post_attention_layernorm(x)))


class CoreMLDecoder(nn.Module):
    """`forward(input_ids int32 [1, n], causal_mask [1, 1, n, past + n]) -> logits [1, V]`."""

    def __init__(self, src: BitNetDecoder, separate_head: bool = True) -> None:
        super().__init__()
        cfg = src.config
        self.config = cfg
        self.max_seq_len = src.max_seq_len
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(CoreMLLayer(layer, i) for i, layer in enumerate(src.layers))
        self.norm = _copy_norm(src.norm)
        with torch.no_grad():
            self.embed_tokens.weight.copy_(src.embed_tokens.weight)
        # A tied head gets a weight of its own when its format differs from the table's;
        # otherwise it reads the embedding table, so the package holds it once.
        self.lm_head: nn.Module
        if src.lm_head is None and not separate_head:
            self.lm_head = TiedHead()
        else:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
            with torch.no_grad():
                head = src.embed_tokens.weight if src.lm_head is None else src.lm_head.weight
                self.lm_head.weight.copy_(head)
        self.register_buffer("rope_cos", src.rope_cos.clone(), persistent=False)
        self.register_buffer("rope_sin", src.rope_sin.clone(), persistent=False)
        shape = (cfg.num_layers, 1, cfg.num_kv_heads, src.max_seq_len, cfg.head_dim)
        self.register_buffer("key_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("value_cache", torch.zeros(shape), persistent=False)
        self.eval()

    @property
    def cache_shape(self) -> tuple[int, ...]:
        return tuple(self.key_cache.shape)

    def forward(self, input_ids: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[-1]
        end = causal_mask.shape[-1]
        past = end - n
        cos = self.rope_cos[past:end]
        sin = self.rope_sin[past:end]
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, causal_mask, past, end, self.key_cache, self.value_cache)
        x = self.norm(x[:, -1, :])
        if isinstance(self.lm_head, TiedHead):
            return self.lm_head(x, self.embed_tokens.weight)
        return self.lm_head(x)

    def reset_cache(self) -> None:
        self.key_cache.zero_()
        self.value_cache.zero_()


def causal_mask(past: int, n: int) -> torch.Tensor:
    """The additive mask [1, 1, n, past + n] for n new tokens after `past` cached ones."""
    keep = torch.ones(n, past + n, dtype=torch.bool).tril(diagonal=past)
    return torch.zeros(1, 1, n, past + n).masked_fill(~keep, float("-inf"))


def _copy_norm(src: RMSNorm | None) -> RMSNorm | None:
    if src is None:
        return None
    norm = RMSNorm(src.weight.shape[0], src.eps)
    with torch.no_grad():
        norm.weight.copy_(src.weight)
    return norm


def lower_for_coreml(model: BitNetDecoder, separate_head: bool = True) -> CoreMLDecoder:
    """BitNetDecoder (frozen) -> CoreMLDecoder; the source module is left untouched.

    `separate_head=False` lets a tied head share the embedding table (head and table in one format).
    """
    return CoreMLDecoder(model, separate_head).eval()
