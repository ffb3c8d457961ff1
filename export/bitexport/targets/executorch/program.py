"""A lowered decoder -> ExecuTorch program bytes, following ExecuTorch's LLM-runner contract.

- method `forward(tokens int64 [1, n], start_pos int64 [1]) -> logits [1, V]`, n dynamic in
  1..max_seq_len-1, the KV cache in mutable buffers (no cache tensors cross the method boundary);
- constant methods with the names of extension/llm/runner/constants.h (`get_max_seq_len`, ...),
  passed to `to_edge_transform_and_lower(constant_methods=...)` as ExecuTorch's Llama export does;
- dense work (every linear and matmul) delegated to XNNPACK; the ops XNNPACK cannot take (the tq2
  operator, the KV-cache and SDPA operators, embedding) run as kernels between its partitions.

The partitioner is given XNNPACK's GEMM configs only: the elementwise ops between two custom
operators would otherwise each become a partition of a few ops (about 8 a layer), and each
partition costs seconds of lowering and a delegate call per step for a vector of one token.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from bitexport.model.config import ModelConfig

# Nodes that are bookkeeping, not computation (symbolic sizes, asserts, tuple access).
_NOT_OPS = ("sym_size", "_assert", "_local_scalar_dense", "sym_constrain", "getitem")
_DENSE = ("linear", "mm", "addmm", "bmm", "matmul", "convolution")


def constant_methods(cfg: ModelConfig, max_seq_len: int, stop_ids: tuple[int, ...] | None = None) -> dict:
    """The metadata the LLM runners read (TextLLMRunner, Android LlmModule, iOS TextRunner).
    `get_eos_ids` holds every stop token (`stop_ids`; config.json's eos when None): those
    runners end a generation at any of them."""
    methods = {
        "get_max_seq_len": max_seq_len,
        "get_max_context_len": max_seq_len,
        "get_vocab_size": cfg.vocab_size,
        "get_n_layers": cfg.num_layers,
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": True,
        "enable_dynamic_shape": True,
        "get_eos_ids": list(cfg.eos_token_ids if stop_ids is None else stop_ids),
    }
    if cfg.bos_token_id is not None:
        methods["get_bos_id"] = cfg.bos_token_id
    return methods


@dataclass
class DelegationStats:
    """What XNNPACK took: counted over the edge graph's operators, delegated or not."""

    partitions: int = 0
    ops_total: int = 0
    ops_delegated: int = 0
    dense_total: int = 0  # linear / matmul-type operators
    dense_delegated: int = 0
    outside: dict = field(default_factory=dict)  # operator name -> count, for ops left to kernels

    @property
    def share(self) -> float:
        return self.ops_delegated / self.ops_total if self.ops_total else 0.0

    def as_dict(self) -> dict:
        return {
            "xnnpack_partitions": self.partitions,
            "ops_total": self.ops_total,
            "ops_delegated": self.ops_delegated,
            "delegated_op_share": round(self.share, 4),
            "dense_ops": self.dense_total,
            "dense_ops_delegated": self.dense_delegated,
            "ops_outside_xnnpack": dict(sorted(self.outside.items())),
        }


def _op_name(node: torch.fx.Node) -> str | None:
    if node.op != "call_function":
        return None
    t = node.target
    if t is operator.getitem or getattr(t, "__module__", "") in ("_operator", "operator"):
        return None
    name = getattr(t, "__name__", None) or str(t)
    schema = getattr(t, "_schema", None)
    if schema is not None:
        name = schema.name + ("." + schema.overload_name if schema.overload_name else "")
    if any(k in name for k in _NOT_OPS):
        return None
    return name


def _is_dense(name: str) -> bool:
    base = name.split("::")[-1].split(".")[0]
    return base in _DENSE


def delegation_stats(graph_module: torch.fx.GraphModule) -> DelegationStats:
    """Count the operators of an edge graph whose XNNPACK partitions are already lowered."""
    st = DelegationStats()
    outside: Counter = Counter()
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and "call_delegate" in str(node.target):
            st.partitions += 1
            lowered = getattr(graph_module, node.args[0].target)
            for inner in lowered.original_module.graph_module.graph.nodes:
                name = _op_name(inner)
                if name is None:
                    continue
                st.ops_total += 1
                st.ops_delegated += 1
                if _is_dense(name):
                    st.dense_total += 1
                    st.dense_delegated += 1
            continue
        name = _op_name(node)
        if name is None:
            continue
        st.ops_total += 1
        outside[name] += 1
        if _is_dense(name):
            st.dense_total += 1
    st.outside = dict(outside)
    return st


def export_decoder(model: nn.Module, max_seq_len: int) -> torch.export.ExportedProgram:
    """torch.export of `model.forward(tokens, start_pos)` with a dynamic token count."""
    model.eval()
    model.requires_grad_(False)
    n = torch.export.Dim("n", min=1, max=max_seq_len - 1)
    example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0], dtype=torch.long))
    with torch.no_grad():
        return torch.export.export(model, example, dynamic_shapes=({1: n}, None), strict=False)


# File alignment of every constant tensor (ExecuTorch's default is 16). The tq2 kernels read
# packed weight rows with 64-byte vector loads; at 16-byte alignment 3 rows in 4 start inside a
# cache line and every such load touches two lines. Segments start at 128-byte multiples, so 64
# here makes every constant cache-line aligned in the file, and in memory wherever the loader
# maps or copies segments at page or 64-byte alignment (mmap and the file loader do).
CONSTANT_ALIGNMENT = 64


def to_pte(
    ep: torch.export.ExportedProgram, methods: dict, xnnpack: str = "gemm", constant_alignment: int = CONSTANT_ALIGNMENT,
) -> tuple[bytes, DelegationStats]:
    """Partition for XNNPACK, lower, emit; returns the .pte bytes and the counts.

    xnnpack: "gemm" (dense work only, the default) or "all" (every op XNNPACK supports).
    """
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    configs = [c for c in ALL_PARTITIONER_CONFIGS if xnnpack == "all" or c.__name__ in GEMM_CONFIGS]
    edge = to_edge_transform_and_lower(
        ep,
        partitioner=[XnnpackPartitioner(configs=configs)],
        # custom operators (bitexport::, llama::, quantized_decomposed::) are not core ATen
        compile_config=EdgeCompileConfig(_check_ir_validity=False),
        constant_methods=methods,
    )
    stats = delegation_stats(edge.exported_program().graph_module)
    program = edge.to_executorch(
        ExecutorchBackendConfig(
            extract_delegate_segments=True,
            memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
            sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
            constant_tensor_alignment=constant_alignment,
        )
    )
    return program.buffer, stats


# XNNPACK partitioner configs for dense work (executorch/backends/xnnpack/partition/config), and
# the quantize/dequantize configs that keep torchao's int4 + dynamic-int8 pattern whole for them.
GEMM_CONFIGS = (
    "LinearConfig", "AddmmConfig", "MMConfig", "BMMConfig", "ConvolutionConfig",
    "QuantizedPerTensorConfig", "DeQuantizedPerTensorConfig",
    "QuantizeAffineConfig", "DeQuantizeAffineConfig", "ChooseQParamsAffineConfig",
)
