"""The runtime_ops kernels build for aarch64 (the phones' CPU) and compute there, on every ARM
path, bit for bit what the Python reference computes (issues 8 and 13).

Debian's cross compiler builds the kernel sources, with the pinned executorch wheel's headers (the
same headers the iOS build uses) and no ExecuTorch library, into a static test program; qemu-aarch64
runs it on inputs written by Python, once per emulated CPU:

* ``-cpu max``: NEON, dotprod and i8mm, so the dispatch must pick neon_i8mm;
* ``-cpu cortex-a76``: dotprod, no i8mm: neon_dotprod;
* ``-cpu cortex-a53``: neither (Armv8.0): neon. qemu raises SIGILL on an sdot there (checked
  below), so a dispatch that picked a path the CPU lacks would crash, not pass.

Every path the CPU has (portable, neon, neon_dotprod, neon_i8mm) runs on every case and its
float32 outputs must equal ``bitexport.runtime_ops.tq2_linear_reference`` bit for bit; the cases
vary K and N off the 128 / 4 blocking and m from 1 (decode) to counts that are not a multiple of any
token tile. BITEXPORT_TQ2_ISA forces each path through the operator's own selection. The test
program supplies ExecuTorch's parallel_for, splitting the row groups into uneven pieces handed out
backwards, as a thread pool may. Where clang++ is installed the program is built with it too (the
phones' compiler) and checked the same way. The ExecuTorch operator file is compiled for aarch64,
and the iOS and Android static-library recipes (ios_demo/scripts/kernels,
android_demo/scripts/bitexport_kernels.cmake) are built with the cross compiler.

Needs ``apt-get install -y g++-aarch64-linux-gnu qemu-user`` (.ci/run installs it). Without the
tools these tests skip on a developer machine but FAIL when the CI environment variable is set
(CI=true, as CI services set it): in CI a missing toolchain must not pass silently. clang is
optional everywhere (its test skips without it).
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bitexport.runtime_ops import pack_tq2, tq2_linear_reference

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "runtime_ops" / "csrc"
CXX = shutil.which("aarch64-linux-gnu-g++")
NM = shutil.which("aarch64-linux-gnu-nm")
OBJDUMP = shutil.which("aarch64-linux-gnu-objdump")
QEMU = shutil.which("qemu-aarch64")
APT = "apt-get install -y g++-aarch64-linux-gnu qemu-user"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")

# Emulated CPU -> (paths it has, the one "auto" must pick). Checked against `qemu-aarch64 -cpu
# help` of Debian 12's qemu 7.2: these three exist there and differ exactly in the features that
# matter (HWCAP_ASIMDDP, HWCAP2_I8MM).
CPUS = {
    "max": (("portable", "neon", "neon_dotprod", "neon_i8mm"), "neon_i8mm"),
    "cortex-a76": (("portable", "neon", "neon_dotprod"), "neon_dotprod"),
    "cortex-a53": (("portable", "neon"), "neon"),
}
ARM_PATHS = ("neon", "neon_dotprod", "neon_i8mm")


def _require(tool: str, path: str | None) -> str:
    """The tool's path; without it, skip on a developer machine and fail under CI."""
    if path is None:
        msg = f"{tool} not installed ({APT})"
        if IN_CI:
            pytest.fail(f"{msg}: CI must run the aarch64 kernel checks")
        pytest.skip(msg)
    return path


def _et_include() -> Path:
    import executorch

    # a namespace package: no __file__
    return Path(list(executorch.__path__)[0]) / "include"


# Flags shared by every aarch64 compile here. -ffp-contract=off and -fno-fast-math as in
# runtime_ops/CMakeLists.txt: GCC contracts across statements on aarch64 by default, which
# would change float roundings. ET_LOG_ENABLED=0: no ExecuTorch library is linked, so logging
# must stay header-only. No -march: the kernels must build for baseline Armv8-A and enable
# dotprod / i8mm per function.
def _flags() -> list[str]:
    inc = _et_include()
    return [
        "-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-DNDEBUG",
        "-DC10_USING_CUSTOM_GENERATED_MACROS", "-DET_LOG_ENABLED=0",
        f"-I{CSRC}", f"-I{inc}", f"-I{inc / 'executorch/runtime/core/portable_type/c10'}",
    ]


