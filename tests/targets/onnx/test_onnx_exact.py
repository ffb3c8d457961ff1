"""Exact BitNet activations on ORT's 2-bit fast path (activations="exact", ops.py): the sentinel
127 closing every K block makes ORT's per-block int8 scale exactly 1, so the exported model computes
BitNet's per-token absmax int8 products. Checked against the PyTorch reference and plain numpy, shown
to differ where ORT's own block quantization is used, and the layout check shown to catch breakage."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from bitexport.api import export as export_bundle
from bitexport.bundle.store import read_bundle
from bitexport.formats import load_model
from bitexport.targets.onnx.config import OnnxConfig
from bitexport.targets.onnx.graph import FLOAT, Graph
from bitexport.targets.onnx.inspect import LINEARS_PER_LAYER, ternary_linears
from bitexport.targets.onnx.ops import LinearFormat, bitlinear
from bitexport.targets.onnx.pack import sentinel_block_size, with_sentinel_columns
from bitexport.targets.onnx.target import fast_path_problems

from test_onnx import MAX_SEQ, STEPS, onnx_path, rel_errors, teacher_forced_logits

# Exact form vs the reference, each step on the reference's own KV cache: only float summation
# order differs (ORT's norms, attention, block-wise accumulation of the exact int32 sums), measured
# 4e-7 median, 7e-7 max of max|logit| on both tiny formats. The bound is 15x that and 1000x below
# what ORT's block quantization leaves (1-2 %, tests/targets/onnx/test_onnx.py).
EXACT_REL_TOL = 1e-5
TIE_FLIP_REL_TOL = 2e-2  # one int8 code moved by one step (cf. tests/formats/test_load_1bitllm.py)


def export(tmp_path, folder, name, **opts):
    out = tmp_path / name
    opts.setdefault("embedding", "fp32")  # these tests isolate the linears' activation form
    export_bundle(folder, "onnx", out, config=OnnxConfig(**opts), max_seq_len=MAX_SEQ)
    return read_bundle(out)


@pytest.fixture(scope="module", params=["hf", "1bitllm"])
def tiny(request, tiny_hf, tiny_1bitllm):
    return tiny_hf if request.param == "hf" else tiny_1bitllm


def test_exact_form_matches_reference_tightly(tmp_path, tiny):
    bundle = export(tmp_path, tiny, "exact", head="fp32", activations="exact")
    assert bundle.artifacts[0].details["activations"] == "exact"
    loaded = load_model(tiny, MAX_SEQ)
    got, want = teacher_forced_logits(onnx_path(bundle), loaded, reference_cache=True)
    err = rel_errors(got, want)
    print(f"exact: median relative {np.median(err):.2e}, max {err.max():.2e}")
    # float summation order only: every position but the rare one where it tips an int8 rounding
    # tie (x*s within an ulp of .5), which moves one code by one step -- on the fixtures with
    # non-default eps and sub-norms, 1 position of 33 (1e-2 of the range, the flip's size)
    assert np.median(err) <= EXACT_REL_TOL
    assert (err > EXACT_REL_TOL).sum() <= max(1, len(err) // 10) and err.max() <= TIE_FLIP_REL_TOL
    # teacher-forced tokens: the artifact's pick at every step is the reference's
    assert got.argmax(axis=1).tolist() == want.argmax(axis=1).tolist()
    assert len(got) == STEPS + 1


def test_block_form_misses_the_tight_bound(tmp_path, tiny):
    """The same check on ORT's own per-block quantization fails (so the bound can fail)."""
    bundle = export(tmp_path, tiny, "block", head="fp32", activations="block")
    got, want = teacher_forced_logits(onnx_path(bundle), load_model(tiny, MAX_SEQ), reference_cache=True)
    # block quantization moves every position, not a rare tie: the median misses the bound
    assert np.median(rel_errors(got, want)) > 10 * EXACT_REL_TOL


def _one_linear(codes: np.ndarray, gamma: float, activations: str) -> ort.InferenceSession:
    g = Graph("one_bitlinear")
    x = g.add_input("x", FLOAT, [1, 1, codes.shape[1]])
    y = bitlinear(g, x, [(codes, gamma)], LinearFormat("tq2", 4, activations), "layers.0.mlp.down_proj")
    g.nodes.append(onnx.helper.make_node("Identity", [y], ["y"], name="out"))
    g.add_output("y", FLOAT, [1, 1, codes.shape[0]])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(g.model("test", "0").SerializeToString(), so, providers=["CPUExecutionProvider"])


