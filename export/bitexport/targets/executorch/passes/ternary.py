"""TernaryLinear: one or more BitLinears that read the same input, as one ternary matrix.

q/k/v (and gate/up) read the same activations; stacking their codes into one [sum N, K] matrix
with one scale per output row lets one operator quantize the input once and dispatch its threads
once. The fusion is exact: per-token quantization of the same x gives the same xq, and each
output row keeps its own linear's scale, so every output equals the separate BitLinear's bit for
bit (the eager forward below is BitLinear's arithmetic with a per-row scale).

The weight-format passes (et_tq2, et_int4, et_fp32) replace TernaryLinear modules; the structure
passes (et_attention, et_mlp) create them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bitexport.errors import TargetError
from bitexport.model.bitlinear import BitLinear
from bitexport.model.quant import quantize_activations


class TernaryLinear(nn.Module):
    """codes int8 [N, K] in {-1, 0, 1}, row_scale float32 [N]; outputs split into `splits`."""

    def __init__(self, codes: torch.Tensor, row_scale: torch.Tensor, splits: tuple[int, ...]) -> None:
        super().__init__()
        if sum(splits) != codes.shape[0] or row_scale.shape != (codes.shape[0],):
            raise ValueError(f"splits {splits} / row_scale {tuple(row_scale.shape)} do not match codes {tuple(codes.shape)}")
        self.register_buffer("codes", codes.to(torch.int8).contiguous())
        self.register_buffer("row_scale", row_scale.to(torch.float32).contiguous())
        self.splits = tuple(int(s) for s in splits)
        self.in_features = int(codes.shape[1])
        self.out_features = int(codes.shape[0])

    @classmethod
    def fuse(cls, linears: list[BitLinear]) -> "TernaryLinear":
        """Stack frozen BitLinears of one input size into one module (outputs in the same order)."""
        if not linears or any(not lin.frozen for lin in linears):
            raise ValueError("TernaryLinear.fuse needs frozen BitLinears (call freeze() first)")
        if any(lin.rms_norm is not None for lin in linears):
            # the input norm would be dropped: such linears go through fuse_linears
            raise ValueError("TernaryLinear.fuse cannot carry an input norm (use_rms_norm); use fuse_linears")
        if len({lin.in_features for lin in linears}) != 1:
            raise ValueError("TernaryLinear.fuse needs linears that share in_features")
        codes = torch.cat([lin.codes for lin in linears])
        row_scale = torch.cat([lin.scale.reshape(1).expand(lin.out_features) for lin in linears])
        return cls(codes, row_scale, tuple(lin.out_features for lin in linears))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        xq, s = quantize_activations(x.float())
        acc = F.linear(xq, self.codes.float())
        return split_outputs((acc / s) * self.row_scale, self.splits)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, splits={self.splits}"


class NormedLinears(nn.Module):
    """Linears that read the same input but each normalize it first (use_rms_norm: one RMSNorm
    weight per linear): each quantizes its own normed input, so they cannot share one operator
    call; outputs as a fused TernaryLinear gives them (a tuple, in order)."""

    def __init__(self, norms: list[nn.Module], linears: list[TernaryLinear]) -> None:
        super().__init__()
        self.norms = nn.ModuleList(norms)
        self.linears = nn.ModuleList(linears)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outs = tuple(lin(norm(x)) for norm, lin in zip(self.norms, self.linears))
        return outs if len(outs) > 1 else outs[0]


def fuse_linears(linears: list[BitLinear]) -> nn.Module:
    """One TernaryLinear for linears without input norms, NormedLinears for linears with them."""
    norms = [lin.rms_norm for lin in linears]
    if all(n is None for n in norms):
        return TernaryLinear.fuse(linears)
    if any(n is None for n in norms):
        raise ValueError("fuse_linears: either every linear has an input norm or none has")
    return NormedLinears(norms, [TernaryLinear.fuse([_without_norm(lin)]) for lin in linears])


def _without_norm(lin: BitLinear) -> BitLinear:
    return BitLinear.from_ternary(lin.codes, lin.scale)


def ternary_linears(model: nn.Module) -> list[tuple[str, TernaryLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, TernaryLinear)]


@dataclass(frozen=True)
class PassResult:
    """What a pass did, as ExecuTorch's exir passes report it: the module and how many places
    changed (the pipeline logs it, and a pass that changed nothing where it must has raised)."""

    module: nn.Module
    changed: int


def replace_modules(model: nn.Module, kind: type, make, pass_name: str) -> PassResult:
    """Replace every child of type `kind` by make(child). Every pass that calls this expects at
    least one match: none means an earlier pass or the loader built something else, and the
    export would silently keep the unlowered modules, so it raises."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kind):
                setattr(parent, name, make(child))
                count += 1
    if count == 0:
        raise TargetError(f"lowering pass {pass_name} found no {kind.__name__} to replace; this is a bug in bitexport")
    return PassResult(model, count)


def split_outputs(y: torch.Tensor, splits: tuple[int, ...]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """A fused linear's output as its parts' outputs (one tensor when not fused)."""
    return y if len(splits) == 1 else tuple(y.split(splits, dim=-1))
