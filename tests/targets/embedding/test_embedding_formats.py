"""Embedding formats on every target (issue 18): each stored table equals an independent numpy
reference of its quantization exactly, a bundle with it runs with logits within its stated
tolerance of the PyTorch reference, and a deliberately broken scale fails the same checks.

The references below are written per group with plain loops, independently of
bitexport.model.tables, so that a shared mistake in the vectorised quantizer would show."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from bitexport.api import export as export_bundle
from bitexport.bundle.tolerance import tolerance_for
from bitexport.formats import load_model
from bitexport.targets.onnx.config import OnnxConfig

MAX_SEQ = 64
PROMPT = list(range(5, 17))


def ref_int4_groups(w: np.ndarray, group: int, scale_dtype) -> np.ndarray:
    """Dequantized int4 table: per group, the largest-magnitude value maps to -8."""
    out = np.empty_like(w, dtype=np.float32)
    for r in range(w.shape[0]):
        for g0 in range(0, w.shape[1], group):
            blk = w[r, g0:g0 + group].astype(np.float32)
            ext = blk[np.argmax(np.abs(blk))]
            s = np.float32(scale_dtype(ext / np.float32(-8.0)))
            q = np.clip(np.rint(blk / s), -8, 7) if s != 0 else np.zeros_like(blk)
            out[r, g0:g0 + group] = q.astype(np.float32) * s
    return out


def ref_int8_blocks(w: np.ndarray, block: int) -> np.ndarray:
    out = np.empty_like(w, dtype=np.float32)
    for r in range(w.shape[0]):
        for g0 in range(0, w.shape[1], block):
            blk = w[r, g0:g0 + block].astype(np.float32)
            s = np.float32(np.abs(blk).max() / np.float32(127.0))
            q = np.clip(np.rint(blk / s), -127, 127) if s != 0 else np.zeros_like(blk)
            out[r, g0:g0 + block] = q.astype(np.float32) * s
    return out


def ref_coreml_symmetric(w16: np.ndarray, block: int, qmax: int) -> np.ndarray:
    """coremltools' linear_symmetric on the fp16 table: scale = max|block| / qmax in fp16, codes
    clip(round(w / scale)), dequantized in fp16 (what constexpr_blockwise_shift_scale yields)."""
    out = np.empty_like(w16)
    for r in range(w16.shape[0]):
        for g0 in range(0, w16.shape[1], block):
            blk = w16[r, g0:g0 + block]
            s = (np.abs(blk).max() / np.float16(qmax)).astype(np.float16)
            q = np.clip(np.round(blk / s), -qmax, qmax).astype(np.float16)
            out[r, g0:g0 + block] = q * s
    return out


def max_rel_logit_error(runner_logits, model, tokens) -> float:
    """max |d logit| / max |logit| over the prompt's positions, teacher-forced."""
    with torch.no_grad():
        model.reset_cache()
        keep = model.last_logits_only
        model.last_logits_only = False
        want = model(torch.tensor([tokens]), torch.tensor([0]))[0].float().numpy()
        model.last_logits_only = keep
    errs = []
    for i in range(len(tokens)):
        got = np.asarray(runner_logits(tokens[i], i)).reshape(-1)
        errs.append(np.abs(got - want[i]).max() / np.abs(want[i]).max())
    return float(max(errs))


# --- the shared quantizer ---------------------------------------------------------------------

def test_shared_quantizers_match_the_loop_references():
    from bitexport.model.tables import dequantize_groups, dequantize_rows, quantize_groups_int4, quantize_rows_int8

    w = np.random.default_rng(0).standard_normal((37, 96)).astype(np.float32)
    for dt in (np.float32, np.float16):
        q, s = quantize_groups_int4(w, 32, dt)
        assert np.array_equal(dequantize_groups(q, s), ref_int4_groups(w, 32, dt))
    q, s = quantize_rows_int8(w)
    assert np.array_equal(dequantize_rows(q, s), ref_int8_blocks(w, 96))
    # a broken scale is caught by the same comparison
    assert not np.array_equal(dequantize_rows(q, s * np.float32(1.01)), ref_int8_blocks(w, 96))


# --- ONNX ---------------------------------------------------------------------------------------

