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
    # int8 by default: with the int8 embedding a tied model stores one table (the 2B-4T bundle
    # 856 MB, +0.08 % perplexity on the demo model); an int4 head is 15 % faster to read but needs
    # a second table (1061 MB) or an int4 embedding (+0.54 %, past the 0.5 % bound)
    head: str = option(
        "int8", choices=("int4", "int8", "fp16", "fp32"),
        help="output head: int8 blocks of up to 256 (shares a tied int8 embedding table), int4 blocks of 32, "
        "fp16 (half the file, computed in fp32), fp32",
    )
    embedding: str = option(
        "int8", choices=("int8", "int4", "fp16", "fp32"),
        help="embedding table: fp32, fp16, int8 blocks of up to 256, or int4 blocks of 32 (GatherBlockQuantized; "
        "a tied head of the same format shares the table)",
    )
    accuracy_level: int = option(
        4, choices=(4, 0), parse=int,
        help="MatMulNBits accuracy level: 4 (int8 activations, ORT's fast path) or 0 (fp32, exact, ~100x slower)",
    )
    activations: str = option(
        "block", choices=("block", "exact"),
        help="with accuracy level 4: block (ORT requantizes per K block; logits move by ~1-2 %%) or exact "
        "(BitNet's per-token int8 through a sentinel input per K block; measured 1.1-3x slower decode)",
    )

    @property
    def token_exact(self) -> bool:
        """Greedy tokens expected to equal the reference's (up to int8 rounding ties): not with
        ORT's own per-block int8 requantization or a lossy head or embedding."""
        exact_linears = self.accuracy_level == 0 or self.activations == "exact"
        return exact_linears and self.head == "fp32" and self.embedding == "fp32"
