"""The ExecuTorch target: one .pte per bundle that ExecuTorch's LLM runners load as they load Llama.

--weights (ternary layers):
- tq2 (default): bitexport's packed 2-bit operator; needs bitexport's kernel library at run time.
- int4: torchao int4 weights (exact for ternary codes) + int8 dynamic activations on XNNPACK; runs
  on a stock ExecuTorch runtime.
- fp32: float weights on XNNPACK, the baseline; stock runtime.
Every mode also needs ExecuTorch's LLM custom ops (KV cache, SDPA: shipped with the stock LLM
runtimes) and, for --embedding int8, its quantized kernels (shipped too).

Lowering, in order, each a pass from module to module on a copy of the loaded decoder:
et_norm (RMSNorm without pow) -> et_attention (fused qkv, ExecuTorch KV cache + SDPA) -> et_mlp
(fused gate/up) -> et_tq2 | et_int4 | et_fp32 -> et_head -> et_embedding; then et_program.

ExportOptions.extra switches: "int4_activations" ("xnnpack" default | "exact", et_int4),
"int4_group_size" (None = one block a row | 32, ...), "xnnpack" ("gemm" default | "all": also
elementwise ops; measured no faster on the large shape and 147 partitions instead of 1).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from bitexport.bundle import Artifact, Bundle
from bitexport.errors import TargetError
from bitexport.load import LoadedModel
from bitexport.targets.base import ExportOptions

WEIGHTS = ("tq2", "int4", "fp32")
HEADS = ("int4", "fp32")
EMBEDDINGS = ("fp32", "int8")
RUNTIME = "executorch"


def lower_decoder(loaded: LoadedModel, options: ExportOptions):
    """The ExecuTorch-ready module for `options` (the loaded model is left untouched)."""
    from bitexport.lower.et_attention import use_et_attention
    from bitexport.lower.et_embedding import quantize_embedding
    from bitexport.lower.et_fp32 import to_fp32
    from bitexport.lower.et_head import quantize_head
    from bitexport.lower.et_int4 import to_int4
    from bitexport.lower.et_mlp import fuse_mlp
    from bitexport.lower.et_norm import use_et_norms
    from bitexport.lower.et_tq2 import to_tq2
    from bitexport.quiet import quiet_loggers

    quiet_loggers()
    model = copy.deepcopy(loaded.model)
    model.last_logits_only = True  # the runners' contract: logits [1, V] of the last position
    model = fuse_mlp(use_et_attention(use_et_norms(model)))
    weights = options.weights or WEIGHTS[0]
    if weights == "tq2":
        model = to_tq2(model)
    elif weights == "int4":
        model = to_int4(model, options.extra.get("int4_group_size"), options.extra.get("int4_activations", "xnnpack"))
    else:
        model = to_fp32(model)
    model = quantize_embedding(quantize_head(model, options.head), options.embedding)
    return model.eval()


def pte_name(model_name: str, weights: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-.") or "model"
    return f"{safe}-{weights}.pte"


def required_kernels(weights: str, embedding: str) -> list[str]:
    """Kernel libraries a runner must load besides XNNPACK and the LLM custom ops. Only
    "bitexport-tq2" is missing from stock runtimes; the quantized kernels ship with them but the
    Python runtime registers them only on import."""
    needs = []
    if weights == "tq2":
        needs.append("bitexport-tq2")
    if embedding == "int8":
        needs.append("executorch-quantized")  # shipped by the stock runtimes, loaded on demand here
    return needs


class ExecutorchTarget:
    name = "executorch"
    weights = WEIGHTS

    def check(self, model: LoadedModel, options: ExportOptions) -> None:
        weights = options.weights or WEIGHTS[0]
        if weights not in WEIGHTS:
            raise TargetError(f"--weights {weights} is not available for executorch; choose one of {', '.join(WEIGHTS)}")
        if options.head not in HEADS:
            raise TargetError(f"--head {options.head} is not available for executorch; choose one of {', '.join(HEADS)}")
        if options.embedding not in EMBEDDINGS:
            raise TargetError(
                f"--embedding {options.embedding} is not available for executorch; choose one of {', '.join(EMBEDDINGS)}"
            )
        group = options.extra.get("int4_group_size")
        if weights == "int4" and group is not None:
            cfg = model.config
            bad = [k for k in (cfg.hidden_size, cfg.intermediate_size, cfg.q_size) if k % int(group)]
            if bad or int(group) % 32:
                raise TargetError(
                    f"int4 group size {group} must be a multiple of 32 dividing the layers' input sizes "
                    f"{cfg.hidden_size}, {cfg.intermediate_size}, {cfg.q_size}; use the default per-row int4"
                )
        if options.extra.get("int4_activations", "xnnpack") not in ("xnnpack", "exact"):
            raise TargetError("int4_activations must be 'xnnpack' or 'exact'")
        max_seq_len = options.max_seq_len or model.model.max_seq_len
        if max_seq_len < 2:
            raise TargetError("--max-seq-len must be at least 2 for an ExecuTorch export")

    def emit(self, model: LoadedModel, options: ExportOptions, folder: Path) -> list[Artifact]:
        from bitexport.lower.et_head import head_label
        from bitexport.lower.et_inspect import summarize_pte
        from bitexport.lower.et_program import constant_methods, export_decoder, to_pte

        weights = options.weights or WEIGHTS[0]
        module = lower_decoder(model, options)
        max_seq_len = module.max_seq_len
        ep = export_decoder(module, max_seq_len)
        data, stats = to_pte(ep, constant_methods(model.config, max_seq_len), options.extra.get("xnnpack", "gemm"))
        name = pte_name(model.name, weights)
        path = Path(folder) / name
        path.write_bytes(data)
        summary = summarize_pte(path)
        details = {
            "ternary_bits_per_weight": _ternary_bits(weights, summary, module),
            "head": head_label(options.head, model.config.hidden_size),
            "embedding": options.embedding,
            "custom_kernels": required_kernels(weights, options.embedding),
            "stock_runtime": weights != "tq2",
            "int4_granularity": _int4_granularity(options) if weights == "int4" else None,
            "int4_activations": options.extra.get("int4_activations", "xnnpack") if weights == "int4" else None,
            "token_exact": _token_exact(weights, options),
            "llm_runner_contract": "forward(tokens [1,n], start_pos [1]) -> logits [1,V]; KV cache in buffers",
            **stats.as_dict(),
        }
        return [Artifact(name, self.name, RUNTIME, weights, details={k: v for k, v in details.items() if v is not None})]

    def runner(self, bundle: Bundle, artifact: Artifact):
        from bitexport.runners.executorch import ExecutorchRunner

        return ExecutorchRunner.for_artifact(bundle, artifact)

    def verify(self, bundle: Bundle, artifact: Artifact) -> list[str]:
        from bitexport.lower.et_inspect import TQ2_OP, summarize_pte

        path = bundle.path / artifact.path
        if not path.is_file():
            return [f"{artifact.path}: missing"]
        try:
            s = summarize_pte(path)
        except Exception as e:  # a corrupt flatbuffer can raise anything from the parser
            return [f"{artifact.path}: not a readable .pte ({type(e).__name__}: {e})"]
        problems = []
        missing = {"forward", "get_max_seq_len"} - set(s.methods)
        if missing:
            problems.append(f"methods missing: {', '.join(sorted(missing))}")
        if s.constant_values.get("get_max_seq_len") not in (None, [bundle.max_seq_len]):
            problems.append(f"get_max_seq_len {s.constant_values['get_max_seq_len']} != manifest {bundle.max_seq_len}")
        has_tq2 = any(op.startswith(TQ2_OP) for op in s.operators)
        if (artifact.weight_format == "tq2") != has_tq2:
            problems.append(f"weight format {artifact.weight_format} but tq2 operator {'present' if has_tq2 else 'absent'}")
        if "XnnpackBackend" not in s.delegates:
            problems.append("nothing is delegated to XNNPACK")
        return problems


def _token_exact(weights: str, options: ExportOptions) -> bool:
    """Whether the .pte computes the reference's arithmetic (tokens then agree unless a float
    rounding tie flips an int8 activation): every lossy stage is off."""
    exact_linears = weights in ("tq2", "fp32") or options.extra.get("int4_activations") == "exact"
    return exact_linears and options.head == "fp32" and options.embedding == "fp32"


def _int4_granularity(options: ExportOptions) -> str:
    g = options.extra.get("int4_group_size")
    return "per-row" if g is None else f"group{g}"


def _ternary_bits(weights: str, summary, module) -> float:
    """Stored bits per ternary weight: read from the .pte for tq2; from the weights handed to
    XNNPACK otherwise (its packed blobs are opaque), scales included."""
    if weights == "tq2":
        return round(summary.ternary_bits_per_weight or 0.0, 4)
    from bitexport.lower.et_fp32 import Fp32TernaryLinear
    from bitexport.lower.et_int4 import Int4TernaryLinear

    bits = count = 0
    for m in module.modules():
        if isinstance(m, Int4TernaryLinear):
            w = m.linear.weight
            # 4-bit codes (padding included), XNNPACK's bf16 block scales, our fp32 row scales
            bits += 4 * w.qdata.numel() + 16 * w.scale.numel() + 32 * m.row_scale.numel()
            count += m.row_scale.numel() * (m.linear.in_features - m.pad)
        elif isinstance(m, Fp32TernaryLinear):
            bits += 32 * m.linear.weight.numel()
            count += m.linear.weight.numel()
    return round(bits / count, 4) if count else 0.0


TARGET = ExecutorchTarget()
