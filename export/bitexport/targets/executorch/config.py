"""Options of the ExecuTorch target (a .pte on the LLM-runner contract)."""

from __future__ import annotations

from dataclasses import dataclass

from bitexport.errors import TargetError
from bitexport.targets.config import TargetConfig, option


def _group(text: str) -> int | None:
    return None if text in ("row", "none") else int(text)


@dataclass(frozen=True)
class ExecutorchConfig(TargetConfig):
    target = "executorch"

    weights: str = option(
        "tq2", choices=("tq2", "int4", "fp32"),
        help="ternary layers: tq2 (bitexport's 2-bit kernels), int4 (XNNPACK, stock runtime), fp32 (baseline)",
    )
    head: str = option(
        "int4", choices=("int4", "int8", "fp32"), help="output head: int4 groups of 32, int8 per row, or fp32",
    )
    embedding: str = option(
        "int8", choices=("int8", "int4", "fp32"),
        help="embedding table: fp32, int8 per row, or int4 groups of 32 (fp16 scales); stock quantized kernels",
    )
    int4_group_size: int | None = option(
        None, parse=_group,
        help="with --weights int4: weights per int4 scale group (a multiple of 32), or 'row' (default)",
    )
    int4_activations: str = option(
        "xnnpack", choices=("xnnpack", "exact"),
        help="with --weights int4: XNNPACK's asymmetric int8 activations, or exact per-token absmax",
    )
    kv_cache: str = option(
        "fp32", choices=("fp32", "fp16", "bf16"),
        help="KV cache and attention dtype: fp32 (default), fp16 or bf16 (half the cache bytes; measured slower "
             "on x86 without native half arithmetic, see README)",
    )
    xnnpack: str = option(
        "gemm", choices=("gemm", "all"),
        help="what XNNPACK takes: gemm (linears and matmuls) or all (elementwise ops too; no faster measured)",
    )

    def validate(self) -> None:
        if self.int4_group_size is not None and (self.int4_group_size <= 0 or self.int4_group_size % 32):
            raise TargetError(f"--int4-group-size {self.int4_group_size} must be a positive multiple of 32 (or 'row')")

    @property
    def token_exact(self) -> bool:
        """Whether the .pte computes the reference's arithmetic (tokens agree unless a float
        rounding tie flips an int8 activation): every lossy stage is off."""
        exact_linears = self.weights in ("tq2", "fp32") or self.int4_activations == "exact"
        return exact_linears and self.head == "fp32" and self.embedding == "fp32" and self.kv_cache == "fp32"
