"""Pass: RMSNorm -> EtRMSNorm, the same arithmetic without `pow`.

`x.pow(2)` exports as aten.pow, which ExecuTorch's portable kernel computes with std::pow per
element (measured: about half a millisecond per call on a 128 x 1536 prefill); `x * x` is the
same value bit for bit (IEEE pow(x, 2) is the correctly rounded x*x) through the fast mul kernel.
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult, replace_modules
from bitexport.model.decoder import RMSNorm


class EtRMSNorm(nn.Module):
    def __init__(self, ref: RMSNorm) -> None:
        super().__init__()
        self.weight = ref.weight
        self.eps = ref.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def use_et_norms(model: nn.Module) -> PassResult:
    return replace_modules(model, RMSNorm, EtRMSNorm, "use_et_norms")