def numpy_bitlinear(x: np.ndarray, codes: np.ndarray, gamma: float) -> np.ndarray:
    """BitNet W1.58A8 in plain numpy (float64): per-token absmax int8, integer sums, * gamma / s."""
    s = 127.0 / max(np.abs(x).max(), 1e-5)
    xq = np.clip(np.rint(x.astype(np.float64) * s), -128, 127)
    return (xq @ codes.T.astype(np.float64)) / s * gamma


def test_single_linear_on_an_input_built_to_separate_the_forms():
    """K = 300 (several blocks; not a multiple of any block size). The token's largest value sits
    in the first block; every other block's largest code is 2 and the rest are 1, so ORT's block
    requantization maps code 1 to 64/63.5 (round half to even of 63.5) in every such block."""
    rng = np.random.default_rng(0)
    k, n, gamma = 300, 48, 0.37
    codes = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
    codes[:, 150:] = 1  # same-sign weights: the block form's errors add up instead of cancelling
    s = 127.0 / 50.0
    xq = np.ones(k)
    xq[0] = 127.0
    xq[1::40] = 2.0
    x = (xq / s).astype(np.float32).reshape(1, 1, k)
    want = numpy_bitlinear(x.reshape(-1), codes, gamma)
    exact = _one_linear(codes, gamma, "exact").run(None, {"x": x})[0].reshape(-1)
    block = _one_linear(codes, gamma, "block").run(None, {"x": x})[0].reshape(-1)
    rel = lambda y: np.abs(y - want).max() / np.abs(want).max()
    print(f"one linear: exact {rel(exact):.2e}, block {rel(block):.2e}")
    assert rel(exact) <= EXACT_REL_TOL  # float32 scaling of exact integer sums (measured 1.0e-6)
    assert rel(block) > 1e-3


def test_sentinel_layout():
    # 1536 -> 13 blocks of 128 (+8 %); 512 -> 9 of 64 (+12.5 %; 128 would be +25 %); 64 -> 3 of 32
    assert sentinel_block_size(1536) == 128 and sentinel_block_size(4096) == 128
    assert sentinel_block_size(512) == 64 and sentinel_block_size(64) == 32
    codes = np.arange(1, 8, dtype=np.int8).reshape(1, 7) % 3 - 1
    laid = with_sentinel_columns(codes, 4)  # blocks of 3 codes + 1 sentinel slot
    assert laid.shape == (1, 12)
    assert laid.reshape(3, 4)[:, 3].tolist() == [0, 0, 0]
    assert laid.reshape(3, 4)[:, :3].reshape(-1)[:7].tolist() == codes.reshape(-1).tolist()


def test_fast_path_check_covers_the_sentinel_layout(tmp_path, tiny_hf):
    bundle = export(tmp_path, tiny_hf, "exact", activations="exact")
    proto = onnx.load(onnx_path(bundle))
    n_linears = LINEARS_PER_LAYER * load_model(tiny_hf, MAX_SEQ).config.num_layers
    assert len(ternary_linears(proto)) == n_linears
    assert fast_path_problems(proto, "matmulnbits-2bit", "exact") == []

    # a block-quantized export claimed exact: every linear is reported
    block = onnx.load(onnx_path(export(tmp_path, tiny_hf, "block", activations="block")))
    assert len(fast_path_problems(block, "matmulnbits-2bit", "exact")) == n_linears
    assert fast_path_problems(block, "matmulnbits-2bit", "block") == []

    # the sentinel value changed in one Pad: that linear is reported
    broken = onnx.load(onnx_path(bundle))
    inits = {t.name: t for t in broken.graph.initializer}
    pad = next(n for n in broken.graph.node if n.op_type == "Pad" and n.name.endswith("/sentinel"))
    inits[pad.input[2]].CopyFrom(numpy_helper.from_array(np.array(100.0, np.float32), pad.input[2]))
    problems = fast_path_problems(broken, "matmulnbits-2bit", "exact")
    assert problems and all("sentinel Pad writes" in p for p in problems)

    # a nonzero weight under a sentinel: reported
    broken = onnx.load(onnx_path(bundle))
    node = next(n for n in broken.graph.node if n.op_type == "MatMulNBits" and n.name.endswith("o_proj"))
    b = next(t for t in broken.graph.initializer if t.name == node.input[1])
    arr = numpy_helper.to_array(b).copy()
    arr[0, 0, -1] ^= 0b11000000  # the last code of the first block (the sentinel's weight) -> 2 ^ 3 = 1
    b.CopyFrom(numpy_helper.from_array(arr, b.name))
    problems = fast_path_problems(broken, "matmulnbits-2bit", "exact")
    assert problems == [f"{node.name}: 1 nonzero weight(s) under sentinels"]
