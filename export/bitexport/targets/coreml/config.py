"""Options of the Core ML target (an iOS 18 .mlpackage with its KV cache in state)."""

from __future__ import annotations

from dataclasses import dataclass

from bitexport.errors import TargetError
from bitexport.targets.config import TargetConfig, option


@dataclass(frozen=True)
class CoreMLConfig(TargetConfig):
    target = "coreml"

    weights: str = option(
        "tq2", choices=("tq2", "int4"),
        help="ternary layers: tq2 (exact 2-bit palettization), int4 (blockwise int4)",
    )
    head: str = option("int4", choices=("int4", "fp32"), help="output head: int4 groups of 32, or fp32")
    embedding: str = option(
        "int8", choices=("int8", "int4", "fp16"),
        help="embedding table: fp16 (Core ML's float weights), int8 per row, or int4 blocks of 32 (fp16 scales); "
        "a tied int4 head shares an int4 table",
    )
    fp16_headroom: float = option(
        8.0, parse=float,
        help="ops whose calibrated magnitude exceeds 65504 / HEADROOM compute in fp32",
    )

    def validate(self) -> None:
        if not isinstance(self.fp16_headroom, (int, float)) or self.fp16_headroom < 1:
            raise TargetError(f"--fp16-headroom must be a number >= 1 (got {self.fp16_headroom!r})")
