"""Pass: the reference Attention -> EtAttention (ExecuTorch's LLM KV-cache and SDPA operators).

The reference decoder writes its cache with a slice assignment, which exports as a slice_scatter
of the whole cache plus a copy back into the buffer (two full-cache copies a layer a step), and
attends over all max_seq_len positions under a mask. EtAttention uses the operators ExecuTorch's own
Llama export uses, `llama::update_cache` (writes only the new positions, in place) and
`llama::custom_sdpa` (causal from start_pos, reads only positions < start_pos + n, handles GQA).
They ship in every stock LLM runtime (the Android AAR, the iOS kernels_llm framework, the Python
wheel's custom_ops library), so they add no custom-kernel requirement.

The KV cache stays a pair of mutable buffers per layer, in those operators' layout
[1, max_seq_len, n_kv_heads, head_dim] (the reference keeps [1, n_kv_heads, max_seq_len, head_dim]).
q/k/v become one fused TernaryLinear (et_ternary), o_proj a TernaryLinear of its own; with
use_rms_norm (an input norm per linear) each projection keeps its own norm and operator call
(ternary.NormedLinears).
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult, fuse_linears, replace_modules
from bitexport.targets.executorch.kernels import load_llm_custom_ops
from bitexport.model.decoder import Attention, BitNetDecoder, _rotate_half


class EtAttention(nn.Module):
    def __init__(self, ref: Attention, max_seq_len: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = ref.num_heads, ref.num_kv_heads, ref.head_dim
        self.qkv_proj = fuse_linears([ref.q_proj, ref.k_proj, ref.v_proj])
        self.o_proj = fuse_linears([ref.o_proj])
        self.attn_sub_norm = ref.attn_sub_norm
        cache_shape = (1, max_seq_len, self.num_kv_heads, self.head_dim)
        self.register_buffer("k_cache", torch.zeros(cache_shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(cache_shape), persistent=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask, start) -> torch.Tensor:
        if start is None:
            raise ValueError("EtAttention is for cached inference; train with the reference decoder")
        b, n, _ = x.shape
        q, k, v = self.qkv_proj(x)
        q = q.view(b, n, self.num_heads, self.head_dim)
        k = k.view(b, n, self.num_kv_heads, self.head_dim)
        v = v.view(b, n, self.num_kv_heads, self.head_dim)
        # [n, head_dim] tables broadcast over heads in the [b, n, heads, head_dim] layout
        cos = cos.view(1, n, 1, self.head_dim)
        sin = sin.view(1, n, 1, self.head_dim)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        torch.ops.llama.update_cache(k, self.k_cache, start)
        torch.ops.llama.update_cache(v, self.v_cache, start)
        out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0.0, True)
        out = out.reshape(b, n, self.num_heads * self.head_dim)
        if self.attn_sub_norm is not None:
            out = self.attn_sub_norm(out)
        return self.o_proj(out)


def use_et_attention(model: BitNetDecoder) -> PassResult:
    """Replace every reference Attention of `model` (in place)."""
    load_llm_custom_ops()
    return replace_modules(model, Attention, lambda a: EtAttention(a, model.max_seq_len), "use_et_attention")
