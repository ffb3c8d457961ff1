"""The ONNX target: a folder `onnx/` that onnxruntime-genai (and a plain InferenceSession) runs.

    onnx/model.onnx            the decoder (lower/onnx_decoder.py), initializers inside the file
                               (model.onnx.data beside it only past protobuf's 2 GB limit)
    onnx/genai_config.json     what genai needs to drive it
    onnx/tokenizer.json, onnx/tokenizer_config.json   so genai's own tokenizer works on the folder

--weights: tq2 (default) = MatMulNBits 2-bit on ORT's fast int8-activation path; int4 =
MatMulNBits 4-bit (also exact for ternary codes); fp32 = plain MatMul (the benchmark's baseline).
head: int4 (MatMulNBits 4-bit, block 32, lossy), int8, fp16 or fp32. embedding: fp32, fp16, int8
or int4 (GatherBlockQuantized, lossy; a tied head of the same format then shares its bytes). accuracy_level 4 (default:
int8 activations inside MatMulNBits, fast) or 0 (fp32, exact but 2-bit is then ~100x slower);
with level 4, activations "block" (ORT requantizes per K block) or "exact" (a sentinel per block).
Options: config.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from bitexport.bundle.store import Artifact, Bundle
from bitexport.errors import TargetError
from bitexport.formats import LoadedModel
from bitexport.targets import register
from bitexport.targets.onnx.inspect import float_weight_initializers, load_graph_only, ternary_bits_per_weight, ternary_linears
from bitexport.runtime.base import Runner
from bitexport.targets.onnx.config import OnnxConfig

FOLDER = "onnx"
MODEL_FILE = "model.onnx"
EXTERNAL_DATA = "model.onnx.data"
WEIGHT_FORMATS = {"tq2": "matmulnbits-2bit", "int4": "matmulnbits-4bit", "fp32": "fp32"}
# protobuf cannot serialize a message of 2 GB or more; stay clear of it with the graph itself
INLINE_LIMIT = 1_800_000_000
# com.microsoft.GroupQueryAttention on CPU with its own rotary embedding refuses other head sizes
# ("head_size shall be a multiple of 16", ORT 1.32)
GQA_HEAD_MULTIPLE = 16


@register
class OnnxTarget:
    name = "onnx"
    config_class = OnnxConfig

    def check(self, model: LoadedModel, config: OnnxConfig) -> None:
        cfg = model.config
        if cfg.head_dim % GQA_HEAD_MULTIPLE:
            raise TargetError(
                f"head_dim {cfg.head_dim} is not a multiple of {GQA_HEAD_MULTIPLE}, which onnxruntime's "
                f"GroupQueryAttention needs on CPU; this model cannot be served by the onnx target (use --target executorch)"
            )
        if cfg.hidden_act not in ("relu2", "silu"):
            raise TargetError(f"hidden_act {cfg.hidden_act!r} has no ONNX lowering; supported: relu2, silu")

    def emit(self, model: LoadedModel, config: OnnxConfig, folder: Path) -> list[Artifact]:
        from bitexport.targets.onnx.decoder import build_decoder_graph
        from bitexport.targets.onnx.genai import write_genai_files
        from bitexport.targets.onnx.ops import LinearFormat, embedding_label, head_label

        self.check(model, config)
        weights, level = config.weights, config.accuracy_level
        out = Path(folder) / FOLDER
        out.mkdir(parents=True, exist_ok=True)
        fmt = LinearFormat(weights, level, config.activations)
        proto = build_decoder_graph(model.model, fmt, config.head, config.embedding)
        linears = ternary_linears(proto)
        details = {
            "ternary_bits_per_weight": round(ternary_bits_per_weight(linears), 4),
            "head": head_label(config.head, model.config.hidden_size),
            "embedding": embedding_label(config.embedding, model.config.hidden_size),
            "accuracy_level": level,
            # "exact": BitNet's per-token int8 activations, a sentinel input per K block (ops.py)
            "activations": "exact" if fmt.sentinels else ("block" if level == 4 else "fp32"),
            "block_sizes": sorted({x.block_size for x in linears if x.block_size}),
            "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
            "model_file": f"{FOLDER}/{MODEL_FILE}",
            "token_exact": config.token_exact,
        }
        save_model(proto, out / MODEL_FILE)
        write_genai_files(out, model.config, MODEL_FILE, model.model.max_seq_len, model.tokenizer_path,
                          model.stop_token_ids)
        from bitexport.targets.onnx.inspect import component_bytes

        details["components"] = component_bytes(out)
        return [Artifact(FOLDER, "onnx", "onnxruntime-genai", WEIGHT_FORMATS[weights], details=details)]

    def runner(self, bundle: Bundle, artifact: Artifact) -> Runner:
        from bitexport.targets.onnx.runner import OnnxGenaiRunner

        # stops at genai_config.json's eos_token_id (every stop token the export carried)
        return OnnxGenaiRunner(bundle.path / artifact.path, bundle.max_seq_len)

    def verify(self, bundle: Bundle, artifact: Artifact) -> list[str]:
        folder = bundle.path / artifact.path
        problems = []
        for name in (MODEL_FILE, "genai_config.json", "tokenizer.json", "tokenizer_config.json"):
            if not (folder / name).is_file():
                problems.append(f"{artifact.path}/{name}: missing")
        if problems:
            return problems
        try:
            cfg = json.loads((folder / "genai_config.json").read_text())
            if cfg["model"]["decoder"]["filename"] != MODEL_FILE:
                problems.append(f"{artifact.path}/genai_config.json names {cfg['model']['decoder']['filename']!r}, not {MODEL_FILE}")
        except (json.JSONDecodeError, KeyError) as e:
            problems.append(f"{artifact.path}/genai_config.json: unreadable ({e})")
        try:
            onnx.checker.check_model(str(folder / MODEL_FILE), full_check=True)
        except Exception as e:  # the checker raises ValidationError and a few others
            problems.append(f"{artifact.path}/{MODEL_FILE}: onnx.checker: {str(e).splitlines()[0]}")
        if artifact.details.get("accuracy_level", 4) == 0:  # exported for exactness, slow path by choice
            return problems
        activations = artifact.details.get("activations", "block")
        return problems + fast_path_problems(load_graph_only(str(folder / MODEL_FILE)), artifact.weight_format, activations)


def fast_path_problems(proto: onnx.ModelProto, weight_format: str, activations: str = "block") -> list[str]:
    """For a 2-bit export: every ternary linear on ORT's fast path, none left in float; with
    activations "exact", every linear also reads its input in the sentinel layout."""
    if weight_format != WEIGHT_FORMATS["tq2"]:
        return []
    linears = ternary_linears(proto)
    problems = [p for p in (x.fast_path_problem() for x in linears) if p]
    if not linears:
        problems.append("no ternary linear found in the graph")
    problems += [f"{n}: a float weight initializer" for n in float_weight_initializers(proto)]
    if activations == "exact":
        from bitexport.targets.onnx.sentinels import sentinel_problems

        problems += sentinel_problems(proto, linears)
    return problems


def save_model(proto: onnx.ModelProto, path: Path) -> None:
    """Initializers inside the .onnx file; beside it only when protobuf's 2 GB limit forces it."""
    size = sum(len(t.raw_data) for t in proto.graph.initializer)
    if size < INLINE_LIMIT:
        onnx.save_model(proto, str(path))
        return
    onnx.save_model(
        proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=EXTERNAL_DATA, size_threshold=1024,
    )