def _onnx_table(proto, fmt: str, hidden: int) -> np.ndarray:
    from bitexport.targets.onnx.ops import HEAD_BLOCK_SIZE, int8_head_block
    from bitexport.targets.onnx.pack import dequantize

    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    if fmt == "fp16":
        return inits["embed_tokens.weight_fp16"].astype(np.float32)
    bits, bs = (4, HEAD_BLOCK_SIZE) if fmt == "int4" else (8, int8_head_block(hidden))
    data = inits["embed_tokens.qweight"]
    return dequantize(data.reshape(data.shape[0], -1, bs * bits // 8), inits["embed_tokens.scales"], bits, hidden)


@pytest.mark.parametrize("fmt", ["fp16", "int8", "int4"])
def test_onnx_embedding_table_and_logits(tmp_path, tiny_hf, fmt):
    from bitexport.bench.quality import onnx_step
    from bitexport.targets.onnx.ops import int8_head_block

    loaded = load_model(tiny_hf, MAX_SEQ)
    w = loaded.model.embed_tokens.weight.detach().numpy()
    bundle = export_bundle(tiny_hf, "onnx", tmp_path / fmt, config=OnnxConfig(embedding=fmt), max_seq_len=MAX_SEQ)
    path = bundle.path / "onnx" / "model.onnx"
    proto = onnx.load(str(path))
    want = {"fp16": w.astype(np.float16).astype(np.float32), "int4": ref_int4_groups(w, 32, np.float32),
            "int8": ref_int8_blocks(w, int8_head_block(w.shape[1]))}[fmt]
    assert np.array_equal(_onnx_table(proto, fmt, w.shape[1]), want)
    comps = bundle.artifacts[0].details["components"]
    assert comps["head_shares_embedding"] == (fmt == OnnxConfig().head)  # a tied head of the same format: one table
    bound = tolerance_for(bundle.artifacts[0]).logits
    err = max_rel_logit_error(onnx_step(path), loaded.model, PROMPT)
    print(f"onnx embedding {fmt}: max |d logit| / max|logit| {err:.4f} (bound {bound})")
    assert err <= bound
    # broken on purpose: the table's scales x 4 (or the fp16 table x 4) fail the bound
    for t in proto.graph.initializer:
        if t.name in ("embed_tokens.scales", "embed_tokens.weight_fp16"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 4, t.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    assert max_rel_logit_error(onnx_step(broken), loaded.model, PROMPT) > bound


# --- ExecuTorch ---------------------------------------------------------------------------------

def test_executorch_int4_embedding_table_and_lookup(tmp_path):
    """The int4 table (fp16 scales) dequantizes to the loop reference, ExecuTorch's stock
    embedding_4bit kernel returns exactly those rows, and a broken scale is seen."""
    from torch import nn

    from bitexport.targets.executorch.kernels import load_quantized_ops
    from bitexport.targets.executorch.passes.embedding import Int4Embedding
    from bitexport.targets.executorch.program import export_decoder, to_pte
    from bitexport.targets.executorch.runner import ExecutorchRunner

    w = 0.02 * torch.randn(256, 96, generator=torch.Generator().manual_seed(0))
    table = Int4Embedding(w)
    want = torch.from_numpy(ref_int4_groups(w.numpy(), 32, np.float16))
    assert torch.equal(table.dequantized(), want)

    class Lookup(nn.Module):
        def __init__(self, t) -> None:
            super().__init__()
            self.table = t

        def forward(self, tokens: torch.Tensor, start_pos: torch.Tensor) -> torch.Tensor:
            return self.table(tokens)[:, -1]

    load_quantized_ops()
    for name, t, equal in (("ok", table, True), ("broken", None, False)):
        if t is None:
            t = Int4Embedding(w)
            t.weight_scales.mul_(2)  # broken on purpose
        buf, stats = to_pte(export_decoder(Lookup(t).eval(), 64), {"get_max_seq_len": 64})
        assert stats.outside["quantized_decomposed::embedding_4bit.dtype"] == 1
        (tmp_path / f"{name}.pte").write_bytes(buf)
        runner = ExecutorchRunner(tmp_path / f"{name}.pte", needs=["executorch-quantized"])
        got = [runner.logits([5, tok], 0).reshape(-1) for tok in (3, 200, 255)]
        assert all(torch.equal(g, want[tok]) for g, tok in zip(got, (3, 200, 255))) == equal


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_executorch_bundle_with_quantized_embedding(tmp_path, tiny_hf, fmt):
    from bitexport.targets.executorch.config import ExecutorchConfig
    from bitexport.targets.executorch.runner import ExecutorchRunner

    loaded = load_model(tiny_hf, MAX_SEQ)
    bundle = export_bundle(tiny_hf, "android", tmp_path / fmt, config=ExecutorchConfig(embedding=fmt), max_seq_len=MAX_SEQ)
    art = bundle.artifacts[0]
    assert "executorch-quantized" in art.details["custom_kernels"]
    c = art.details["components"]
    cfg = loaded.config
    per_weight = {"int8": 8 + 32 / cfg.hidden_size, "int4": 4.5}[fmt]
    assert c["embedding"] == round(cfg.vocab_size * cfg.hidden_size * per_weight / 8)
    runner = ExecutorchRunner.for_artifact(bundle, art)
    bound = tolerance_for(art).logits
    err = max_rel_logit_error(lambda t, p: runner.logits([t], p).float().numpy(), loaded.model, PROMPT)
    print(f"executorch embedding {fmt}: max |d logit| / max|logit| {err:.4f} (bound {bound})")
    assert err <= bound


# --- Core ML (static: predict needs macOS) ------------------------------------------------------

@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_coreml_embedding_table_is_coremltools_symmetric_quantization(tmp_path, tiny_hf, fmt):
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as mil_load

    from bitexport.targets.coreml.config import CoreMLConfig
    from bitexport.targets.coreml.inspect import summarize

    loaded = load_model(tiny_hf, MAX_SEQ)
    w16 = loaded.model.embed_tokens.weight.detach().numpy().astype(np.float16)
    bundle = export_bundle(tiny_hf, "coreml", tmp_path / fmt, config=CoreMLConfig(embedding=fmt), max_seq_len=MAX_SEQ)
    pkg = bundle.path / "model.mlpackage"
    s = summarize(pkg)
    assert s.embedding.kind == "constexpr_blockwise_shift_scale"
    assert s.embedding.input_kinds["data"] == {"int8": "INT8", "int4": "INT4"}[fmt]
    assert (s.linears[-1].source == s.embedding.source) == (fmt == "int4")  # tied int4 head: one table
    m = ct.models.MLModel(str(pkg), skip_model_load=True)
    prog = mil_load(m.get_spec(), m.get_spec().specificationVersion, m.weights_dir)
    (op,) = [o for o in prog.functions["main"].operations if o.name == s.embedding.source]
    got = op.materialized_val_inference()
    block, qmax = (w16.shape[1], 127) if fmt == "int8" else (32, 7)
    want = ref_coreml_symmetric(w16, block, qmax)
    assert np.array_equal(got, want)
    broken = np.asarray(op.data.val).astype(np.float16) * (np.asarray(op.scale.val) * np.float16(2)).repeat(w16.shape[1] // op.scale.val.shape[1], axis=1)
    assert not np.array_equal(broken, want)
