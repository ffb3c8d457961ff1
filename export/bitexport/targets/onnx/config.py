"""Options of the ONNX target (a folder for onnxruntime-genai)."""

from __future__ import annotations

from dataclasses import dataclass

from bitexport.targets.config import TargetConfig, option


@dataclass(frozen=True)
class OnnxConfig(TargetConfig):
    target = "onnx"

    weights: str = option(
        "tq2", choices=("tq2", "int4", "fp32"),
        help="ternary layers: tq2 (MatMulNBits 2-bit), int4 (MatMulNBits 4-bit), fp32 (plain MatMul)",
    )
    head: str = option("int4", choices=("int4", "fp32"), help="output head: int4 groups of 32, or fp32")
    embedding: str = option("fp32", choices=("fp32", "int4"), help="embedding table: fp32, or int4 groups of 32")
    accuracy_level: int = option(
        4, choices=(4, 0), parse=int,
        help="MatMulNBits accuracy level: 4 (int8 activations, ORT's fast path) or 0 (fp32, exact, ~100x slower)",
    )

    @property
    def token_exact(self) -> bool:
        """Greedy tokens expected to equal the reference's (up to int8 rounding ties): not with
        ORT's own int8 requantization (accuracy 4) or a lossy head or embedding."""
        return self.accuracy_level == 0 and self.head == "fp32" and self.embedding == "fp32"
