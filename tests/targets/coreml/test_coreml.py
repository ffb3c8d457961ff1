"""The Core ML target: what can be checked on Linux, and the predict test that needs macOS.

Linux has coremltools' converter but not Core ML's runtime, so the exported package is checked
statically: reloaded from disk, its interface (inputs, states, outputs, metadata), every ternary
weight decompressed and compared with the source's codes and scale, the bytes each one costs in
the weight file, and which ops compute in fp32. The greedy-token comparison runs on macOS only.

What "exact" means for weights stored in fp16:
- tq2: the LUT holds fp16(s) (the fp32 scale rounded to fp16 once), so the decompressed weight
  equals codes * fp16(s) bit for bit.
- int4: coremltools quantizes the fp16 weights, mapping +-fp16(s) to +-7 with block scale
  fp16(fp16(s) / 7): the codes are exact (data == 7 * codes) and the scale is that value in every
  block, a second rounding of the same fp16 scale.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from bitexport.bundle.store import Bundle, read_bundle
from bitexport.errors import TargetError
from bitexport.api import export as export_bundle
from bitexport.formats import load_model
from bitexport.targets.coreml.fp16 import CALIBRATION_TEXT, FP16_MAX, op_scope
from bitexport.targets.coreml.inspect import summarize
from bitexport.targets.coreml.module import causal_mask, lower_for_coreml
from bitexport.runtime.generate import greedy_generate
from bitexport.errors import EnvironmentProblem
from bitexport.targets import get_target
from bitexport.targets.coreml.config import CoreMLConfig
from bitexport.runtime.text import TextCodec

ct = pytest.importorskip("coremltools")

SEQ = 64
STEPS = 32
TARGET = get_target("coreml")


def _mil_program(package):
    """The MIL program of a saved package (what coremltools' own compression utilities read)."""
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(str(package), skip_model_load=True)
    spec = model.get_spec()
    return load(spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir)


def _weight_op(ops: dict, module: str, op_type: str):
    """The compressed weight op of one source linear; coremltools names it after the parameter."""
    prefix = module.replace(".", "_") + "_linear_weight"
    found = [op for name, op in ops.items() if name.startswith(prefix) and op.op_type == op_type]
    assert len(found) == 1, f"{module}: {len(found)} {op_type} ops named {prefix}*"
    return found[0]


@pytest.fixture(scope="module")
def source(tiny_hf):
    return load_model(tiny_hf, SEQ)


@pytest.fixture(scope="module")
def bundle_tq2(tiny_hf, tmp_path_factory) -> Bundle:
    out = export_bundle(tiny_hf, "coreml", tmp_path_factory.mktemp("coreml") / "tq2", max_seq_len=SEQ).path
    return read_bundle(out)


@pytest.fixture(scope="module")
def bundle_int4(tiny_hf, tmp_path_factory) -> Bundle:
    opts = CoreMLConfig(weights="int4", head="fp32", embedding="fp16")
    return export_bundle(tiny_hf, "coreml", tmp_path_factory.mktemp("coreml") / "int4", config=opts, max_seq_len=SEQ)


# --- the Core ML form of the decoder, in PyTorch ----------------------------------------------


def test_coreml_module_matches_the_reference(source):
    """Same logits as BitNetDecoder (prefill, then decode steps through the cache) and the same
    greedy tokens. Tolerance 1e-4 on logits of magnitude ~5: the lowered linear dequantizes
    before the matmul (x_q/s . W) where the reference scales after ((x_q . codes)/s * scale),
    which reorders fp32 roundings (~1e-6 measured) and nothing else."""
    ref = source.model
    mod = lower_for_coreml(ref)
    prompt = TextCodec(source.tokenizer_path).encode("ROMEO: But soft")
    ref_tokens = greedy_generate(ref, prompt, STEPS).tokens
    tokens, pos = [], len(prompt)
    with torch.no_grad():
        ref.reset_cache()
        want = ref(torch.tensor([prompt]), torch.tensor([0]))[0, -1]
        got = mod(torch.tensor([prompt], dtype=torch.int32), causal_mask(0, len(prompt)))[0]
        assert float((want - got).abs().max()) < 1e-4
        tokens.append(int(got.argmax()))
        while len(tokens) < STEPS:
            want = ref(torch.tensor([[tokens[-1]]]), torch.tensor([pos]))[0, -1]
            got = mod(torch.tensor([[tokens[-1]]], dtype=torch.int32), causal_mask(pos, 1))[0]
            assert float((want - got).abs().max()) < 1e-4
            tokens.append(int(got.argmax()))
            pos += 1
    assert tokens == ref_tokens


# --- the package's interface ------------------------------------------------------------------


def test_package_interface_and_metadata(bundle_tq2, source):
    cfg = source.config
    (a,) = bundle_tq2.artifacts
    assert (a.path, a.target, a.weight_format) == ("model.mlpackage", "coreml", "palettized-2bit")
    s = summarize(bundle_tq2.path / a.path)
    assert s.spec.WhichOneof("Type") == "mlProgram" and s.spec.specificationVersion >= 9  # iOS 18
    assert s.inputs == {"input_ids": ("INT32", [1, SEQ]), "causal_mask": ("FLOAT16", [1, 1, SEQ, SEQ])}
    assert s.outputs == {"logits": "FLOAT32"}
    cache = ("FLOAT16", [cfg.num_layers, 1, cfg.num_kv_heads, SEQ, cfg.head_dim])
    assert s.states == {"key_cache": cache, "value_cache": cache}
    # flexible n: both inputs accept one token as well as a whole prompt
    ranges = {f.name: [(r.lowerBound, r.upperBound) for r in f.type.multiArrayType.shapeRange.sizeRanges] for f in s.spec.description.input}
    assert ranges == {"input_ids": [(1, 1), (1, SEQ)], "causal_mask": [(1, 1), (1, 1), (1, SEQ), (1, SEQ)]}
    meta = s.metadata
    assert meta["bitexport.tokenizer"] == "tokenizer.json"
    assert (bundle_tq2.path / a.path).parent.joinpath(meta["bitexport.tokenizer"]).is_file()
    assert meta["bitexport.bos_token_id"] == str(cfg.bos_token_id)
    assert meta["bitexport.eos_token_ids"] == ",".join(map(str, cfg.eos_token_ids))
    assert meta["bitexport.max_seq_len"] == str(SEQ)
    assert meta["bitexport.vocab_size"] == str(cfg.vocab_size)
    assert meta["bitexport.version"]


def test_verify_passes_and_runner_is_macos_only(bundle_tq2, bundle_int4):
    for b in (bundle_tq2, bundle_int4):
        (a,) = b.artifacts
        assert TARGET.verify(b, a) == []
        assert b.hash_problems() == []
        if sys.platform != "darwin":
            with pytest.raises(EnvironmentProblem, match="macOS"):
                TARGET.runner(b, a)


def test_verify_reports_a_package_unlike_its_manifest(bundle_tq2):
    (a,) = bundle_tq2.artifacts
    manifest = {**bundle_tq2.manifest, "max_seq_len": SEQ * 2, "eos_token_ids": [7]}
    problems = TARGET.verify(Bundle(bundle_tq2.path, manifest), a)
    text = "\n".join(problems)
    assert "inputs" in text and "states" in text and "eos_token_ids" in text
    wrong_format = replace(a, weight_format="int4-blockwise")
    assert any("constexpr_blockwise_shift_scale" in p for p in TARGET.verify(bundle_tq2, wrong_format))


def test_untied_silu_model_exports_and_verifies(tiny_1bitllm, tmp_path):
    """1bitLLM flavour: SiLU MLP, no sub-norms, a separate lm_head (compressed to int4 on its own)."""
    b = export_bundle(tiny_1bitllm, "coreml", tmp_path / "b", max_seq_len=SEQ)
    (a,) = b.artifacts
    assert TARGET.verify(b, a) == []
    head = summarize(b.path / a.path).linears[-1]
    assert head.source.startswith("lm_head_weight") and head.kind == "constexpr_blockwise_shift_scale"


# --- the weights ------------------------------------------------------------------------------


def test_tq2_weights_decompress_exactly_to_codes_times_scale(bundle_tq2, source):
    ops = {op.name: op for op in _mil_program(bundle_tq2.path / "model.mlpackage").functions["main"].operations}
    for name, lin in source.model.bitlinears():
        op = _weight_op(ops, name, "constexpr_lut_to_dense")
        lut, idx = op.lut.val, op.indices.val
        assert lut.dtype == np.float16 and lut.size == 4  # one per-tensor LUT
        s = np.float16(lin.scale.item())
        assert set(lut.reshape(-1)[np.unique(idx)].tolist()) <= {-float(s), 0.0, float(s)}
        dense = op.materialized_val_inference()
        want = lin.codes.numpy().astype(np.float16) * s
        assert dense.dtype == np.float16 and np.array_equal(dense, want), name


def test_int4_weights_hold_exact_codes_and_one_scale(bundle_int4, source):
    ops = {op.name: op for op in _mil_program(bundle_int4.path / "model.mlpackage").functions["main"].operations}
    for name, lin in source.model.bitlinears():
        op = _weight_op(ops, name, "constexpr_blockwise_shift_scale")
        codes = lin.codes.numpy()
        assert np.array_equal(op.data.val, 7 * codes), name
        assert op.offset is None  # symmetric: no zero point
        scale = np.float16(np.float32(np.float16(lin.scale.item())) / np.float32(7))
        assert op.scale.val.shape == (codes.shape[0], codes.shape[1] // 32)
        assert np.all(op.scale.val == scale), name
        assert np.array_equal(op.materialized_val_inference(), codes.astype(np.float16) * np.float16(7) * scale)


@pytest.mark.parametrize("which", ["tq2", "int4"])
def test_bits_per_weight_and_no_dense_copies(which, bundle_tq2, bundle_int4, source):
    b = bundle_tq2 if which == "tq2" else bundle_int4
    (a,) = b.artifacts
    s = summarize(b.path / a.path)
    *ternary, head = s.linears
    kind = {"tq2": "constexpr_lut_to_dense", "int4": "constexpr_blockwise_shift_scale"}[which]
    assert len(ternary) == 7 * source.config.num_layers and {w.kind for w in ternary} == {kind}
    n = sum(w.shape[0] * w.shape[1] for w in ternary)
    bits = 8 * sum(w.blob_bytes for w in ternary) / n
    if which == "tq2":
        # 2-bit indices plus one 4-entry fp16 LUT a tensor; per-layer too, the smallest is 32x64
        assert {w.input_kinds["indices"] for w in ternary} == {"UINT2"}
        assert 2.0 < bits <= 2.1 and max(w.bits_per_weight for w in ternary) <= 2.1
        assert head.kind == "constexpr_blockwise_shift_scale" and head.bits_per_weight == 4.5  # head int4
    else:
        assert {w.input_kinds["data"] for w in ternary} == {"INT4"}
        assert bits == 4.5  # 4 bits + an fp16 scale per 32 weights
        # head fp32: the tied head reads the float embedding table itself, no second copy
        assert head.kind == "const" and head.source == "embed_tokens_weight_to_fp16"
    assert a.details["ternary_bits_per_weight"] == pytest.approx(bits, abs=1e-4)
    shapes = set(source.config.linear_shapes().values())
    assert not [name for name, shape in s.float_consts.items() if shape in shapes]


def test_the_default_int8_table_and_int4_head_are_two_consts(bundle_tq2, source):
    s = summarize(bundle_tq2.path / "model.mlpackage")
    table = (source.config.vocab_size, source.config.hidden_size)
    assert [n for n, shape in s.float_consts.items() if shape == table] == []
    assert s.embedding.kind == "constexpr_blockwise_shift_scale" and s.embedding.input_kinds["data"] == "INT8"
    assert s.linears[-1].source.startswith("lm_head_weight") and s.linears[-1].source != s.embedding.source


# --- fp16 safety ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overflowing(tiny_hf):
    """The tiny model with layer 0's gate and up scales x64: relu(g)^2 * up leaves fp16's range."""
    from bitexport.targets.coreml.convert import convert

    loaded = load_model(tiny_hf, SEQ)
    mlp = loaded.model.layers[0].mlp
    with torch.no_grad():
        mlp.gate_proj.scale.mul_(64)
        mlp.up_proj.scale.mul_(64)
    ids = TextCodec(loaded.tokenizer_path).encode(CALIBRATION_TEXT)
    return loaded, ids, convert(loaded.model, ids, "tq2", "int4")


def _reference_mlp_peak(model, ids) -> float:
    """Largest |relu(gate)^2 * up| of layer 0, from forward hooks on the reference decoder."""
    seen = {}
    mlp = model.layers[0].mlp
    hooks = [m.register_forward_hook(lambda m, a, o, k=k: seen.__setitem__(k, o)) for k, m in (("g", mlp.gate_proj), ("u", mlp.up_proj))]
    try:
        model.reset_cache()
        with torch.no_grad():
            model(torch.tensor([ids[:SEQ]]), torch.tensor([0]))
    finally:
        for h in hooks:
            h.remove()
        model.reset_cache()
    return float((torch.relu(seen["g"]).square() * seen["u"]).abs().max())


def test_ops_that_leave_fp16_range_compute_in_fp32(overflowing):
    from coremltools.converters.mil.mil import types

    loaded, ids, conv = overflowing
    assert _reference_mlp_peak(loaded.model, ids) > FP16_MAX  # the hazard is real
    must = {("0", "mlp", "act"), ("0", "mlp", "mul")}
    assert must <= conv.fp16.fp32
    fp32_scopes, fp16_scopes = set(), set()
    for op in conv.program.functions["main"].operations:
        if op.op_type in ("const", "cast") or not op.outputs:
            continue
        dtypes = {types.builtin_to_string(o.dtype) for o in op.outputs} & {"fp16", "fp32"}
        (fp32_scopes if "fp32" in dtypes else fp16_scopes if dtypes else set()).add(op_scope(op))
    # exactly the analysed scopes compute in fp32, the activation and the product among them ...
    assert fp32_scopes == conv.fp16.fp32
    # ... all inside MLPs (here: layer 0's hazard, and an RMSNorm whose sum of squares is near
    # the threshold); attention, every linear and the head stay in fp16
    assert all(s[1] == "mlp" for s in fp32_scopes)
    assert not any(s in fp16_scopes for s in fp32_scopes)
    linears = [op for op in conv.program.functions["main"].operations if op.op_type == "linear"]
    assert {types.builtin_to_string(op.outputs[0].dtype) for op in linears} == {"fp16"}


def test_fp32_ops_survive_into_the_saved_package(overflowing, tmp_path):
    from coremltools.proto import MIL_pb2

    _, _, conv = overflowing
    conv.mlmodel.save(str(tmp_path / "m.mlpackage"))
    spec = ct.models.MLModel(str(tmp_path / "m.mlpackage"), skip_model_load=True).get_spec()
    fn = spec.mlProgram.functions["main"]
    fp32 = [op.type for op in fn.block_specializations[fn.opset].operations
            if op.type not in ("const", "cast") and any(o.type.tensorType.dataType == MIL_pb2.FLOAT32 for o in op.outputs)]
    # layer 0: relu and square (act), mul, the norm's pow, reduce_mean, add, rsqrt, mul, mul
    assert {"relu", "pow", "reduce_mean", "rsqrt"} <= set(fp32) and fp32.count("mul") >= 4


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{"weights": "fp32"}, {"head": "int8"}, {"embedding": "int2"}, {"fp16_headroom": 0.5}]
)
def test_config_rejects_what_the_target_cannot_write(options):
    with pytest.raises(TargetError, match="--" + next(iter(options)).replace("_", "-")):
        CoreMLConfig(**options)


# --- macOS: run it ----------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML's runtime (predict, make_state) exists on macOS only")
def test_greedy_tokens_match_the_reference_on_macos(bundle_tq2, source):
    """Core ML computes in fp16; the tiny model's logits are well separated (tiny.random_decoder),
    so fp16 rounding must not change a greedy token in 32 steps."""
    (a,) = bundle_tq2.artifacts
    runner = TARGET.runner(bundle_tq2, a)
    prompt = TextCodec(bundle_tq2.tokenizer_path).encode("ROMEO: But soft, what light")
    got = runner.generate(prompt, STEPS)
    want = greedy_generate(source.model, prompt, STEPS, source.config.eos_token_ids).tokens
    assert got.tokens == want
    assert got.stats.prefill_s > 0 and got.stats.new_tokens == len(want)
