"""The Core ML target: `model.mlpackage` (an iOS 18 / macOS 15 ML program) at the bundle root,
beside the bundle's tokenizer.json, which the package's metadata names.

One function serves prefill and decode: flexible shapes, not multifunction.

    inputs   input_ids    int32 [1, n]              n in 1..max_seq_len new tokens
             causal_mask  fp16  [1, 1, n, past + n] additive: 0 attends, -inf does not
    states   key_cache, value_cache  fp16 [layers, 1, kv_heads, max_seq_len, head_dim]
    output   logits       fp32  [1, vocab]          for the last of the n tokens

The position of the new tokens is read off the two shapes (past = mask width - n), so a prompt of
any length is one call and each later token is a call with n = 1; the app needs no other input.
Flexible shapes keep one copy of the weights and one code path; their cost is that the Neural
Engine, which wants fixed shapes, is not used, and the model runs on the GPU (or CPU). For BitNet
b1.58-2B-4T that costs nothing extra: its squared-ReLU MLP needs fp32 ops (fp16 safety, below),
which the Neural Engine cannot run anyway. Multifunction (fixed-shape prefill and decode functions
sharing the weights) would pay off only for models whose every op fits in fp16.

--weights: tq2 (default) = exact 2-bit palettization (per-tensor LUT {-s, 0, s}); int4 =
blockwise int4, block 32 (codes exact). head: int4 (blockwise, lossy) or fp32 (float, shares a
tied embedding table). fp16_headroom (default 8): ops whose calibrated magnitude exceeds
65504 / headroom compute in fp32. Options: config.py.
"""

from __future__ import annotations

from pathlib import Path

from bitexport import __version__
from bitexport.bundle.store import Artifact, Bundle
from bitexport.errors import InputError, TargetError, require
from bitexport.formats import LoadedModel
from bitexport.runtime.base import Runner
from bitexport.targets.coreml.runner import COREMLTOOLS_PIN, META
from bitexport.targets import register
from bitexport.targets.coreml.config import CoreMLConfig

ARTIFACT = "model.mlpackage"
WEIGHT_FORMATS = {"tq2": "palettized-2bit", "int4": "int4-blockwise"}
# highest bits a ternary weight may cost, per format: 2 bits + the LUT; 4 bits + an fp16 scale
# per 32 weights (4.5), or per row where 32 does not divide it
MAX_BITS = {"tq2": 2.1, "int4": 4.6}
COMPRESSED_KIND = {"tq2": "constexpr_lut_to_dense", "int4": "constexpr_blockwise_shift_scale"}
IOS18_SPEC_VERSION = 9
FP16_SMALLEST_NORMAL = 2.0**-14
FP16_MAX = 65504.0


