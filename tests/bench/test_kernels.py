"""`bitexport bench --kernels`: the micro-benchmark's shapes, its JSON and Markdown on a tiny run.
No timing is asserted (the figures are whatever this machine gives)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bitexport.bench.kernels import KernelBenchOptions, linear_shapes, run_kernel_bench
from bitexport.bench.shapes import SHAPES
from bitexport.errors import InputError


def test_linear_shapes_of_the_2b_model():
    # BitNet-b1.58-2B-4T: hidden 2560, intermediate 6912, 20 heads of 128, 5 KV heads
    assert linear_shapes(SHAPES["2b"]) == [
        ("q_proj/o_proj", 2560, 2560),
        ("k_proj/v_proj", 640, 2560),
        ("gate_proj/up_proj", 6912, 2560),
        ("down_proj", 2560, 6912),
    ]
    # bitnet_b1_58-large: no GQA, so q/o and k/v share one shape
    assert linear_shapes(SHAPES["large"]) == [
        ("q_proj/o_proj+k_proj/v_proj", 1536, 1536),
        ("gate_proj/up_proj", 4096, 1536),
        ("down_proj", 1536, 4096),
    ]


def test_options_refuse_bad_values(tmp_path):
    with pytest.raises(InputError, match="unknown shape"):
        KernelBenchOptions(out=tmp_path, shapes=("huge",))
    with pytest.raises(InputError, match="token counts"):
        KernelBenchOptions(out=tmp_path, tokens=(0,))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels")
    opts = KernelBenchOptions(out=out, shapes=("tiny",), threads=(1, 2), tokens=(1, 9), rotate_mb=1,
                              min_time_s=0.005, repeats=1, bandwidth_mb=16)
    return run_kernel_bench(opts), out


def test_tiny_run_writes_every_field(tiny_run):
    report, out = tiny_run
    assert json.loads((out / "kernels.json").read_text()) == json.loads(json.dumps(report))
    shapes = {(n, k) for _, n, k in linear_shapes(SHAPES["tiny"])}
    assert set(report["read_probe"]) == {"1", "2"}
    # one GEMV row per shape and thread count, its share computed from its own probe
    assert {(r["n"], r["k"], r["threads"]) for r in report["gemv"]} == {(n, k, t) for n, k in shapes for t in (1, 2)}
    for r in report["gemv"]:
        assert r["copies"] >= 2 and r["copies"] * r["packed_bytes"] >= 1e6
        assert r["weight_gb_per_s"] > 0
        assert r["probe_share"] == pytest.approx(r["weight_gb_per_s"] / r["probe_gb_per_s"], rel=1e-9)
    # GEMM rows: the kernel and both ExecuTorch programs at every M, thread count and shape
    impls = {r["impl"] for r in report["gemm"]}
    assert impls == {f"tq2-{report['isa']}", "et-tq2", "et-xnnpack-int4"}
    keys = {(r["impl"], r["n"], r["k"], r["threads"], r["tokens"]) for r in report["gemm"]}
    assert len(keys) == len(report["gemm"]) == 3 * len(shapes) * 2 * 2
    for r in report["gemm"]:
        assert r["gmac_per_s"] == pytest.approx(r["n"] * r["k"] * r["tokens"] / r["seconds"] / 1e9, rel=1e-9)
    md = (out / "kernels.md").read_text()
    assert "## GEMV" in md and "## GEMM GMAC/s" in md and "et-xnnpack-int4" in md


def test_cli_bad_token_list_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "bitexport", "bench", "--kernels", "--kernel-tokens", "1,x",
                          "-o", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "--kernel-tokens" in res.stderr and "Traceback" not in res.stderr
