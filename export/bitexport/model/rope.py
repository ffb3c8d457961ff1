"""Rotary position tables: plain RoPE and Llama 3's frequency scaling ("rope_type": "llama3").

Llama 3 (Meta's reference code, also what transformers applies for rope_type "llama3") rescales
the inverse frequencies by wavelength, measured against the context the model was pretrained on
(`original_max_position_embeddings`, L):
- wavelength 2*pi/f longer than L / low_freq_factor: f / factor (slow dimensions are stretched);
- shorter than L / high_freq_factor: f unchanged (fast dimensions keep their resolution);
- in between: a linear blend of the two by t = (L / wavelength - low) / (high - low).
The attention scale stays 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Llama3Rope:
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    def __post_init__(self) -> None:
        if not (self.factor > 0 and 0 < self.low_freq_factor < self.high_freq_factor
                and self.original_max_position_embeddings > 0):
            raise ValueError(
                "llama3 rope_scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                f"original_max_position_embeddings > 0 (got {self})"
            )

    def scale(self, inv_freq: torch.Tensor) -> torch.Tensor:
        context = float(self.original_max_position_embeddings)
        wavelength = 2 * math.pi / inv_freq
        stretched = inv_freq / self.factor
        t = (context / wavelength - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
        blended = (1 - t) * stretched + t * inv_freq
        out = torch.where(wavelength > context / self.low_freq_factor, stretched, inv_freq)
        middle = (wavelength <= context / self.low_freq_factor) & (wavelength >= context / self.high_freq_factor)
        return torch.where(middle, blended, out)


def inverse_frequencies(head_dim: int, theta: float, scaling: Llama3Rope | None = None) -> torch.Tensor:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    return inv_freq if scaling is None else scaling.scale(inv_freq)


def rope_tables(
    head_dim: int, theta: float, length: int, scaling: Llama3Rope | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [length, head_dim] for the rotate-half convention of transformers' Llama."""
    inv_freq = inverse_frequencies(head_dim, theta, scaling)
    freqs = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()
