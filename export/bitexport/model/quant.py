"""The one statement of BitNet b1.58's quantizers (W1.58A8), shared by the reference decoder,
training, every lowering and the kernels' reference:

    gamma = mean|W|,  Wq = clip(round(W / gamma), -1, 1)            (per tensor, absmean)
    s = 127 / max|x|, xq = clip(round(x * s), -128, 127)            (per token, absmax int8)

and their straight-through fake-quant forms for training.
"""

from __future__ import annotations

import torch

ACT_EPS = 1e-5  # clamp of max|x| and mean|W|, as in the published code and transformers


def absmean_ternarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary codes (int8 in {-1, 0, 1}) and the per-tensor scale gamma (float32 [1])."""
    w = weight.detach().float()
    # Written as transformers and the 1bitLLM code write it: round(W * (1/gamma)), rescaled by
    # 1 / (1/gamma), so codes and scale match theirs to the bit.
    inv = 1.0 / w.abs().mean().clamp(min=ACT_EPS)
    codes = (w * inv).round().clamp(-1, 1).to(torch.int8)
    return codes, (1.0 / inv).reshape(1)


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax int8: integer-valued float32 codes and the scale s (keepdim)."""
    m = x.abs().amax(dim=-1, keepdim=True).clamp(min=ACT_EPS)
    # full_like(...) / m is a true division; `127.0 / m` would run as 127 * reciprocal(m), which
    # rounds differently from the C++ kernel's 127.0f / m.
    s = torch.full_like(m, 127.0) / m
    return (x * s).round().clamp(-128, 127), s


class _RoundSTE(torch.autograd.Function):
    """round() whose gradient is the identity: the straight-through estimator."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.round()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


def fake_quant_activations(x: torch.Tensor) -> torch.Tensor:
    s = 127.0 / x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=ACT_EPS)
    return _RoundSTE.apply(x * s).clamp(-128, 127) / s


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    inv = 1.0 / w.detach().abs().mean().clamp(min=ACT_EPS)
    return _RoundSTE.apply(w * inv).clamp(-1, 1) / inv
