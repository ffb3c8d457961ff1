"""bitexport.bench.phone_model: the phone performance model (a MODEL, not a measurement).

Numeric checks run everywhere (pure Python on the stored data). The llvm-mca checks need llvm-mca
(Debian's llvm package): outside CI they skip when it is absent, in CI (CI set) they fail.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest

from bitexport.bench import phone_model as pm

REPO = Path(__file__).resolve().parents[2]


def _need_llvm_mca() -> str:
    tool = pm.find_llvm_mca()
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("llvm-mca is not installed in CI (apt-get install llvm)")
        pytest.skip("llvm-mca not installed")
    return tool


@pytest.fixture(scope="module")
def data():
    return pm.load_data()


@pytest.fixture(scope="module")
def rows(data):
    return pm.predict(data)


# --- the data file ---------------------------------------------------------------------------------

def test_data_file_is_labelled_and_cites_its_sources(data):
    assert data["label"] == "MODEL, not measurement"
    for key, k in data["external_kernels"].items():
        assert k["repo"] and k["function"], key
        assert k.get("file") or k.get("source_file"), key
        assert k.get("flags") or k.get("how"), key
        assert "llvm-mca" in k["llvm_mca"], key
        assert set(k["cycles_per_iteration"]) >= {c["mca_cpu"] for c in data["cores"].values()}, key
    for key, p in data["phones"].items():
        bw = p["bandwidth"]
        assert bw["gb_per_s"] > 0 and bw["source"] and bw["what"], key
        assert bw["basis"] in ("measured", "assumed"), key
        if bw["basis"] == "assumed":  # peak x the stated sustained fraction
            assert bw["gb_per_s"] == pytest.approx(bw["peak_gb_per_s"] * data["assumptions"]["sustained_over_peak"], abs=0.1)
    assert "sqnbitgemm_kernel_neon_int8_2bit.cpp" in data["mlas_finding"]["answer"]
    assert "SQ2BitGemmKernel_BlkSum_CompInt8_NeonDotProd" in data["mlas_finding"]["answer"]


def test_shapes_match_the_project_shapes(data):
    from bitexport.bench.shapes import SHAPES

    demo = json.loads((REPO / "export" / "bitexport" / "demo_model" / "config.json").read_text())
    sh = pm.shapes(data)
    assert sh["demo"].hidden_size == demo["hidden_size"] and sh["demo"].vocab_size == demo["vocab_size"]
    assert sh["demo"].intermediate_size == demo["intermediate_size"]
    assert sh["demo"].num_layers == demo["num_hidden_layers"] and sh["demo"].num_kv_heads == demo["num_key_value_heads"]
    for name in ("large", "2b"):
        cfg = SHAPES[name]
        s = sh[name]
        assert s.ternary_weights == cfg.parameter_counts()["ternary"], name
        assert s.head_weights == cfg.vocab_size * cfg.hidden_size
        assert s.kv_values_per_position == 2 * cfg.num_layers * cfg.kv_size


def test_tq2_bytes_match_the_layout(data):
    from bitexport.runtime_ops.tq2_layout import bits_per_weight

    for s in pm.shapes(data).values():
        expected = s.num_layers * sum(bits_per_weight(n, k) * n * k / 8 for n, k in s.linears)
        assert pm.ternary_bytes(s, {"kind": "tq2"}) == pytest.approx(expected, rel=1e-12)


# --- the model's arithmetic -----------------------------------------------------------------------

def test_bandwidth_bound_prediction_is_bytes_over_bandwidth(data, rows):
    """Recompute llama.cpp TQ2_0's bytes with bitexport.bench.bandwidth (the benchmark's own roofline
    code) and check every bandwidth-bound row against bytes / (bandwidth x efficiency)."""
    from bitexport.bench import bandwidth as bw
    from bitexport.bench.shapes import SHAPES

    a = data["assumptions"]
    checked = 0
    for r in rows:
        if r["binds"] != "bandwidth":
            continue
        gbps = data["phones"][r["phone"]]["bandwidth"]["gb_per_s"] * a["bandwidth_efficiency"]
        assert r["decode_tokens_per_s"] == pytest.approx(gbps * 1e9 / r["bytes_per_token"], rel=1e-9)
        if r["path"] == "tq2_0" and r["shape"] in SHAPES:
            cfg = SHAPES[r["shape"]]
            ref = bw.bytes_per_token(cfg, 66 * 8 / 256, 16.0, 16.0, a["decode_context_tokens"], 2.0)
            assert r["bytes_per_token"] == pytest.approx(ref["total"] - ref["norms"], rel=1e-9)
            checked += 1
    assert checked >= 2


def test_binding_resource_is_flagged(rows):
    for r in rows:
        assert r["binds"] == ("bandwidth" if r["t_bandwidth_ms"] >= r["t_compute_ms"] else "compute")
        assert 1e3 / r["decode_tokens_per_s"] == pytest.approx(max(r["t_bandwidth_ms"], r["t_compute_ms"]))
    assert {r["binds"] for r in rows} == {"bandwidth", "compute"}


def test_binding_flips_with_the_inputs(data):
    fast = copy.deepcopy(data)
    for p in fast["phones"].values():
        p["bandwidth"]["gb_per_s"] *= 1e6
    assert {r["binds"] for r in pm.predict(fast)} == {"compute"}
    slow = copy.deepcopy(data)
    for p in slow["phones"].values():
        p["bandwidth"]["gb_per_s"] /= 1e6
    assert {r["binds"] for r in pm.predict(slow)} == {"bandwidth"}


def test_a_faster_kernel_never_predicts_slower(data, rows):
    before = {(r["shape"], r["phone"], r["path"]): r for r in rows}
    for kernel in ["tq2_gemv", "tq2_gemm", "xnnpack_qb4w_1x16c4_neondot"]:
        faster = copy.deepcopy(data)
        group = "our_kernels" if kernel in faster["our_kernels"] else "external_kernels"
        for cpu in faster[group][kernel]["cycles_per_iteration"]:
            faster[group][kernel]["cycles_per_iteration"][cpu] *= 0.5
        for r in pm.predict(faster):
            b = before[(r["shape"], r["phone"], r["path"])]
            assert r["decode_tokens_per_s"] >= b["decode_tokens_per_s"] * (1 - 1e-12)
            assert r["prefill_tokens_per_s"] >= b["prefill_tokens_per_s"] * (1 - 1e-12)
    more_bw = copy.deepcopy(data)
    for p in more_bw["phones"].values():
        p["bandwidth"]["gb_per_s"] *= 1.5
    for r in pm.predict(more_bw):
        assert r["decode_tokens_per_s"] >= before[(r["shape"], r["phone"], r["path"])]["decode_tokens_per_s"]


def test_compute_time_is_weights_times_cycles_over_clock(data, rows):
    """One row recomputed by hand: 2B shape, Raspberry Pi 5 (4 x A76), stock int4."""
    a = data["assumptions"]
    s = pm.shapes(data)["2b"]
    k = data["external_kernels"]["xnnpack_qc4w_1x16c4_neondot"]
    h = data["external_kernels"]["xnnpack_qb4w_1x16c4_neondot"]
    rate = lambda kern: 4 * 2.4e9 / (kern["cycles_per_iteration"]["neoverse-n1"] / kern["weights_per_iteration"])
    t = (s.ternary_weights / rate(k) + s.head_weights / rate(h)) / a["parallel_efficiency"]
    r = next(r for r in rows if (r["shape"], r["phone"], r["path"]) == ("2b", "pi5", "int4"))
    assert r["t_compute_ms"] == pytest.approx(t * 1e3, rel=1e-9)


def test_ratios_and_targets(rows):
    for r in rows:
        if r["path"] == "int4":
            assert r["decode_vs_int4"] == pytest.approx(1.0)
    t = pm.targets(rows)
    assert len(t) == len({(r["shape"], r["phone"]) for r in rows})
    for x in t:
        assert x["decode_1.5x_int4"] == (x["decode_vs_int4"] >= 1.5)


def test_per_core_table(data):
    cores = pm.per_core(data)
    assert {c["core"] for c in cores} == set(data["cores"])
    for c in cores:
        # i8mm cores run XNNPACK's i8mm kernels, the others the dotprod ones
        assert c["int4_decode_kernel"].endswith("neoni8mm" if c["i8mm"] else "neondot")
        assert c["compute_decode_tq2_vs_int4"] > 0


def test_markdown_is_labelled(data, rows):
    md = pm.markdown(rows, data)
    assert "MODEL, not measurement" in md
    assert "stand-in" in md
    assert "cache-resident" in md  # the demo model fits in the caches
    for p in data["phones"].values():
        assert p["name"] in md


# --- assembly and llvm-mca ------------------------------------------------------------------------

CLANG_ASM = """\
\t.globl\tkern
\t.type\tkern,@function
kern:
\tmovi\tv0.16b, #3
.LBB0_1:                                // =>This Loop Header: Depth=1
\tldr\tq1, [x0], #16
.LBB0_2:                                //   Parent Loop BB0_1 Depth=1
\tldr\tq2, [x1], #16
\tsdot\tv3.4s, v1.16b, v2.16b
\tsubs\tx2, x2, #1
\tb.ne\t.LBB0_2
\tsubs\tx3, x3, #1
\tb.ne\t.LBB0_1
\tret
.Lfunc_end0:
\t.size\tkern, .Lfunc_end0-kern
"""

GCC_ASM = """\
\t.global\t_ZN9bitexport3tq26detail10groups_armEPKhS3_lPi
_ZN9bitexport3tq26detail10groups_armEPKhS3_lPi:
.L3:
\tldr\tq1, [x0], 16
\tand\tv4.16b, v1.16b, v0.16b
\tsdot\tv3.4s, v4.16b, v2.16b
\tsdot\tv5.4s, v4.16b, v2.16b
\tcmp\tx0, x2
\tbne\t.L3
.L4:
\tldr\tq1, [x0], 16
\tsubs\tx3, x3, 1
\tbne\t.L4
\tret
\t.size\t_ZN9bitexport3tq26detail10groups_armEPKhS3_lPi, .-_ZN9bitexport3tq26detail10groups_armEPKhS3_lPi
"""


def test_innermost_loop_clang_style():
    loop = pm.innermost_loop(pm.function_asm(CLANG_ASM, "kern"))
    assert loop.label == ".LBB0_2" and loop.source == "innermost-loop"
    assert loop.instructions == ["ldr q2, [x1], #16", "sdot v3.4s, v1.16b, v2.16b", "subs x2, x2, #1", "b.ne .LBB0_2"]
    assert pm.loop_macs(loop.instructions) == 16


def test_innermost_loop_gcc_style_and_mangled_names():
    body = pm.function_asm(GCC_ASM, "groups_arm")  # the C++ name, matched inside the mangled symbol
    assert pm.innermost_loop(body, "dot").label == ".L3"  # the dot loop, not the larger-by-nothing tail
    assert pm.loop_macs(pm.innermost_loop(body, "dot").instructions) == 32
    with pytest.raises(KeyError):
        pm.function_asm(GCC_ASM, "groups")


def test_markers_take_precedence():
    asm = CLANG_ASM.replace("\tldr\tq2, [x1], #16\n", "\t// LLVM-MCA-BEGIN tq2\n\tldr\tq2, [x1], #16\n") \
                   .replace("\tsubs\tx2, x2, #1\n", "\t// LLVM-MCA-END\n\tsubs\tx2, x2, #1\n")
    loop = pm.innermost_loop(pm.function_asm(asm, "kern"))
    assert loop.source == "markers" and loop.label == ".LBB0_2"  # the loop around the markers, whole
    assert loop.instructions == ["ldr q2, [x1], #16", "sdot v3.4s, v1.16b, v2.16b", "subs x2, x2, #1", "b.ne .LBB0_2"]
    outside = CLANG_ASM.replace("\tmovi\tv0.16b, #3\n", "\t// LLVM-MCA-BEGIN\n\tmovi\tv0.16b, #3\n\t// LLVM-MCA-END\n")
    assert pm.innermost_loop(pm.function_asm(outside, "kern")).instructions == ["movi v0.16b, #3"]


def test_parse_llvm_mca_report():
    text = """Iterations:        1000