@register
class CoreMLTarget:
    name = "coreml"
    config_class = CoreMLConfig

    def check(self, model: LoadedModel, config: CoreMLConfig) -> None:
        require("coremltools", COREMLTOOLS_PIN)
        for name, lin in model.model.bitlinears():
            if not lin.frozen:
                raise InputError(f"{name} is not frozen to ternary codes; load the model with bitexport's loaders")
            s = abs(float(lin.scale))
            # the LUT / int4 scale is stored in fp16: outside its normal range the scale would
            # lose bits or overflow, and the weights would no longer be the source's
            if not FP16_SMALLEST_NORMAL <= s <= FP16_MAX / 7:
                raise TargetError(
                    f"{name}: weight scale {s:.3g} is outside fp16's normal range, so Core ML cannot store it "
                    f"exactly; use --target executorch or onnx for this model"
                )

    def emit(self, model: LoadedModel, config: CoreMLConfig, folder: Path) -> list[Artifact]:
        from bitexport.targets.coreml.convert import convert
        from bitexport.targets.coreml.fp16 import CALIBRATION_TEXT
        from bitexport.targets.coreml.inspect import component_bytes, summarize
        from bitexport.runtime.text import TextCodec

        self.check(model, config)
        weights = config.weights
        calibration = TextCodec(model.tokenizer_path).encode(CALIBRATION_TEXT)
        try:
            conv = convert(model.model, calibration, weights, config.head, float(config.fp16_headroom), config.embedding)
        except ValueError as e:
            raise TargetError(f"coreml: {e}; use --target executorch or onnx for this model") from None
        mlmodel = conv.mlmodel
        cfg = model.config
        meta = {
            "version": __version__,
            "tokenizer": "tokenizer.json",
            "bos_token_id": "" if cfg.bos_token_id is None else str(cfg.bos_token_id),
            "eos_token_ids": ",".join(str(i) for i in cfg.eos_token_ids),
            # every token that ends a generation (eos and generation_config.json's): the app stops at these
            "stop_token_ids": ",".join(str(i) for i in model.stop_token_ids),
            "max_seq_len": str(model.model.max_seq_len),  # the cache (state) length the package was traced with
            "vocab_size": str(cfg.vocab_size),
            "num_layers": str(cfg.num_layers),
            "weights": weights,
            "head": config.head,
            "embedding": config.embedding,
            "fp32_modules": ",".join(conv.fp16.summary()["fp32_modules"]),
            "source": model.name,
        }
        for key, value in meta.items():
            mlmodel.user_defined_metadata[META + key] = value
        mlmodel.author = f"bitexport {__version__}"
        mlmodel.short_description = (
            f"{model.name}: BitNet b1.58 decoder, ternary weights as {WEIGHT_FORMATS[weights]}, KV cache in state. "
            "Call with the prompt's ids and a causal mask [1,1,n,n], then one token at a time with a mask "
            "[1,1,1,past+1] of zeros; take argmax of logits."
        )
        mlmodel.input_description["input_ids"] = "new token ids, int32 [1, n]"
        mlmodel.input_description["causal_mask"] = "additive mask fp16 [1, 1, n, past + n]: 0 attends, -inf blocks"
        mlmodel.output_description["logits"] = "next-token logits [1, vocab] for the last input position"
        path = folder / ARTIFACT
        mlmodel.save(str(path))
        summary = summarize(path)
        ternary = summary.linears[:-1]
        head = summary.linears[-1]
        n_ternary = sum(_numel(w.shape) for w in ternary)
        details = {
            "ternary_bits_per_weight": round(8.0 * sum(w.blob_bytes for w in ternary) / n_ternary, 4),
            "head": config.head,
            "head_bits_per_weight": round(head.bits_per_weight, 4),
            "embedding": embedding_label(config.embedding),
            "minimum_deployment_target": "iOS18",
            "shapes": "flexible (one function: prefill and decode)",
            "fp16": conv.fp16.summary(),
            "components": component_bytes(summary),
        }
        return [Artifact(ARTIFACT, self.name, "coreml", WEIGHT_FORMATS[weights], details=details)]

    def runner(self, bundle: Bundle, artifact: Artifact) -> Runner:
        from bitexport.targets.coreml.runner import CoreMLRunner

        # raises EnvironmentProblem off macOS: Core ML's runtime (predict, state) exists there only
        # stops at the package's own stop_token_ids metadata
        return CoreMLRunner(bundle.path / artifact.path, bundle.max_seq_len)

    def verify(self, bundle: Bundle, artifact: Artifact) -> list[str]:
        from bitexport.targets.coreml.inspect import summarize

        path = bundle.path / artifact.path
        if not path.is_dir():
            return [f"{artifact.path}: missing"]
        try:
            summary = summarize(path)
        except Exception as e:  # a corrupt package fails in protobuf or coremltools in many ways
            return [f"{artifact.path}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"]
        return static_problems(summary, bundle, artifact)


