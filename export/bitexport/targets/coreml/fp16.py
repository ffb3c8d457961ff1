"""fp16 safety for the Core ML target: which ops must compute in fp32.

Core ML runs an ML program in fp16 unless told otherwise, and BitNet b1.58-2B-4T's squared-ReLU
MLP leaves the fp16 range (65504): relu(g)^2 * up reaches millions, and the RMSNorm after it
squares that again. This module runs the Core ML form of the decoder (coreml_module) in fp32 on a
calibration prompt and records, for every torch op, the largest magnitude it produces, grouped by
the innermost module it runs in. A module whose worst op comes within `headroom` of the fp16
limit is kept in fp32 when converting: `ct.transform.FP16ComputePrecision(op_selector=...)`
gets a selector that reads the module path coremltools attaches to each MIL op
(`op.scopes[ScopeSource.TORCHSCRIPT_MODULE_NAME]`, taken from the TorchScript trace). The module
path is the chain of *called* modules' attribute names (a ModuleList is never called, so
`layers.0.mlp.act` appears as ('0', 'mlp', 'act')); the recorder here builds the same chain with
forward hooks, so both sides name a scope the same way by construction.

"Magnitude" is what an fp16 kernel would have to hold, not only the op's result:
- for a matmul (linear, attention scores) it is max(|A| @ |B|), a bound on every partial sum in
  any summation order;
- for a mean or sum it is the sum of |x| over the reduced axes (the accumulator before dividing).
Non-finite values are ignored: the additive causal mask carries -inf on purpose.

Headroom: the calibration prompt is one prompt; others drive activations higher. The default
factor 8 (three binades: the threshold is 65504 / 8 = 8188) is a margin against that. A false
positive costs speed (an op off the fp16 path); a false negative costs NaN logits, so the margin
leans generous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

FP16_MAX = 65504.0
DEFAULT_HEADROOM = 8.0

Scope = tuple[str, ...]

CALIBRATION_TEXT = (
    "The quick brown fox jumps over the lazy dog. To be, or not to be, that is the question: "
    "whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune. "
    "In 1969, 3 astronauts flew 384,400 km to the Moon; what did they see? def f(x): return x * 2"
)

_MATMULS = {F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.mm}
_MEANS = {torch.mean, torch.Tensor.mean}
_SUMS = {torch.sum, torch.Tensor.sum}


@dataclass
class Fp16Report:
    """Worst magnitude per module scope, and which scopes stay in fp32."""

    worst: dict[Scope, float]
    headroom: float = DEFAULT_HEADROOM
    kv_max: float = 0.0  # largest key/value written to the (fp16-only) state
    calibration_tokens: int = 0
    fp32: set[Scope] = field(init=False)

    def __post_init__(self) -> None:
        self.fp32 = {s for s, v in self.worst.items() if v > self.threshold}

    @property
    def threshold(self) -> float:
        return FP16_MAX / self.headroom

    def summary(self) -> dict:
        return {
            "fp16_threshold": self.threshold,
            "fp32_modules": sorted(".".join(s) for s in self.fp32),
            "max_activation": max(self.worst.values(), default=0.0),
            "kv_cache_max": self.kv_max,
            "calibration_tokens": self.calibration_tokens,
        }


def op_scope(op) -> Scope:
    """The module path coremltools recorded for a MIL op (without the op's own value name)."""
    from coremltools.converters.mil.mil.scope import ScopeSource

    names = op.scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME, [])
    return tuple(names[:-1])


def fp16_selector(fp32_scopes: set[Scope]):
    """`op_selector` for FP16ComputePrecision: True (compute in fp16) unless the op's scope is
    one the analysis keeps in fp32."""
    return lambda op: op_scope(op) not in fp32_scopes


def _finite_abs_max(t: torch.Tensor) -> float:
    if not t.numel():
        return 0.0
    a = t.detach().abs()
    m = float(a.max())
    if math.isfinite(m):
        return m
    return float(a.nan_to_num(nan=0.0, posinf=0.0).max())  # only the mask's -inf gets here


def _magnitude(func, args, kwargs, out) -> float:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    mag = max((_finite_abs_max(o) for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()), default=0.0)
    if func in _MATMULS and len(args) >= 2:
        a, b = args[0], args[1]
        bound = a.abs() @ (b.abs().t() if func is F.linear else b.abs())
        mag = max(mag, _finite_abs_max(bound))
    elif func is F.scaled_dot_product_attention:
        q, k = args[0], args[1]
        mag = max(mag, _finite_abs_max(q.abs() @ k.abs().transpose(-1, -2)))
    elif (func in _MEANS or func in _SUMS) and isinstance(out, torch.Tensor) and out.numel():
        x = args[0]
        total = func(x.abs(), *args[1:], **kwargs)
        if func in _MEANS:
            total = total * (x.numel() / out.numel())
        mag = max(mag, _finite_abs_max(total))
    return mag


class _Recorder(TorchFunctionMode):
    def __init__(self, stack: list[Scope], worst: dict[Scope, float]) -> None:
        super().__init__()
        self.stack, self.worst = stack, worst

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # the mode is switched off while this handler runs, so the bookkeeping ops below are
        # not recorded themselves
        mag = _magnitude(func, args, kwargs, out)
        if mag > 0.0:
            key = self.stack[-1]
            if mag > self.worst.get(key, 0.0):
                self.worst[key] = mag
        return out


def record_magnitudes(model: nn.Module, *inputs: torch.Tensor) -> dict[Scope, float]:
    """Run `model(*inputs)` and return the worst op magnitude per called-module scope."""
    stack: list[Scope] = [()]
    worst: dict[Scope, float] = {}
    handles = []

    def enter(leaf: str) -> None:
        stack.append(stack[-1] + (leaf,))

    def leave() -> None:  # a hook that returns something would replace the module's output
        stack.pop()

    for name, module in model.named_modules():
        if not name:
            continue
        leaf = name.rsplit(".", 1)[-1]
        handles.append(module.register_forward_pre_hook(lambda m, a, leaf=leaf: enter(leaf)))
        handles.append(module.register_forward_hook(lambda m, a, o: leave()))
    try:
        with torch.no_grad(), _Recorder(stack, worst):
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return worst


def analyze(model: nn.Module, prompt_ids: list[int], headroom: float = DEFAULT_HEADROOM) -> Fp16Report:
    """Calibrate a CoreMLDecoder on `prompt_ids` (one prefill) and decide the fp32 scopes."""
    from bitexport.targets.coreml.module import causal_mask

    ids = prompt_ids[: model.max_seq_len]
    model.reset_cache()
    worst = record_magnitudes(model, torch.tensor([ids], dtype=torch.int32), causal_mask(0, len(ids)))
    kv_max = max(_finite_abs_max(model.key_cache), _finite_abs_max(model.value_cache))
    model.reset_cache()
    return Fp16Report(worst, headroom, kv_max, len(ids))