def _kernel_sources() -> list[Path]:
    """Every kernel source except the ExecuTorch registration (it needs the runtime's registry)."""
    return sorted(p for p in CSRC.glob("*.cpp") if p.name != "tq2_op_executorch.cpp")


# The test program: `tq2_test in.bin out.bin PATH...` reads cases (m, k, n, x, packed, scale),
# runs the C entry point bitexport_tq2_linear_f32 (tq2_c_api.cpp) on each case with each PATH
# ("auto"; "env" = the operator's own choice, BITEXPORT_TQ2_ISA honoured; or a path name), writes
# every y, and prints the best and the selected path. Exit 7: the C API refused a path.
# `tq2_test --raw PATH` calls the kernel with that path unchecked (to see qemu's SIGILL).
DRIVER = r"""
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <executorch/runtime/kernel/thread_parallel_interface.h>
#include "tq2_kernel.h"

extern "C" const char* bitexport_tq2_best_isa();
extern "C" const char* bitexport_tq2_selected_isa();
extern "C" double bitexport_tq2_linear_f32(const float* x, const uint8_t* packed, const float* scale,
                                           float* y, int64_t m, int64_t k, int64_t n,
                                           const char* isa_name, int64_t iters);

// The sources are built with ET_USE_THREADPOOL, so the kernels call this: it hands out uneven
// pieces of the range (1, 2, 3, ... row groups) last piece first, as a pool may, so that every
// path is checked on ranges that start inside the tensor.
namespace executorch {
namespace extension {
bool parallel_for(const int64_t begin, const int64_t end, const int64_t grain_size,
                  runtime::FunctionRef<void(int64_t, int64_t)> f) {
  (void)grain_size;
  std::vector<int64_t> cuts{begin};
  for (int64_t step = 1; cuts.back() < end; ++step) {
    cuts.push_back(cuts.back() + step < end ? cuts.back() + step : end);
  }
  for (size_t i = cuts.size() - 1; i > 0; --i) {
    f(cuts[i - 1], cuts[i]);
  }
  return true;
}
int64_t get_thread_count() { return 1; }
int64_t get_thread_num() { return 0; }
void set_thread_num(int64_t) {}
}  // namespace extension
}  // namespace executorch

template <typename T> static bool get(FILE* f, T* p, size_t count) {
  return std::fread(p, sizeof(T), count, f) == count;
}

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--raw") == 0) {
    bitexport::tq2::Isa isa;
    if (!bitexport::tq2::parse_isa(argv[2], &isa)) return 2;
    // two tokens: one would take the i8mm path's sdot GEMV, not smmla
    std::vector<float> x(2 * 256, 1.0f), scale(4, 1.0f), y(2 * 4);
    std::vector<uint8_t> packed(256, 0x55);
    bitexport::tq2::tq2_linear_f32({x.data(), packed.data(), scale.data(), y.data(), 2, 256, 4}, isa);
    std::printf("ran %s\n", argv[2]);
    return 0;
  }
  if (argc < 4) return 2;
  FILE* in = std::fopen(argv[1], "rb");
  FILE* out = std::fopen(argv[2], "wb");
  if (!in || !out) return 3;
  int64_t cases = 0;
  if (!get(in, &cases, 1)) return 4;
  for (int64_t c = 0; c < cases; ++c) {
    int64_t dims[4];  // m, k, n, packed bytes
    if (!get(in, dims, 4)) return 5;
    std::vector<float> x(dims[0] * dims[1]), scale(dims[2]), y(dims[0] * dims[2]);
    std::vector<uint8_t> packed(dims[3]);
    if (!get(in, x.data(), x.size()) || !get(in, packed.data(), packed.size()) ||
        !get(in, scale.data(), scale.size())) return 6;
    for (int a = 3; a < argc; ++a) {
      const char* isa = std::strcmp(argv[a], "env") == 0 ? bitexport_tq2_selected_isa() : argv[a];
      // NaN-filled first, so an output the kernel skipped cannot match by accident
      std::vector<float> fresh(y.size(), __builtin_nanf(""));
      y.swap(fresh);
      if (bitexport_tq2_linear_f32(x.data(), packed.data(), scale.data(), y.data(), dims[0],
                                   dims[1], dims[2], isa, 1) < 0) return 7;
      std::fwrite(y.data(), sizeof(float), y.size(), out);
    }
  }
  std::fclose(out);
  std::printf("best=%s selected=%s\n", bitexport_tq2_best_isa(), bitexport_tq2_selected_isa());
  return 0;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    cxx = _require("aarch64-linux-gnu-g++", CXX)
    work = tmp_path_factory.mktemp("aarch64")
    (work / "driver.cpp").write_text(DRIVER)
    exe = work / "tq2_test"
    # Static, so qemu needs no aarch64 sysroot to run it.
    cmd = [cxx, *_flags(), "-DET_USE_THREADPOOL", "-static", "-pthread", str(work / "driver.cpp"),
           *map(str, _kernel_sources()), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return exe


def _clang() -> str | None:
    """clang++ (any version; the newest of clang++-NN on PATH), which targets aarch64 itself."""
    found = shutil.which("clang++")
    if found:
        return found
    versioned = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        for exe in Path(d).glob("clang++-[0-9]*") if Path(d).is_dir() else ():
            if exe.name[len("clang++-"):].isdigit() and os.access(exe, os.X_OK):
                versioned.append((int(exe.name[len("clang++-"):]), str(exe)))
    return max(versioned)[1] if versioned else None


@pytest.fixture(scope="module")
def clang_program(tmp_path_factory) -> Path:
    """The same test program built by clang, the compiler of the Android NDK and of Xcode: the
    target attributes and intrinsics must mean the same there. An extra check: CI does not
    install clang, so this skips without it even under CI."""
    clang = _clang()
    if clang is None:
        pytest.skip("clang++ not installed")
    _require("aarch64-linux-gnu-g++", CXX)  # its sysroot and linker serve clang too
    work = tmp_path_factory.mktemp("aarch64-clang")
    (work / "driver.cpp").write_text(DRIVER)
    exe = work / "tq2_test"
    cmd = [clang, "--target=aarch64-linux-gnu", *_flags(), "-DET_USE_THREADPOOL", "-static", "-pthread",
           str(work / "driver.cpp"), *map(str, _kernel_sources()), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return exe


# (m tokens, K in_features, N out_features). K and N off the 128 / 4 blocking; m = 1 (decode:
# the GEMV paths) and m of every residue of the token tiles (dotprod takes 4 tokens a tile and
# 1-3 at the end, i8mm 4 pairs and 1-3 pairs at the end, an odd m with a lone token, plain NEON 2
# and 1); K = 1100 is 9 blocks, more than plain NEON folds its int16 sums after (7).
SHAPES = [
    (1, 128, 4), (1, 200, 13), (1, 1100, 6), (1, 1, 3),
    (2, 1, 3), (3, 300, 37), (5, 130, 9), (6, 257, 8), (7, 64, 5), (8, 384, 4),
    (9, 1100, 7), (11, 129, 10), (16, 512, 24), (17, 96, 3),
]


def _cases(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i, (m, k, n) in enumerate(SHAPES):
        x = torch.randn(m, k, generator=g) * (10.0 ** (i % 3 - 1))
        if m > 2:
            x[1] = 0.0  # an all-zero token: the 1e-5 clamp of max|x|
            x[2, : k // 2] = torch.round(x[2, : k // 2])  # integer values hit exact .5 products more often
        if m > 3:
            # max|x| = 127 makes s = 1 exactly, so every x = j + 0.5 is a rounding tie (half to
            # even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2), in the vector part of the quantizer too
            x[3] = torch.arange(k) % 9 - 4.5
            x[3, k // 3] = 127.0
        codes = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
        if k == 1100:
            # the largest sums, for the accumulator bounds: xq = 127 everywhere and rows 0-1 all
            # +1 (code 2): every product is 254, 16 of them per int16 lane and block in the plain
            # NEON path, 9 blocks -- more than int16 holds unless folded in time
            x[0] = 3.0
            codes[:2] = 1
            codes[2:4] = -1
        scale = torch.rand(n, generator=g) + 0.05
        cases.append((x.contiguous(), codes, scale.contiguous()))
    return cases


def _write_cases(path: Path, cases) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<q", len(cases)))
        for x, codes, scale in cases:
            packed = pack_tq2(codes)
            m, k = x.shape
            f.write(struct.pack("<4q", m, k, codes.shape[0], packed.numel()))
            f.write(x.numpy().astype("<f4").tobytes())
            f.write(packed.numpy().tobytes())
            f.write(scale.numpy().astype("<f4").tobytes())


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    cases = _cases()
    path = tmp_path_factory.mktemp("cases") / "in.bin"
    _write_cases(path, cases)
    want = [tq2_linear_reference(x, codes, scale).numpy() for x, codes, scale in cases]
    return path, cases, want


def _run(program: Path, cpu: str, in_path: Path, out_path: Path, paths, env_isa: str | None = None):
    qemu = _require("qemu-aarch64", QEMU)
    env = dict(os.environ)
    env.pop("BITEXPORT_TQ2_ISA", None)
    if env_isa is not None:
        env["BITEXPORT_TQ2_ISA"] = env_isa
    return subprocess.run([qemu, "-cpu", cpu, str(program), str(in_path), str(out_path), *paths],
                          capture_output=True, text=True, timeout=300, env=env)


def _check_outputs(out_path: Path, cases, want, paths) -> None:
    got = np.fromfile(out_path, dtype="<f4")
    offset = 0
    for (x, codes, _), w in zip(cases, want):
        for path in paths:
            y = got[offset : offset + w.size].reshape(w.shape)
            offset += w.size
            # bit for bit: compare the float32 bit patterns, so -0.0 vs 0.0 or a last-ulp slip fails
            same = y.view(np.uint32) == w.view(np.uint32)
            assert same.all(), (
                f"path {path}, m,k,n = {x.shape[0]},{x.shape[1]},{codes.shape[0]}: "
                f"{int((~same).sum())} of {same.size} outputs differ, first at {np.argwhere(~same)[0].tolist()}"
            )
    assert offset == got.size


@pytest.mark.parametrize("cpu", list(CPUS))
def test_every_arm_path_is_bit_exact_with_the_python_reference(program, cases, cpu, tmp_path):
    """Each path the emulated CPU has, and "auto", on every case; "auto" must be the best one."""
    in_path, case_list, want = cases
    have, best = CPUS[cpu]
    paths = (*have, "auto")
    run = _run(program, cpu, in_path, tmp_path / "out.bin", paths)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr}"
    assert run.stdout.split() == [f"best={best}", f"selected={best}"]
    _check_outputs(tmp_path / "out.bin", case_list, want, paths)


@pytest.mark.parametrize("cpu", list(CPUS))
def test_clang_build_is_bit_exact_on_every_arm_path(clang_program, cases, cpu, tmp_path):
    in_path, case_list, want = cases
    have, best = CPUS[cpu]
    paths = (*have, "auto")
    run = _run(clang_program, cpu, in_path, tmp_path / "out.bin", paths)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr}"
    assert run.stdout.split() == [f"best={best}", f"selected={best}"]
    _check_outputs(tmp_path / "out.bin", case_list, want, paths)


# BITEXPORT_TQ2_ISA -> what the operator must select on each CPU: a path the CPU lacks steps down
# its own ladder (portable < neon < neon_dotprod < neon_i8mm), an x86 path ends at portable.
ENV_CASES = [
    ("max", "portable", "portable"), ("max", "neon", "neon"), ("max", "neon_dotprod", "neon_dotprod"),
    ("max", "neon_i8mm", "neon_i8mm"), ("max", "avx512vnni", "portable"), ("max", "auto", "neon_i8mm"),
    ("cortex-a76", "neon_i8mm", "neon_dotprod"), ("cortex-a76", "neon", "neon"),
    ("cortex-a53", "neon_i8mm", "neon"), ("cortex-a53", "neon_dotprod", "neon"),
]


@pytest.mark.parametrize("cpu,env_isa,expected", ENV_CASES)
def test_bitexport_tq2_isa_forces_each_path(program, cases, cpu, env_isa, expected, tmp_path):
    in_path, case_list, want = cases
    run = _run(program, cpu, in_path, tmp_path / "out.bin", ["env"], env_isa=env_isa)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr}"
    best = CPUS[cpu][1]
    assert run.stdout.split() == [f"best={best}", f"selected={expected}"]
    _check_outputs(tmp_path / "out.bin", case_list, want, ["env"])


def test_paths_a_cpu_lacks_are_refused_and_would_trap(program, cases, tmp_path):
    """On a Cortex-A53 the C entry point refuses dotprod and i8mm; run anyway (unchecked) they
    die of SIGILL under qemu, which is what makes the per-CPU checks above meaningful."""
    in_path, _, _ = cases
    qemu = _require("qemu-aarch64", QEMU)
    for path in ("neon_dotprod", "neon_i8mm"):
        run = _run(program, "cortex-a53", in_path, tmp_path / "out.bin", [path])
        assert run.returncode == 7, (path, run.returncode, run.stderr)
        raw = subprocess.run([qemu, "-cpu", "cortex-a53", str(program), "--raw", path],
                             capture_output=True, text=True, timeout=60)
        assert raw.returncode == -signal.SIGILL, (path, raw.returncode, raw.stdout, raw.stderr)
    i8mm_on_a76 = subprocess.run([qemu, "-cpu", "cortex-a76", str(program), "--raw", "neon_i8mm"],
                                 capture_output=True, text=True, timeout=60)
    assert i8mm_on_a76.returncode == -signal.SIGILL
    ok = subprocess.run([qemu, "-cpu", "max", str(program), "--raw", "neon_i8mm"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "ran neon_i8mm", ok.stderr


def test_aarch64_program_links(program):
    assert program.stat().st_size > 0
    head = program.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64


def test_executorch_operator_compiles_for_aarch64(tmp_path):
    """The registration TU (what the phones' runtime links) compiles against the pinned headers."""
    cxx = _require("aarch64-linux-gnu-g++", CXX)
    obj = tmp_path / "op.o"
    subprocess.run([cxx, *_flags(), "-c", str(CSRC / "tq2_op_executorch.cpp"), "-o", str(obj)],
                   check=True, capture_output=True, text=True)
    assert obj.stat().st_size > 0


def _cmake() -> str:
    """CMake >= 3.28 the way the kernel build finds it (the venv's, the PyPI package's, PATH)."""
    from bitexport.errors import EnvironmentProblem
    from bitexport.runtime_ops import library

    try:
        return library._find_cmake()
    except EnvironmentProblem:
        return _require("cmake >= 3.28 (pip install cmake)", None)


def _arm_instructions(obj: Path) -> set[str]:
    """Mnemonics of the dot-product / matrix-multiply instructions in an aarch64 object/archive."""
    dis = subprocess.run([_require("aarch64-linux-gnu-objdump", OBJDUMP), "-d", str(obj)],
                         check=True, capture_output=True, text=True).stdout
    found = set()
    for line in dis.splitlines():
        fields = line.split("\t")  # "  40:", "4e8094a0 ", "sdot", "v0.4s, v5.16b, v0.16b"
        if len(fields) > 2 and fields[2].strip() in ("sdot", "udot", "smmla", "usmmla", "ummla"):
            found.add(fields[2].strip())
    return found


def test_ios_kernel_library_recipe_builds_for_arm64(tmp_path):
    """ios_demo/scripts/kernels/CMakeLists.txt, the recipe build_kernels_ios.sh runs with Apple's
    toolchain, configured here with the aarch64 cross compiler: it must build, register the
    operator, use the frameworks' thread pool, not call the logger release frameworks lack, and
    keep the ARM paths (its flags must not drop the dotprod / i8mm code)."""
    cxx = _require("aarch64-linux-gnu-g++", CXX)
    nm = _require("aarch64-linux-gnu-nm", NM)
    cmake = _cmake()
    build = tmp_path / "build"
    subprocess.run(
        [cmake, "-S", str(ROOT / "ios_demo/scripts/kernels"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64", f"-DCMAKE_CXX_COMPILER={cxx}",
         f"-DBITEXPORT_CSRC={CSRC}", f"-DEXECUTORCH_INCLUDE_DIR={_et_include()}"],
        check=True, capture_output=True, text=True,
    )
    subprocess.run([cmake, "--build", str(build)], check=True, capture_output=True, text=True)
    lib = build / "libbitexport_kernels.a"
    symbols = subprocess.run([nm, "-C", str(lib)], check=True, capture_output=True, text=True).stdout
    defined = {line.split(" ", 2)[2] for line in symbols.splitlines() if line[17:19] in ("T ", "W ")}
    undefined = {line.split(" U ", 1)[1] for line in symbols.splitlines() if " U " in line}
    assert any(s.startswith("bitexport::tq2::tq2_linear_f32") for s in defined)
    assert any("register_kernel" in s for s in undefined), "no operator registration in the library"
    assert any(s.startswith("executorch::extension::parallel_for") for s in undefined), "not on the thread pool"
    assert not any("vlogf" in s for s in undefined), "calls ExecuTorch's logger, absent from release frameworks"
    assert not any("bitexport_tq2_linear_f32" in s for s in defined), "the desktop-only C entry points got in"
    for path in ("groups_neon(", "groups_neon_dotprod(", "groups_neon_i8mm(", "quantize_neon("):
        assert any(s.startswith(f"bitexport::tq2::detail::{path}") for s in defined), path
    assert {"sdot", "smmla"} <= _arm_instructions(lib)


# A stand-in for ExecuTorch's top-level project: just enough for bitexport_kernels.cmake (its
# include roots and the targets it links), so the Android recipe can be configured and built here
# with the aarch64 cross compiler in place of the NDK.
_ET_STUB = """
cmake_minimum_required(VERSION 3.24)
project(executorch LANGUAGES CXX)
add_library(executorch_core INTERFACE)
add_library(extension_threadpool INTERFACE)
"""


def test_android_kernel_recipe_builds_for_arm64(tmp_path):
    """android_demo/scripts/bitexport_kernels.cmake, injected into ExecuTorch's Android build by
    build_aar_with_kernels.sh: it must compile every ARM path (its flags must not drop the dotprod
    / i8mm code) and use the runtime's thread pool."""
    cxx = _require("aarch64-linux-gnu-g++", CXX)
    nm = _require("aarch64-linux-gnu-nm", NM)
    cmake = _cmake()
    src = tmp_path / "src" / "executorch"
    src.mkdir(parents=True)
    (src / "CMakeLists.txt").write_text(_ET_STUB)
    for sub in ("runtime", "extension"):  # <executorch/...> headers, as in a source checkout
        (src / sub).symlink_to(_et_include() / "executorch" / sub)
    build = tmp_path / "build"
    subprocess.run(
        [cmake, "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64", f"-DCMAKE_CXX_COMPILER={cxx}",
         f"-DCMAKE_PROJECT_executorch_INCLUDE={ROOT / 'android_demo/scripts/bitexport_kernels.cmake'}",
         f"-DBITEXPORT_CSRC={CSRC}"],
        check=True, capture_output=True, text=True,
    )
    res = subprocess.run([cmake, "--build", str(build), "--target", "bitexport_kernels"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lib = build / "libbitexport_kernels.a"
    symbols = subprocess.run([nm, "-C", str(lib)], check=True, capture_output=True, text=True).stdout
    defined = {line.split(" ", 2)[2] for line in symbols.splitlines() if line[17:19] in ("T ", "W ")}
    undefined = {line.split(" U ", 1)[1] for line in symbols.splitlines() if " U " in line}
    for path in ("groups_neon(", "groups_neon_dotprod(", "groups_neon_i8mm(", "quantize_neon("):
        assert any(s.startswith(f"bitexport::tq2::detail::{path}") for s in defined), path
    assert any(s.startswith("executorch::extension::parallel_for") for s in undefined), "not on the thread pool"
    assert not any("bitexport_tq2_linear_f32" in s for s in defined), "the desktop-only C entry points got in"
    assert {"sdot", "smmla"} <= _arm_instructions(lib)
