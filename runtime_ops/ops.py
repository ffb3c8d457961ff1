"""Schemas and PyTorch reference implementations of the bitexport runtime operators.

``bitexport::tq2_linear(Tensor x, Tensor packed_weight, Tensor weight_scale, int out_features)
-> Tensor`` and its ``.out`` overload. x float32 ``[..., K]``, packed_weight uint8 in the tq2
layout (tq2_layout.py), weight_scale float32 ``[N]`` (one scale per output row), result float32
``[..., N]``.

Arithmetic (BitNet b1.58 W1.58A8), the same in this reference and in every C++ path, so they agree
bit for bit: per token, ``m = max(max|x|, 1e-5)``, ``s = 127 / m``,
``xq = clamp(round_half_even(x * s), -128, 127)``, ``acc = sum_k xq * w`` (exact integer),
``y = (float(acc) / s) * weight_scale`` (float32, in that order).

Importing this module registers the operators (once per process; importing again is a no-op).
"""

from __future__ import annotations

import torch

from bitexport.model.quant import quantize_activations

from .tq2_layout import packed_shape, unpack_tq2

NAMESPACE = "bitexport"
TQ2_LINEAR_SCHEMA = (
    "tq2_linear(Tensor x, Tensor packed_weight, Tensor weight_scale, int out_features) -> Tensor"
)
TQ2_LINEAR_OUT_SCHEMA = (
    "tq2_linear.out(Tensor x, Tensor packed_weight, Tensor weight_scale, int out_features, *, "
    "Tensor(a!) out) -> Tensor(a!)"
)
# Largest K the kernels accept (every int32 accumulator stays exact below it).
MAX_IN_FEATURES = 1 << 20


def tq2_linear_reference(
    x: torch.Tensor, codes: torch.Tensor, weight_scale: torch.Tensor
) -> torch.Tensor:
    """Plain-torch W1.58A8 linear on unpacked ternary ``codes`` (int [N, K] in {-1, 0, 1}).

    The definition the C++ kernels are tested against, bit for bit.
    """
    torch._check(x.dtype == torch.float32, lambda: f"tq2_linear: x must be float32, got {x.dtype}")
    torch._check(
        weight_scale.dtype == torch.float32,
        lambda: f"tq2_linear: weight_scale must be float32, got {weight_scale.dtype}",
    )
    torch._check(x.dim() >= 1, lambda: "tq2_linear: x must have at least one dimension")
    n, k = codes.shape
    torch._check(
        x.shape[-1] == k, lambda: f"tq2_linear: x has {x.shape[-1]} features, weight has {k}"
    )
    torch._check(k >= 1, lambda: "tq2_linear: in_features must be >= 1")
    torch._check(weight_scale.numel() == n, lambda: "tq2_linear: weight_scale must have N values")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.shape[0] == 0:
        return x.new_empty((*lead, n))
    xq, s = quantize_activations(x2)
    # Every product and partial sum is an integer below 2^53 in magnitude, so float64 matmul is
    # exact in any summation order (float32 could be lowered to bf16 by a global matmul setting).
    # + 0.0: an integer sum has no negative zero, but a float one made only of -0.0 products
    # (e.g. K = 1, a negative activation, weight 0) is -0.0; the kernels' int32 sum gives +0.0.
    acc = xq.to(torch.float64) @ codes.to(torch.float64).t() + 0.0
    y = (acc.to(torch.float32) / s) * weight_scale.reshape(1, n)
    return y.reshape(*lead, n)


def _check_args(x: torch.Tensor, packed_weight: torch.Tensor, out_features: int) -> None:
    k = x.shape[-1]
    torch._check(
        1 <= k <= MAX_IN_FEATURES, lambda: f"tq2_linear: in_features {k} out of range"
    )
    torch._check(out_features >= 1, lambda: "tq2_linear: out_features must be >= 1")
    torch._check(
        packed_weight.dtype == torch.uint8,
        lambda: f"tq2_linear: packed_weight must be uint8, got {packed_weight.dtype}",
    )
    expected = packed_shape(out_features, k)
    torch._check(
        tuple(packed_weight.shape) == expected,
        lambda: f"tq2_linear: packed_weight must have shape {expected}, got "
        f"{tuple(packed_weight.shape)}",
    )


def _tq2_linear(
    x: torch.Tensor, packed_weight: torch.Tensor, weight_scale: torch.Tensor, out_features: int
) -> torch.Tensor:
    _check_args(x, packed_weight, out_features)
    codes = unpack_tq2(packed_weight, out_features, x.shape[-1])
    return tq2_linear_reference(x, codes.to(x.device), weight_scale)


def _tq2_linear_out(
    x: torch.Tensor,
    packed_weight: torch.Tensor,
    weight_scale: torch.Tensor,
    out_features: int,
    *,
    out: torch.Tensor,
) -> torch.Tensor:
    result = _tq2_linear(x, packed_weight, weight_scale, out_features)
    out.resize_(result.shape)
    out.copy_(result)
    return out


def _tq2_linear_fake(
    x: torch.Tensor, packed_weight: torch.Tensor, weight_scale: torch.Tensor, out_features: int
) -> torch.Tensor:
    torch._check(x.dtype == torch.float32, lambda: f"tq2_linear: x must be float32, got {x.dtype}")
    _check_args(x, packed_weight, out_features)
    return x.new_empty((*x.shape[:-1], out_features))


def _tq2_linear_out_meta(
    x: torch.Tensor,
    packed_weight: torch.Tensor,
    weight_scale: torch.Tensor,
    out_features: int,
    *,
    out: torch.Tensor,
) -> torch.Tensor:
    out.resize_((*x.shape[:-1], out_features))
    return out


def _already_defined() -> bool:
    try:
        torch.ops.bitexport.tq2_linear.default  # noqa: B018
        torch.ops.bitexport.tq2_linear.out  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


# The Library object must stay alive for the registrations to stay; it lives in this module and
# survives importlib.reload (a reload that dropped it would let the garbage collector unregister
# the operators at some later, unpredictable moment).
_LIBRARY: torch.library.Library | None = globals().get("_LIBRARY")


def register() -> None:
    """Defines the operators unless this process already has them (safe to call repeatedly)."""
    global _LIBRARY
    if _LIBRARY is not None or _already_defined():
        return
    lib = torch.library.Library(NAMESPACE, "FRAGMENT")
    lib.define(TQ2_LINEAR_SCHEMA)
    lib.define(TQ2_LINEAR_OUT_SCHEMA)
    lib.impl("tq2_linear", _tq2_linear, "CompositeExplicitAutograd")
    lib.impl("tq2_linear.out", _tq2_linear_out, "CompositeExplicitAutograd")
    torch.library.register_fake(f"{NAMESPACE}::tq2_linear", _tq2_linear_fake, lib=lib)
    lib.impl("tq2_linear.out", _tq2_linear_out_meta, "Meta")
    _LIBRARY = lib


register()


def tq2_linear(
    x: torch.Tensor, packed_weight: torch.Tensor, weight_scale: torch.Tensor, out_features: int
) -> torch.Tensor:
    """Calls ``torch.ops.bitexport.tq2_linear`` (what an exported graph records)."""
    return torch.ops.bitexport.tq2_linear.default(x, packed_weight, weight_scale, out_features)
