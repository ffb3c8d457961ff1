"""The reference decoder: BitNet b1.58 / Llama shape with a static KV cache.

`forward(tokens int64 [1, n], input_pos int64 [1]) -> logits` is the one signature every target
exports (it is ExecuTorch's LLM-runner contract too). The KV cache lives in buffers of a fixed
`max_seq_len`; each call writes positions [input_pos, input_pos + n) and attends, under a causal
mask, over the whole cache. Module and parameter names follow transformers' Llama/BitNet so that
checkpoints map onto it by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitexport.model.config import ModelConfig
from bitexport.model.bitlinear import BitLinear
from bitexport.model.norm import RMSNorm
from bitexport.model.rope import rope_tables


def _linear_options(cfg: ModelConfig, trainable: bool) -> dict:
    return {"trainable": trainable, "input_norm_eps": cfg.linear_norm_eps if cfg.linear_norm else None}


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, max_seq_len: int, trainable: bool) -> None:
        super().__init__()
        h = cfg.hidden_size
        lin = _linear_options(cfg, trainable)
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = BitLinear(h, cfg.q_size, **lin)
        self.k_proj = BitLinear(h, cfg.kv_size, **lin)
        self.v_proj = BitLinear(h, cfg.kv_size, **lin)
        self.o_proj = BitLinear(cfg.q_size, h, **lin)
        self.attn_sub_norm = RMSNorm(cfg.q_size, cfg.rms_norm_eps) if cfg.attn_sub_norm else None
        cache_shape = (1, cfg.num_kv_heads, max_seq_len, cfg.head_dim)
        self.register_buffer("k_cache", torch.zeros(cache_shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(cache_shape), persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        start: int | None,
    ) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if start is None:  # training: no cache, plain causal attention over this window
            keys, values = k, v
            is_causal = True
        else:
            self.k_cache[:, :, start : start + n] = k
            self.v_cache[:, :, start : start + n] = v
            keys, values = self.k_cache, self.v_cache
            is_causal = False
        rep = self.num_heads // self.num_kv_heads
        if rep > 1:
            keys = keys.repeat_interleave(rep, dim=1)
            values = values.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=is_causal)
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        if self.attn_sub_norm is not None:
            out = self.attn_sub_norm(out)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, trainable: bool) -> None:
        super().__init__()
        h, i = cfg.hidden_size, cfg.intermediate_size
        lin = _linear_options(cfg, trainable)
        self.gate_proj = BitLinear(h, i, **lin)
        self.up_proj = BitLinear(h, i, **lin)
        self.down_proj = BitLinear(i, h, **lin)
        self.ffn_sub_norm = RMSNorm(i, cfg.rms_norm_eps) if cfg.ffn_sub_norm else None
        self.relu2 = cfg.hidden_act == "relu2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_proj(x)
        g = F.relu(g).square() if self.relu2 else F.silu(g)
        h = g * self.up_proj(x)
        if self.ffn_sub_norm is not None:
            h = self.ffn_sub_norm(h)
        return self.down_proj(h)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, max_seq_len: int, trainable: bool) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, max_seq_len, trainable)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg, trainable)

    def forward(self, x, cos, sin, mask, start):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class BitNetDecoder(nn.Module):
    """Embedding, decoder layers, final norm and output head (tied or separate).

    `last_logits_only` makes forward return [1, V] for the last position (what the phone runners
    need, and it skips the head for the rest of a prompt); otherwise [1, n, V].
    """

    def __init__(self, cfg: ModelConfig, max_seq_len: int = 512, *, trainable: bool = False) -> None:
        super().__init__()
        self.config = cfg
        self.max_seq_len = max_seq_len
        self.last_logits_only = False
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, max_seq_len, trainable) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.head_dim, cfg.rope_theta, max_seq_len, cfg.rope_scaling)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        causal = torch.ones(max_seq_len, max_seq_len, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", causal, persistent=False)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        if self.lm_head is None:
            return F.linear(x, self.embed_tokens.weight)
        return self.lm_head(x)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + n <= self.max_seq_len)
        cos = self.rope_cos.narrow(0, start, n)
        sin = self.rope_sin.narrow(0, start, n)
        mask = self.causal_mask.narrow(0, start, n)
        return self._run(tokens, cos, sin, mask, start)

    def forward_train(self, tokens: torch.Tensor) -> torch.Tensor:
        """Full-sequence logits [b, n, V] with no KV cache (training and full recomputation)."""
        n = tokens.shape[1]
        return self._run(tokens, self.rope_cos[:n], self.rope_sin[:n], None, None)

    def _run(self, tokens, cos, sin, mask, start):
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, start)
        x = self.norm(x)
        if self.last_logits_only:
            return self.head(x[:, -1, :])
        return self.head(x)

    def reset_cache(self) -> None:
        for layer in self.layers:
            layer.self_attn.k_cache.zero_()
            layer.self_attn.v_cache.zero_()

    def bitlinears(self) -> list[tuple[str, BitLinear]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, BitLinear)]
