"""The ExecuTorch target: one .pte per bundle that ExecuTorch's LLM runners load as they load Llama.

--weights (ternary layers):
- tq2 (default): bitexport's packed 2-bit operator; needs bitexport's kernel library at run time.
- int4: torchao int4 weights (exact for ternary codes) + int8 dynamic activations on XNNPACK; runs
  on a stock ExecuTorch runtime.
- fp32: float weights on XNNPACK, the baseline; stock runtime.
Every mode also needs ExecuTorch's LLM custom ops (KV cache, SDPA: shipped with the stock LLM
runtimes) and, for --embedding int8|int4, its quantized kernels (shipped too). Options: config.py.

Lowering, in order, each a pass from module to module on a copy of the loaded decoder (passes/):
norm (RMSNorm without pow) -> attention (fused qkv, ExecuTorch KV cache + SDPA) -> mlp (fused
gate/up) -> tq2 | int4 | fp32 -> head -> embedding; then program.py serializes.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

from bitexport.bundle.store import Artifact, Bundle
from bitexport.errors import TargetError
from bitexport.formats import LoadedModel
from bitexport.targets import register
from bitexport.targets.executorch.config import ExecutorchConfig
from bitexport.targets.executorch.kernels import required_kernels

RUNTIME = "executorch"
log = logging.getLogger("bitexport")


def lowering_passes(config: ExecutorchConfig) -> list:
    """The passes for `config`, in order: each takes the module and returns a PassResult."""
    from bitexport.targets.executorch.passes.attention import use_et_attention
    from bitexport.targets.executorch.passes.embedding import quantize_embedding
    from bitexport.targets.executorch.passes.fp32 import to_fp32
    from bitexport.targets.executorch.passes.head import quantize_head
    from bitexport.targets.executorch.passes.int4 import to_int4
    from bitexport.targets.executorch.passes.mlp import fuse_mlp
    from bitexport.targets.executorch.passes.norm import use_et_norms
    from bitexport.targets.executorch.passes.tq2 import to_tq2

    weights = {
        "tq2": to_tq2,
        "int4": lambda m: to_int4(m, config.int4_group_size, config.int4_activations),
        "fp32": to_fp32,
    }[config.weights]
    return [
        ("norms", use_et_norms),
        ("attention", lambda m: use_et_attention(m, config.kv_cache)),
        ("mlp", fuse_mlp),
        (config.weights, weights),
        ("head", lambda m: quantize_head(m, config.head)),
        ("embedding", lambda m: quantize_embedding(m, config.embedding)),
    ]


def lower_decoder(loaded: LoadedModel, config: ExecutorchConfig):
    """The ExecuTorch-ready module for `config` (the loaded model is left untouched)."""
    from bitexport.log import quiet_loggers

    quiet_loggers()
    model = copy.deepcopy(loaded.model)
    model.last_logits_only = True  # the runners' contract: logits [1, V] of the last position
    for name, run in lowering_passes(config):
        result = run(model)
        model = result.module
        log.debug("executorch pass %s: %d module(s) changed", name, result.changed)
    return model.eval()


def pte_name(model_name: str, weights: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-.") or "model"
    return f"{safe}-{weights}.pte"


@register
class ExecutorchTarget:
    name = "executorch"
    config_class = ExecutorchConfig

    def check(self, model: LoadedModel, config: ExecutorchConfig) -> None:
        if config.weights == "int4" and config.int4_group_size is not None:
            cfg = model.config
            bad = [k for k in (cfg.hidden_size, cfg.intermediate_size, cfg.q_size) if k % config.int4_group_size]
            if bad:
                raise TargetError(
                    f"--int4-group-size {config.int4_group_size} must divide the layers' input sizes "
                    f"{cfg.hidden_size}, {cfg.intermediate_size}, {cfg.q_size}; use the default per-row int4"
                )
        if config.head == "int4" and model.config.hidden_size % 32:
            # XNNPACK's int4 weights come in groups of a multiple of 32 inputs, per-channel too
            raise TargetError(
                f"--head int4 needs hidden_size to be a multiple of 32 (XNNPACK's int4 groups); this model's is "
                f"{model.config.hidden_size}: export with --head fp32"
            )
        if config.embedding == "int4" and model.config.hidden_size % 32:
            raise TargetError(
                f"--embedding int4 needs hidden_size to be a multiple of 32 (its scale groups); this model's is "
                f"{model.config.hidden_size}: export with --embedding int8"
            )
        if model.model.max_seq_len < 2:
            raise TargetError("--max-seq-len must be at least 2 for an ExecuTorch export")

    def emit(self, model: LoadedModel, config: ExecutorchConfig, folder: Path) -> list[Artifact]:
        from bitexport.targets.executorch.inspect import component_bytes, summarize_pte
        from bitexport.targets.executorch.passes.head import head_label
        from bitexport.targets.executorch.program import constant_methods, export_decoder, to_pte

        module = lower_decoder(model, config)
        max_seq_len = module.max_seq_len
        ep = export_decoder(module, max_seq_len)
        data, stats = to_pte(ep, constant_methods(model.config, max_seq_len, model.stop_token_ids), config.xnnpack)
        name = pte_name(model.name, config.weights)
        path = Path(folder) / name
        path.write_bytes(data)
        summary = summarize_pte(path)
        int4 = config.weights == "int4"
        details = {
            "ternary_bits_per_weight": _ternary_bits(config.weights, summary, module),
            "head": head_label(config.head, model.config.hidden_size),
            "embedding": {"fp32": "fp32", "int8": "int8-per-row", "int4": "int4-group32"}[config.embedding],
            "components": component_bytes(path, model.config.vocab_size, model.config.hidden_size),
            "kv_cache": config.kv_cache,
            "custom_kernels": required_kernels(config.weights, config.embedding),
            "stock_runtime": config.weights != "tq2",
            "int4_granularity": ("per-row" if config.int4_group_size is None else f"group{config.int4_group_size}") if int4 else None,
            "int4_activations": config.int4_activations if int4 else None,
            "token_exact": config.token_exact,
            # dispatches of one forward call (at n = 1: per decoded token), from the .pte's plan
            "ops_per_token": summary.ops_per_token(),
            "tq2_weight_alignment": summary.tq2_weight_alignment,
            "llm_runner_contract": "forward(tokens [1,n], start_pos [1]) -> logits [1,V]; KV cache in buffers",
            **stats.as_dict(),
        }
        return [Artifact(name, self.name, RUNTIME, config.weights, details={k: v for k, v in details.items() if v is not None})]

    def runner(self, bundle: Bundle, artifact: Artifact):
        from bitexport.targets.executorch.runner import ExecutorchRunner

        return ExecutorchRunner.for_artifact(bundle, artifact)

    def verify(self, bundle: Bundle, artifact: Artifact) -> list[str]:
        from bitexport.targets.executorch.inspect import TQ2_OP, summarize_pte

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


def _ternary_bits(weights: str, summary, module) -> float:
    """Stored bits per ternary weight: read from the .pte for tq2; from the weights handed to
    XNNPACK otherwise (its packed blobs are opaque), scales included."""
    if weights == "tq2":
        return round(summary.ternary_bits_per_weight or 0.0, 4)
    bits = count = 0
    for m in module.modules():
        if hasattr(m, "stored_bits"):
            b, c = m.stored_bits()
            bits += b
            count += c
    return round(bits / count, 4) if count else 0.0


