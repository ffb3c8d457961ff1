"""Pass: the reference Attention -> EtAttention (ExecuTorch's LLM KV-cache and SDPA operators).

The reference decoder writes its cache with a slice assignment, which exports as a slice_scatter
of the whole cache plus a copy back into the buffer (two full-cache copies a layer a step), and
attends over all max_seq_len positions under a mask. EtAttention uses the operators ExecuTorch's own
Llama export uses, `llama::update_cache` (writes only the new positions, in place) and
`llama::custom_sdpa` (causal from start_pos, reads only positions < start_pos + n, handles GQA).
They ship in every stock LLM runtime (the Android AAR, the iOS kernels_llm framework, the Python
wheel's custom_ops library), so they add no custom-kernel requirement.

The KV cache stays a pair of mutable buffers per layer, in those operators' layout
[1, max_seq_len, n_kv_heads, head_dim] (the reference keeps [1, n_kv_heads, max_seq_len, head_dim]),
in the dtype of --kv-cache. Both operators take float16 and bfloat16 when query, key, value and
caches share the dtype, so q, k and v are cast after RoPE (computed in float32, as the
reference does) and the attention output is cast back to float32.

q/k/v are one fused TernaryLinear (et_ternary), o_proj a TernaryLinear of its own; with
use_rms_norm (an input norm per linear) each projection keeps its own norm and operator call
(ternary.NormedLinears), and their outputs are concatenated for the RoPE below.

RoPE in few operators: the reference's rotate_half (chunk, neg, cat) costs 7 kernel calls for q
and 7 for k in the .pte. Here q and k stay one slice of the fused projection, viewed as
[b, n, heads + kv_heads, head_dim], and
    rope(x) = x * cos + swap_halves(x) * signed_sin,   signed_sin = [-sin[:d/2], sin[d/2:]]
where swap_halves is one flip over a [2, head_dim/2] view: 4 kernel calls for q and k together.
It is the reference's arithmetic bit for bit ((-a) * b == a * (-b) in IEEE arithmetic); the pass
stores the decoder's sin table with the sign folded in, so no call is spent on it per step.
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult, TernaryLinear, fuse_linears, replace_modules
from bitexport.targets.executorch.kernels import load_llm_custom_ops
from bitexport.model.decoder import Attention, BitNetDecoder

KV_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """The sin table [length, head_dim] with its first half negated (see the module docstring)."""
    half = sin.shape[-1] // 2
    sign = torch.cat([-torch.ones(half), torch.ones(sin.shape[-1] - half)]).to(sin.dtype)
    return sin * sign


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """[..., a, b] -> [..., b, a] along the last dimension (halves of equal size), one flip."""
    *lead, d = x.shape
    return x.reshape(*lead, 2, d // 2).flip(-2).reshape(*lead, d)


def to_kv_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """q, k and v into the cache's dtype (round to nearest; one _to_dim_order_copy in the .pte)."""
    return x.to(dtype)


class EtAttention(nn.Module):
    def __init__(self, ref: Attention, max_seq_len: int, kv_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = ref.num_heads, ref.num_kv_heads, ref.head_dim
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
        self.qkv_proj = fuse_linears([ref.q_proj, ref.k_proj, ref.v_proj])
        if isinstance(self.qkv_proj, TernaryLinear):
            # one output tensor: q and k are sliced from it together (the RoPE above)
            self.qkv_proj.splits = (self.qkv_proj.out_features,)
        self.o_proj = fuse_linears([ref.o_proj])
        self.attn_sub_norm = ref.attn_sub_norm
        self.kv_dtype = kv_dtype
        cache_shape = (1, max_seq_len, self.num_kv_heads, self.head_dim)
        self.register_buffer("k_cache", torch.zeros(cache_shape, dtype=kv_dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(cache_shape, dtype=kv_dtype), persistent=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask, start) -> torch.Tensor:
        """`sin` is the signed table (signed_sin), as use_et_attention stores it in the decoder."""
        if start is None:
            raise ValueError("EtAttention is for cached inference; train with the reference decoder")
        b, n, _ = x.shape
        h, hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(x)
        if isinstance(qkv, tuple):  # NormedLinears: one operator call (and output) per projection
            qkv = torch.cat(qkv, dim=-1)
        qk = qkv[..., : (h + hkv) * d].reshape(b, n, h + hkv, d)
        # [n, head_dim] tables broadcast over heads in the [b, n, heads, head_dim] layout
        qk = qk * cos.view(1, n, 1, d) + swap_halves(qk) * sin.view(1, n, 1, d)
        v = qkv[..., (h + hkv) * d :].reshape(b, n, hkv, d)
        if self.kv_dtype != torch.float32:
            qk, v = to_kv_dtype(qk, self.kv_dtype), to_kv_dtype(v, self.kv_dtype)
        q, k = qk.split((h, hkv), dim=2)
        torch.ops.llama.update_cache(k, self.k_cache, start)
        torch.ops.llama.update_cache(v, self.v_cache, start)
        out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0.0, True)
        out = out.reshape(b, n, h * d)
        if self.kv_dtype != torch.float32:
            out = out.float()
        if self.attn_sub_norm is not None:
            out = self.attn_sub_norm(out)
        return self.o_proj(out)


def use_et_attention(model: BitNetDecoder, kv_cache: str = "fp32") -> PassResult:
    """Replace every reference Attention of `model` (in place); the decoder's sin table becomes
    the signed one EtAttention expects (every attention is replaced, so nothing else reads it)."""
    load_llm_custom_ops()
    dtype = KV_DTYPES[kv_cache]
    result = replace_modules(model, Attention, lambda a: EtAttention(a, model.max_seq_len, dtype), "use_et_attention")
    model.rope_sin = signed_sin(model.rope_sin)
    return result
