"""The one model description every loader produces and every target consumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bitexport.model.rope import Llama3Rope

ACTIVATIONS = ("relu2", "silu")

# Names of the ternary linears inside one decoder layer, in the order a layer runs them.
ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a BitNet-style decoder: Llama's shape plus the BitNet switches.

    `attn_sub_norm` / `ffn_sub_norm` are BitNet's extra RMSNorms before `o_proj` and `down_proj`
    (b1.58-2B-4T's attn_sub_norm / ffn_sub_norm, 1bitLLM's inner_attn_ln / ffn_layernorm).
    `linear_norm` is transformers' `use_rms_norm`: an RMSNorm (own weight, eps `linear_norm_eps`)
    on the input of every ternary linear, before its activation quantization (Falcon-E).
    `rope_scaling` is Llama 3's frequency scaling, None for plain RoPE.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_act: str = "relu2"
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    attn_sub_norm: bool = True
    ffn_sub_norm: bool = True
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    linear_norm: bool = False
    linear_norm_eps: float = 1e-6
    rope_scaling: Llama3Rope | None = None

    def __post_init__(self) -> None:
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of each ternary linear of one layer."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (self.q_size, h),
            "k_proj": (self.kv_size, h),
            "v_proj": (self.kv_size, h),
            "o_proj": (h, self.q_size),
            "gate_proj": (i, h),
            "up_proj": (i, h),
            "down_proj": (h, i),
        }

    def parameter_counts(self) -> dict[str, int]:
        ternary = self.num_layers * sum(o * k for o, k in self.linear_shapes().values())
        embedding = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embedding
        norms = self.hidden_size * (2 * self.num_layers + 1)
        norms += self.num_layers * (
            self.q_size * self.attn_sub_norm + self.intermediate_size * self.ffn_sub_norm
        )
        if self.linear_norm:  # one input norm per ternary linear
            norms += self.num_layers * sum(k for _, k in self.linear_shapes().values())
        return {
            "ternary": ternary,
            "embedding": embedding,
            "lm_head": head,
            "norms": norms,
            "total": ternary + embedding + head + norms,
        }

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["eos_token_ids"] = tuple(d.get("eos_token_ids", ()))
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = Llama3Rope(**d["rope_scaling"])
        return cls(**d)