Instructions:      92000
Total Cycles:      40009
Total uOps:        92000

Dispatch Width:    8
uOps Per Cycle:    2.30
IPC:               2.30
Block RThroughput: 40.0


Instruction Info:
[1]: #uOps

Resources:
[0]   - N1UnitB
[1.0] - N1UnitI
"""
    p = pm.parse_llvm_mca(text)
    assert (p["iterations"], p["instructions"], p["total_cycles"]) == (1000, 92000, 40009)
    assert p["block_rthroughput"] == 40.0 and p["ipc"] == 2.30
    assert p["resources"] == ["N1UnitB", "N1UnitI"]


def test_llvm_mca_on_the_stored_standin_loop(data):
    tool = _need_llvm_mca()
    k = data["our_kernels"]["tq2_gemv"]
    assert pm.loop_macs(k["loop"]) == k["weights_per_iteration"] * k["tokens_per_iteration"]
    version = pm.llvm_mca_version(tool)
    for cpu in ("cortex-a55", "neoverse-n1"):  # names LLVM 14 knows too
        r = pm.run_llvm_mca(k["loop"], cpu, llvm_mca=tool)
        assert r.iterations == 1000 and r.instructions == 1000 * len(k["loop"])
        assert r.cycles_per_iteration > 0 and r.block_rthroughput > 0
        if version == data["llvm_mca"]["version"]:
            assert r.cycles_per_iteration == pytest.approx(k["cycles_per_iteration"][cpu], abs=0.01)


def test_compile_and_analyse_the_standin():
    tool = _need_llvm_mca()
    compiler = pm.find_compiler()
    if compiler is None:
        if os.environ.get("CI"):
            pytest.fail("no aarch64 compiler in CI (g++-aarch64-linux-gnu)")
        pytest.skip("no aarch64 compiler")
    spec = pm.STANDIN_KERNELS["tq2_gemv"]
    r = pm.analyse_kernel(spec, ["neoverse-n1"], compiler, tool)
    assert r["dot_macs_per_iteration"] == 512 == r["weights_per_iteration"]  # 32 SDOTs: 4 rows x 128 weights
    cpw = r["per_cpu"]["neoverse-n1"]["cycles_per_weight"]
    assert 0.01 < cpw < 1.0


def test_refresh_without_tools_keeps_stored_figures(data, monkeypatch):
    monkeypatch.setattr(pm, "find_llvm_mca", lambda preferred=None: None)
    d = pm.refresh_our_kernels(copy.deepcopy(data))
    for name in pm.STANDIN_KERNELS:
        assert d["our_kernels"][name]["figures_from"].startswith("stored")
        assert d["our_kernels"][name]["cycles_per_iteration"] == data["our_kernels"][name]["cycles_per_iteration"]


def test_named_marker_region():
    asm = CLANG_ASM.replace("\tldr\tq2, [x1], #16\n", "\t// LLVM-MCA-BEGIN other\n\t// LLVM-MCA-END\n"
                            "\t// LLVM-MCA-BEGIN tq2_gemv\n\tldr\tq2, [x1], #16\n") \
                   .replace("\tsubs\tx2, x2, #1\n", "\t// LLVM-MCA-END\n\tsubs\tx2, x2, #1\n")
    body = pm.function_asm(asm, "kern")
    assert pm.innermost_loop(body, region="tq2_gemv").label == ".LBB0_2"
    with pytest.raises(ValueError):
        pm.innermost_loop(body, region="missing")


def test_refresh_keeps_a_real_kernel(data, monkeypatch):
    d = copy.deepcopy(data)
    d["our_kernels"]["tq2_gemv"].update({"stand_in": False, "cycles_per_iteration": {"neoverse-n1": 1.0}})
    monkeypatch.setattr(pm, "find_llvm_mca", lambda preferred=None: None)
    pm.refresh_our_kernels(d)
    assert d["our_kernels"]["tq2_gemv"]["cycles_per_iteration"] == {"neoverse-n1": 1.0}


REAL_KERNEL_CPP = r"""
#include <arm_neon.h>
#include "tq2_layout.h"
#ifdef BITEXPORT_MCA
#define TQ2_MCA_BEGIN(name) asm volatile("// LLVM-MCA-BEGIN " name)
#define TQ2_MCA_END() asm volatile("// LLVM-MCA-END")
#else
#define TQ2_MCA_BEGIN(name)
#define TQ2_MCA_END()
#endif
namespace bitexport { namespace tq2 { namespace detail {
void groups_test(const uint8_t* w, const int8_t* x, int64_t kb, int32_t* out) {
  const uint8x16_t m3 = vdupq_n_u8(3);
  int32x4_t a0 = vdupq_n_s32(0), a1 = a0;
  for (int64_t b = 0; b < kb; ++b) {
    TQ2_MCA_BEGIN("tq2_gemv");
    const uint8x16_t lo = vld1q_u8(w + TQ2_BLOCK_BYTES * b), hi = vld1q_u8(w + TQ2_BLOCK_BYTES * b + 16);
    a0 = vdotq_s32(a0, vreinterpretq_s8_u8(vandq_u8(lo, m3)), vld1q_s8(x + 128 * b));
    a1 = vdotq_s32(a1, vreinterpretq_s8_u8(vandq_u8(hi, m3)), vld1q_s8(x + 128 * b + 16));
    a0 = vdotq_s32(a0, vreinterpretq_s8_u8(vshrq_n_u8(lo, 6)), vld1q_s8(x + 128 * b + 96));
    a1 = vdotq_s32(a1, vreinterpretq_s8_u8(vshrq_n_u8(hi, 6)), vld1q_s8(x + 128 * b + 112));
    TQ2_MCA_END();
  }
  out[0] = vaddvq_s32(vaddq_s32(a0, a1));
}
}}}
"""


@pytest.mark.parametrize("region", [None, "tq2_gemv"])
def test_real_kernel_plug_in(tmp_path, region):
    """The path the real tq2_kernel_arm.cpp will take: a C++ file beside the layout header, a
    namespaced function found by its unqualified name, an optional named marker region."""
    tool = _need_llvm_mca()
    compiler = pm.find_compiler()
    if compiler is None:
        if os.environ.get("CI"):
            pytest.fail("no aarch64 compiler in CI (g++-aarch64-linux-gnu)")
        pytest.skip("no aarch64 compiler")
    shutil.copy(REPO / "runtime_ops" / "csrc" / "tq2_layout.h", tmp_path)
    src = tmp_path / "tq2_kernel_arm.cpp"
    src.write_text(REAL_KERNEL_CPP if region else REAL_KERNEL_CPP.replace('TQ2_MCA_BEGIN("tq2_gemv");', "")
                   .replace("TQ2_MCA_END();", ""))
    spec = pm.real_kernel_spec(src, "groups_test", "armv8.2-a+dotprod", region=region)
    r = pm.analyse_kernel(spec, ["neoverse-n1"], compiler, tool)
    assert r["loop_source"] == ("markers" if region else "innermost-loop")
    assert r["weights_per_iteration"] == 64  # 4 SDOTs x 16
    assert r["per_cpu"]["neoverse-n1"]["cycles_per_weight"] > 0


def test_cli_prints_the_labelled_table(capsys):
    assert pm.main(["--shape", "2b"]) == 0
    out = capsys.readouterr().out
    assert "MODEL, not measurement" in out and "| 2b |" in out and "| large |" not in out


def test_bench_phone_model_writes_the_labelled_table(tmp_path, capsys):
    """`bitexport bench --phone-model` prints and writes the model, labelled as a model."""
    from bitexport.cli import main

    assert main(["bench", "--phone-model", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "phone-model.md").read_text()
    data = json.loads((tmp_path / "phone-model.json").read_text())
    assert "MODEL, not measurement" in md and data["label"] == "MODEL, not measurement"
    assert md.strip() in capsys.readouterr().out
    assert {r["shape"] for r in data["rows"]} >= {"large", "2b"}
