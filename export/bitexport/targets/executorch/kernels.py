"""The operator libraries a .pte of this target needs besides XNNPACK, shared by the lowering
(which must see the ops' PyTorch definitions) and the runner (which registers their kernels)."""

from __future__ import annotations

from bitexport.errors import EnvironmentProblem

TQ2 = "bitexport-tq2"  # bitexport's kernel library: missing from stock runtimes
QUANTIZED = "executorch-quantized"  # shipped by the stock runtimes, registered on import here


def load_llm_custom_ops() -> None:
    """Registers llama::update_cache / llama::custom_sdpa with PyTorch and the ExecuTorch runtime."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401


def load_quantized_ops() -> None:
    """Defines quantized_decomposed::* in PyTorch (export) and registers their ExecuTorch kernels."""
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401


def required_kernels(weights: str, embedding: str) -> list[str]:
    """Kernel libraries a runner must load besides XNNPACK and the LLM custom ops."""
    needs = []
    if weights == "tq2":
        needs.append(TQ2)
    if embedding in ("int8", "int4"):
        needs.append(QUANTIZED)
    return needs


def load_runtime_kernels(needs: list[str]) -> None:
    """Register every kernel library the .pte needs with this process's ExecuTorch runtime."""
    from bitexport.log import quiet_loggers

    quiet_loggers()
    load_llm_custom_ops()
    if QUANTIZED in needs:
        load_quantized_ops()
    if TQ2 in needs:
        from bitexport.runtime_ops import load_kernels

        try:
            load_kernels()
        except EnvironmentProblem as e:
            raise EnvironmentProblem(
                f"this .pte needs bitexport's tq2 kernels: {e} (or export with --weights int4 for a stock runtime)"
            ) from None
