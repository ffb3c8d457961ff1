"""`bitexport bench`: the suite on the tiny shape, its outputs, the roofline arithmetic, and the
1bitLLM copy that carries our ternary weights to llama.cpp's converter. No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bitexport.bench import bandwidth as bw
from bitexport.bench.llamacpp import BITS_PER_WEIGHT, convert, find_llamacpp, shadow_weights, write_1bitllm
from bitexport.bench.suite import DEFAULT_VARIANTS, FIELDS, LLAMACPP_VARIANTS, SuiteOptions, run_suite
from bitexport.errors import InputError
from bitexport.formats import load_model
from bitexport.model.quant import absmean_ternarize
from bitexport.formats.tiny import make_tiny_checkpoint

PROMPT, NEW = 12, 6
# one variant of each kind keeps the file quick (an ExecuTorch export alone takes ~30 s here);
# test_suite_all_variants (marked slow) runs every one
QUICK_VARIANTS = ("et-tq2", "onnx-tq2", "onnx-fp32", "reference")


def _run(out: Path, variants: tuple[str, ...], model: str | None = None) -> dict:
    return run_suite(SuiteOptions(out=out, model=model, shape="tiny", threads=2, repeats=1, variants=variants,
                                  prompt_len=PROMPT, new_tokens=NEW, bandwidth_mb=32,
                                  max_wait_quiet_s=0))


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    variants = QUICK_VARIANTS + (("llamacpp-tq2_0",) if find_llamacpp() else ())
    return _run(out, variants), out


def check_report(report: dict, out: Path, variants: tuple[str, ...]) -> None:
    """The three outputs exist; every variant has every field; the available ones are complete."""
    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())["variants"] == json.loads(json.dumps(report["variants"]))
    assert not (out / "work").exists()  # exports are removed unless --keep-work
    assert [v["key"] for v in report["variants"]] == list(variants)
    md = (out / "results.md").read_text()
    for v in report["variants"]:
        assert set(FIELDS) <= set(v), v["key"]
        assert v["label"] in md
        # 'failed' means a bug in a target or in the suite; 'unavailable' is allowed, with a reason
        assert v["status"] in ("ok", "unavailable"), (v["key"], v["reason"])
        if v["status"] == "unavailable":
            assert v["reason"] and v["reason"] in md, v["key"]
            continue
        for f in ("runtime", "weight_format", "file_bytes", "bits_per_ternary_weight", "prefill_tokens_per_s",
                  "decode_tokens_per_s", "peak_rss_bytes", "bytes_per_token", "roofline_tokens_per_s",
                  "roofline_share", "ratios"):
            assert v[f] is not None, (v["key"], f)
        assert v["decode_tokens_per_s"]["median"] > 0 and v["prefill_tokens_per_s"]["median"] > 0
        assert len(v["decode_tokens_per_s"]["runs"]) == 1
        assert v["peak_rss_bytes"]["median"] > 10e6  # a child process's own peak, in bytes
        if v["key"] != "reference":
            assert v["export_s"] > 0 and v["export_peak_rss_bytes"] > 10e6, v["key"]
        if v["key"] != "reference" and not v["key"].startswith("llamacpp"):
            # where the bytes are: the components add up to the file, every one measured
            c = v["components"]
            assert c["total"] == v["file_bytes"] and min(c[k] for k in ("ternary", "embedding", "other")) > 0, v["key"]
        if not v["key"].startswith("llamacpp"):
            assert v["new_tokens"] == NEW  # the benchmark model has no EOS: every token is decoded
            assert v["agreement"]["of"] == NEW and 0 <= v["agreement"]["common_prefix"] <= NEW


def test_suite_outputs_and_fields(suite):
    report, out = suite
    check_report(report, out, QUICK_VARIANTS + (("llamacpp-tq2_0",) if find_llamacpp() else ()))


def test_reference_and_2bit_results(suite):
    report, _ = suite
    by_key = {v["key"]: v for v in report["variants"]}
    ref = by_key["reference"]
    assert ref["status"] == "ok"
    # the reference is deterministic across processes: it agrees with itself on every token
    assert ref["agreement"] == {"common_prefix": NEW, "of": NEW, "identical": True}
    assert ref["bits_per_ternary_weight"] == 8.0
    # the 2-bit variants run here (an 'unavailable' one would hide a broken target) and their
    # greedy tokens are the reference's: the agreement compares other runtimes with the reference
    for key in ("et-tq2", "onnx-tq2"):
        v = by_key[key]
        assert v["status"] == "ok", (key, v["reason"])
        assert v["agreement"] == {"common_prefix": NEW, "of": NEW, "identical": True}, (key, v["agreement"])
    onnx = by_key["onnx-tq2"]
    # operators per decode step, read from the .pte's execution plan (ExecuTorch only)
    assert by_key["et-tq2"]["ops_per_token"] == by_key["et-tq2"]["details"]["ops_per_token"]["total"] > 0
    assert onnx["ops_per_token"] is None
    assert 2.0 <= onnx["bits_per_ternary_weight"] < 2.1
    assert onnx["ratios"]["fp32_baseline"] == "onnx-fp32"
    assert onnx["bytes_per_token"]["ternary"] == round(86016 * onnx["bits_per_ternary_weight"] / 8)
    assert report["bandwidth"]["roofline_gb_per_s"] > 0
    assert report["settings"]["max_seq_len"] == PROMPT + NEW


def test_model_folder_and_unavailable_llamacpp(tmp_path):
    """A MODEL folder is benchmarked as given; llama.cpp is 'unavailable' (with the reason) for a
    model with an untied head, which its BitNet architecture cannot hold; the rest still runs."""
    src = make_tiny_checkpoint(tmp_path / "src", "1bitllm", seed=3)
    variants = ("reference", "llamacpp-tq2_0")
    report = _run(tmp_path / "out", variants, model=str(src))
    check_report(report, tmp_path / "out", variants)
    ref, llama = report["variants"]
    assert ref["status"] == "ok" and report["model"]["synthetic"] is False
    assert llama["status"] == "unavailable" and "no separate output layer" in llama["reason"]


def test_shape_without_sub_norms_goes_through_1bitllm(tmp_path, monkeypatch):
    """The HF bitnet format always has sub-norms; a shape without them (large, the 1bitLLM shape)
    is benchmarked from a 1bitLLM folder that our loader reads back to the same codes and scales."""
    from dataclasses import replace

    from bitexport.bench.shapes import SHAPES

    monkeypatch.setitem(SHAPES, "tiny", replace(SHAPES["tiny"], attn_sub_norm=False, ffn_sub_norm=False,
                                                hidden_act="silu"))
    variants = ("onnx-tq2", "reference")
    report = _run(tmp_path, variants)
    check_report(report, tmp_path, variants)
    assert report["model"]["llama_cpp_copy"] == {"linears": 14, "code_mismatches": 0, "scale_mismatches": 0}
    assert report["model"]["config"]["attn_sub_norm"] is False
    assert all(v["status"] == "ok" for v in report["variants"])


@pytest.mark.slow
def test_suite_all_variants(tmp_path):
    variants = DEFAULT_VARIANTS + (LLAMACPP_VARIANTS if find_llamacpp() else ())
    check_report(_run(tmp_path, variants), tmp_path, variants)


def test_unknown_variant_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown variant"):
        run_suite(SuiteOptions(out=tmp_path, shape="tiny", variants=("et-tq3",)))


def test_cli_has_bench():
    from bitexport.cli import build_parser

    args = build_parser().parse_args(["bench", "--shape", "tiny", "--threads", "1", "--with-llama-cpp"])
    assert args.shape == "tiny" and args.threads == 1 and args.with_llama_cpp and args.repeats == 3


# --- roofline -----------------------------------------------------------------------------------

def test_bytes_per_token_large_shape():
    from bitexport.bench.shapes import SHAPES

    cfg = SHAPES["large"]
    b = bw.bytes_per_token(cfg, ternary_bits=2.0, head_bits=4.5, embedding_bits=32.0, context_tokens=192, kv_bytes_per_value=4)
    ternary = 24 * (4 * 1536 * 1536 + 3 * 1536 * 4096)
    assert b["ternary"] == ternary * 2 / 8 == 169_869_312
    assert b["head"] == 32002 * 1536 * 4.5 / 8
    assert b["embedding_row"] == 1536 * 4
    assert b["kv_cache"] == 2 * 24 * 1536 * 192 * 4
    assert b["total"] == sum(v for k, v in b.items() if k != "total")
    assert bw.roofline_tokens_per_s(1e9, 33.0) == 33.0


def test_format_bits():
    assert bw.format_bits("fp32") == 32 and bw.format_bits("F16") == 16
    assert bw.format_bits("int4-block32") == 5.0 and bw.format_bits("int4-block128") == 4.25
    assert bw.format_bits("int4-group32") == 4.5 and bw.format_bits("int4-per-row") == 4.0
    with pytest.raises(ValueError):
        bw.format_bits("nf3")


def test_bandwidth_probe_reports_a_rate():
    r = bw.measure_bandwidth(1, buffer_mb=16, repeats=2)
    assert r.gb_per_s > 0 and r.best_gb_per_s >= r.gb_per_s and r.threads == 1


def test_child_peak_memory_is_the_childs_own():
    """A child's ru_maxrss on Linux starts from its parent's high-water mark; the suite must
    report what the child itself used, whatever the parent holds (here 400 MB)."""
    from bitexport.bench.proc import run_with_rusage

    held = np.ones(400_000_000 // 8)
    code = "import numpy as np, time; a = np.ones(80_000_000 // 8); time.sleep(0.3)"
    rc, _, _, _, peak = run_with_rusage([sys.executable, "-c", code])
    assert rc == 0 and held.sum() > 0
    assert 80e6 < peak < 250e6  # numpy's array plus the interpreter, not the parent's 400 MB


# --- the 1bitLLM copy for llama.cpp ------------------------------------------------------------------

def _codes_and_scales(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {n: (lin.codes.clone(), lin.scale.float().reshape(1).clone()) for n, lin in model.bitlinears()}


def test_1bitllm_copy_gives_back_codes_and_scales(tmp_path):
    # a 1bitLLM checkpoint's scales come out of absmean: each can be written back to the bit
    src = make_tiny_checkpoint(tmp_path / "src", "1bitllm", seed=3, tie_word_embeddings=True)
    ours = load_model(src)
    folder = write_1bitllm(ours, tmp_path / "copy")
    again = load_model(folder)  # our own 1bitLLM loader re-ternarizes the shadow weights
    want, got = _codes_and_scales(ours.model), _codes_and_scales(again.model)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(got[name][0], want[name][0]), name
        assert torch.equal(got[name][1], want[name][1]), name  # bit-identical float32 scale
    assert torch.equal(again.model.embed_tokens.weight, ours.model.embed_tokens.weight)  # float32 kept
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architectures"] == ["BitnetForCausalLM"] and cfg["tie_word_embeddings"] is True
    assert (folder / "tokenizer.model").is_file()


@pytest.mark.parametrize("shape,dtype", [((96, 64), torch.float32), ((1024, 1024), torch.float16)])
def test_shadow_weights_mean_is_gamma(shape, dtype):
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(-1, 2, shape, generator=g, dtype=torch.int8)
    # a scale that absmean can produce (a fixed point of 1/(1/s)), as our loaders' scales are
    gamma = torch.tensor([0.0371], dtype=torch.float32)
    for _ in range(4):
        gamma = 1.0 / (1.0 / gamma)
    w = shadow_weights(codes, float(gamma), dtype)
    assert w.dtype == dtype  # float16 where the tensor is big enough for it, as 1bitLLM stores them
    c, s = absmean_ternarize(w)
    assert torch.equal(c, codes)
    assert torch.equal(s, gamma)
    # W is codes times (one of two adjacent magnitudes near gamma / p)
    mags = w.float().abs()[codes != 0].unique()
    assert len(mags) <= 2
    p = float((codes != 0).float().mean())
    assert torch.allclose(mags, torch.tensor(float(gamma) / p), rtol=2e-3)


def test_untied_model_cannot_go_to_llamacpp(tmp_path):
    src = make_tiny_checkpoint(tmp_path / "src", "1bitllm", seed=3)  # untied head
    with pytest.raises(InputError, match="no separate output layer"):
        write_1bitllm(load_model(src), tmp_path / "copy")


@pytest.mark.skipif(find_llamacpp() is None, reason="llama.cpp is not built (python -m bitexport.bench.llamacpp build)")
@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
def test_llamacpp_gguf_holds_our_codes(tmp_path, fmt):
    """llama.cpp's converter, fed our 1bitLLM copy, stores exactly our ternary codes, with our
    scale rounded to float16 (its block scale format)."""
    lc = find_llamacpp()
    # rows of 256: the width TQ2_0/TQ1_0 blocks need (narrower rows fall back to F16)
    src = make_tiny_checkpoint(tmp_path / "src", "1bitllm", seed=5, tie_word_embeddings=True, hidden_size=256,
                               intermediate_size=512, num_heads=4, num_kv_heads=4, head_dim=64)
    ours = load_model(src)
    folder = write_1bitllm(ours, tmp_path / "copy")
    res = convert(lc, folder, fmt, tmp_path / "m.gguf")
    assert res["tensor_types"].get(fmt.upper()) == 7 * 2  # every ternary linear of both layers
    sys.path.insert(0, str(lc.source / "gguf-py"))
    try:
        import gguf
    finally:
        sys.path.pop(0)
    reader = gguf.GGUFReader(res["path"])
    tensors = {t.name: t for t in reader.tensors}
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
    for name, lin in ours.model.bitlinears():
        layer, proj = name.split(".")[1], name.split(".")[-1]
        t = tensors[f"blk.{layer}.{names[proj]}.weight"]
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(lin.codes.shape)
        assert np.array_equal(np.sign(w).astype(np.int8), lin.codes.numpy()), name
        gamma16 = np.float32(np.float16(float(lin.scale.reshape(-1)[0])))
        assert np.all(np.abs(w[w != 0]) == gamma16), name
    assert BITS_PER_WEIGHT[fmt] == {"tq2_0": 2.0625, "tq1_0": 1.6875}[fmt]


def test_roofline_reads_the_kv_cache_dtype():
    """An fp16 cache halves the K/V bytes a step reads; llama.cpp's is f16, the rest float32."""
    from bitexport.bench.roofline import kv_bytes_per_value, roofline
    from bitexport.bench.shapes import SHAPES
    from bitexport.bench.suite import VARIANTS, Record

    assert kv_bytes_per_value("bundle", {"kv_cache": "fp16"}) == 2.0
    assert kv_bytes_per_value("bundle", {"kv_cache": "bf16"}) == 2.0
    assert kv_bytes_per_value("bundle", {"kv_cache": "fp32"}) == 4.0
    assert kv_bytes_per_value("bundle", {}) == 4.0  # ONNX and older manifests: float32
    assert kv_bytes_per_value("llamacpp", None) == 2.0
    cfg = SHAPES["large"]
    kv = {}
    for key, dtype in (("et-tq2", "fp32"), ("et-tq2-kv-fp16", "fp16")):
        rec = Record(VARIANTS[key])
        rec.values.update(bits_per_ternary_weight=2.0, head_format="int4-block32",
                          decode_tokens_per_s={"median": 40.0}, details={"embedding": "fp32", "kv_cache": dtype})
        roofline(rec, cfg, 128, 128, 28.0)
        kv[dtype] = rec.values["bytes_per_token"]["kv_cache"]
    assert kv["fp32"] == 2 * 24 * 1536 * 192 * 4 == 2 * kv["fp16"]