def embedding_label(fmt: str) -> str:
    """What the manifest says about the embedding table (the tolerance table reads the prefix)."""
    return {"fp16": "fp16", "int8": "int8-per-row", "int4": "int4-block32"}[fmt]


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def static_problems(summary, bundle: Bundle, artifact: Artifact) -> list[str]:
    """Everything about a saved package that can be checked without Core ML's runtime."""
    from bitexport.model.config import ModelConfig

    p = artifact.path
    problems = []
    spec = summary.spec
    if spec.WhichOneof("Type") != "mlProgram" or spec.specificationVersion < IOS18_SPEC_VERSION:
        problems.append(f"{p}: not an iOS 18 ML program (spec version {spec.specificationVersion})")
    cfg = ModelConfig.from_dict(bundle.manifest["source"]["config"])
    n = bundle.max_seq_len

    expected_inputs = {"input_ids": ("INT32", [1, n]), "causal_mask": ("FLOAT16", [1, 1, n, n])}
    if summary.inputs != expected_inputs:
        problems.append(f"{p}: inputs {summary.inputs}, expected {expected_inputs}")
    if set(summary.outputs) != {"logits"}:
        problems.append(f"{p}: outputs {sorted(summary.outputs)}, expected ['logits']")
    cache = ("FLOAT16", [cfg.num_layers, 1, cfg.num_kv_heads, n, cfg.head_dim])
    expected_states = {"key_cache": cache, "value_cache": cache}
    if summary.states != expected_states:
        problems.append(f"{p}: states {summary.states}, expected {expected_states}")

    meta = {k[len(META):]: v for k, v in summary.metadata.items() if k.startswith(META)}
    want = {
        "tokenizer": Path(bundle.manifest["tokenizer"]["path"]).name,
        "bos_token_id": "" if bundle.manifest.get("bos_token_id") is None else str(bundle.manifest["bos_token_id"]),
        "eos_token_ids": ",".join(str(i) for i in bundle.eos_token_ids),
        "max_seq_len": str(n),
        "vocab_size": str(bundle.manifest.get("vocab_size", cfg.vocab_size)),
    }
    for key, value in want.items():
        if meta.get(key) != value:
            problems.append(f"{p}: metadata {META}{key} = {meta.get(key)!r}, expected {value!r}")
    stops = {int(i) for i in meta.get("stop_token_ids", "").split(",") if i.strip()}
    if "stop_token_ids" in meta and not set(bundle.stop_token_ids) <= stops:
        problems.append(f"{p}: metadata {META}stop_token_ids = {meta['stop_token_ids']!r} lacks some of the "
                        f"manifest's stop tokens {list(bundle.stop_token_ids)}")
    if "version" not in meta:
        problems.append(f"{p}: metadata {META}version missing")
    tok = (bundle.path / p).parent / meta.get("tokenizer", "tokenizer.json")
    if not tok.is_file():
        problems.append(f"{p}: the tokenizer its metadata names is not beside it ({tok.name})")

    weights = next((k for k, v in WEIGHT_FORMATS.items() if v == artifact.weight_format), None)
    if weights is None:
        return problems + [f"{p}: unknown weight format {artifact.weight_format!r}"]
    problems += _weight_problems(summary, cfg, weights, artifact.details.get("head", "int4"), p)
    return problems


def _weight_problems(summary, cfg, weights: str, head_format: str, p: str) -> list[str]:
    problems = []
    shapes = sorted(cfg.linear_shapes().values()) * cfg.num_layers
    if not summary.linears:
        return [f"{p}: no linear ops"]
    ternary, head = summary.linears[:-1], summary.linears[-1]
    if sorted(sorted(w.shape for w in ternary)) != sorted(shapes):
        problems.append(f"{p}: {len(ternary)} ternary linears of shapes unlike the config's {len(shapes)}")
    kind = COMPRESSED_KIND[weights]
    for w in ternary:
        if w.kind != kind:
            problems.append(f"{p}: linear {w.linear} weight is {w.kind}, expected {kind}")
        elif w.bits_per_weight > MAX_BITS[weights]:
            problems.append(f"{p}: linear {w.linear} costs {w.bits_per_weight:.3f} bits a weight (> {MAX_BITS[weights]})")
    total = sum(_numel(w.shape) for w in ternary)
    if total:
        bits = 8.0 * sum(w.blob_bytes for w in ternary) / total
        if bits > MAX_BITS[weights]:
            problems.append(f"{p}: ternary layers cost {bits:.3f} bits a weight (> {MAX_BITS[weights]})")
    ternary_shapes = set(cfg.linear_shapes().values())
    dense = sorted(name for name, shape in summary.float_consts.items() if shape in ternary_shapes)
    if dense:
        problems.append(f"{p}: dense float copies of ternary-shaped weights: {', '.join(dense[:5])}")
    if head.shape != (cfg.vocab_size, cfg.hidden_size):
        problems.append(f"{p}: last linear has shape {head.shape}, not the head's {(cfg.vocab_size, cfg.hidden_size)}")
    head_kind = COMPRESSED_KIND["int4"] if head_format == "int4" else "const"
    if head.kind != head_kind:
        problems.append(f"{p}: the head's weight is {head.kind}, expected {head_kind} for head {head_format}")
    return problems

