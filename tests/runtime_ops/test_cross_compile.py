"""The runtime_ops kernels build for aarch64 (the phones' CPU) and compute there bit for bit what the
Python reference computes (issue 8).

Debian's cross compiler builds the portable kernel sources, with the pinned executorch wheel's
headers (the same headers the iOS build uses) and no ExecuTorch library, into a static test
program; qemu-aarch64 runs it on inputs written by Python; its float32 outputs must equal
`bitexport.runtime_ops.tq2_linear_reference` bit for bit. The ExecuTorch operator file is
compiled for aarch64 too, and the iOS static-library recipe (ios_demo/scripts/kernels) is built
with the same cross compiler.

Needs `apt-get install -y g++-aarch64-linux-gnu qemu-user` (CI installs it); skipped without.
"""

from __future__ import annotations

import shutil
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
QEMU = shutil.which("qemu-aarch64")
APT = "apt-get install -y g++-aarch64-linux-gnu qemu-user"

pytestmark = pytest.mark.skipif(CXX is None, reason=f"aarch64-linux-gnu-g++ not installed ({APT})")


def _et_include() -> Path:
    import executorch

    # a namespace package: no __file__
    return Path(list(executorch.__path__)[0]) / "include"


# Flags shared by every aarch64 compile here. -ffp-contract=off and -fno-fast-math as in
# runtime_ops/CMakeLists.txt: GCC contracts across statements on aarch64 by default, which
# would change float roundings. ET_LOG_ENABLED=0 and no ET_USE_THREADPOOL: no ExecuTorch library
# is linked, so logging and parallel_for must stay header-only (the serial path).
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


# The test program: reads cases (m, k, n, isa, x, packed, scale), runs the C entry point
# bitexport_tq2_linear_f32 (tq2_c_api.cpp) on each, writes every y, prints the best ISA.
DRIVER = r"""
#include <cstdint>
#include <cstdio>
#include <vector>

extern "C" const char* bitexport_tq2_best_isa();
extern "C" double bitexport_tq2_linear_f32(const float* x, const uint8_t* packed, const float* scale,
                                           float* y, int64_t m, int64_t k, int64_t n,
                                           const char* isa_name, int64_t iters);

template <typename T> static bool get(FILE* f, T* p, size_t count) {
  return std::fread(p, sizeof(T), count, f) == count;
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = std::fopen(argv[1], "rb");
  FILE* out = std::fopen(argv[2], "wb");
  if (!in || !out) return 3;
  int64_t cases = 0;
  if (!get(in, &cases, 1)) return 4;
  for (int64_t c = 0; c < cases; ++c) {
    int64_t dims[5];  // m, k, n, packed bytes, isa (0 portable, 1 auto)
    if (!get(in, dims, 5)) return 5;
    std::vector<float> x(dims[0] * dims[1]), scale(dims[2]), y(dims[0] * dims[2]);
    std::vector<uint8_t> packed(dims[3]);
    if (!get(in, x.data(), x.size()) || !get(in, packed.data(), packed.size()) ||
        !get(in, scale.data(), scale.size())) return 6;
    const char* isa = dims[4] == 0 ? "portable" : "auto";
    if (bitexport_tq2_linear_f32(x.data(), packed.data(), scale.data(), y.data(), dims[0], dims[1],
                                 dims[2], isa, 1) < 0) return 7;
    std::fwrite(y.data(), sizeof(float), y.size(), out);
  }
  std::fclose(out);
  std::printf("%s\n", bitexport_tq2_best_isa());
  return 0;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("aarch64")
    (work / "driver.cpp").write_text(DRIVER)
    exe = work / "tq2_test"
    # Static, so qemu needs no aarch64 sysroot to run it.
    cmd = [CXX, *_flags(), "-static", "-pthread", str(work / "driver.cpp"), *map(str, _kernel_sources()), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


# (m tokens, K in_features, N out_features): K and N off the 128 / 4 blocking, one token and many.
SHAPES = [(1, 128, 4), (1, 200, 13), (3, 300, 37), (7, 64, 5), (16, 512, 24), (2, 1, 3)]


def _cases(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i, (m, k, n) in enumerate(SHAPES):
        x = torch.randn(m, k, generator=g) * (10.0 ** (i % 3 - 1))
        if m > 2:
            x[1] = 0.0  # an all-zero token: the 1e-5 clamp of max|x|
            x[2, : k // 2] = torch.round(x[2, : k // 2])  # integer values hit exact .5 products more often
        codes = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
        scale = torch.rand(n, generator=g) + 0.05
        for isa in (0, 1):
            cases.append((x.contiguous(), codes, scale.contiguous(), isa))
    return cases


def _write_cases(path: Path, cases) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<q", len(cases)))
        for x, codes, scale, isa in cases:
            packed = pack_tq2(codes)
            m, k = x.shape
            f.write(struct.pack("<5q", m, k, codes.shape[0], packed.numel(), isa))
            f.write(x.numpy().astype("<f4").tobytes())
            f.write(packed.numpy().tobytes())
            f.write(scale.numpy().astype("<f4").tobytes())


@pytest.mark.skipif(QEMU is None, reason=f"qemu-aarch64 not installed ({APT}); the compile alone was checked")
def test_aarch64_kernel_is_bit_exact_with_the_python_reference(program, tmp_path):
    cases = _cases()
    _write_cases(tmp_path / "in.bin", cases)
    run = subprocess.run([QEMU, str(program), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # no x86 path exists on aarch64: "auto" must resolve to the portable kernel
    assert run.stdout.strip() == "portable"
    got = np.fromfile(tmp_path / "out.bin", dtype="<f4")
    offset = 0
    for x, codes, scale, isa in cases:
        want = tq2_linear_reference(x, codes, scale).numpy()
        y = got[offset : offset + want.size].reshape(want.shape)
        offset += want.size
        # bit for bit: compare the float32 bit patterns, so -0.0 vs 0.0 or a last-ulp slip fails
        assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), f"shape {tuple(x.shape)}x{tuple(codes.shape)} isa {isa}"
    assert offset == got.size


def test_aarch64_program_links(program):
    assert program.stat().st_size > 0
    head = program.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64


def test_executorch_operator_compiles_for_aarch64(tmp_path):
    """The registration TU (what the phones' runtime links) compiles against the pinned headers."""
    obj = tmp_path / "op.o"
    subprocess.run([CXX, *_flags(), "-c", str(CSRC / "tq2_op_executorch.cpp"), "-o", str(obj)],
                   check=True, capture_output=True, text=True)
    assert obj.stat().st_size > 0


@pytest.mark.skipif(NM is None, reason="aarch64-linux-gnu-nm not installed")
def test_ios_kernel_library_recipe_builds_for_arm64(tmp_path):
    """ios_demo/scripts/kernels/CMakeLists.txt, the recipe build_kernels_ios.sh runs with Apple's
    toolchain, configured here with the aarch64 cross compiler: it must build, register the
    operator, use the frameworks' thread pool and not call the logger release frameworks lack."""
    cmake = shutil.which("cmake", path=str(Path(sys.executable).parent)) or shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found (pip install cmake)")
    build = tmp_path / "build"
    subprocess.run(
        [cmake, "-S", str(ROOT / "ios_demo/scripts/kernels"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64", f"-DCMAKE_CXX_COMPILER={CXX}",
         f"-DBITEXPORT_CSRC={CSRC}", f"-DEXECUTORCH_INCLUDE_DIR={_et_include()}"],
        check=True, capture_output=True, text=True,
    )
    subprocess.run([cmake, "--build", str(build)], check=True, capture_output=True, text=True)
    lib = build / "libbitexport_kernels.a"
    symbols = subprocess.run([NM, "-C", str(lib)], check=True, capture_output=True, text=True).stdout
    defined = {line.split(" ", 2)[2] for line in symbols.splitlines() if line[17:19] in ("T ", "W ")}
    undefined = {line.split(" U ", 1)[1] for line in symbols.splitlines() if " U " in line}
    assert any(s.startswith("bitexport::tq2::tq2_linear_f32") for s in defined)
    assert any("register_kernel" in s for s in undefined), "no operator registration in the library"
    assert any(s.startswith("executorch::extension::parallel_for") for s in undefined), "not on the thread pool"
    assert not any("vlogf" in s for s in undefined), "calls ExecuTorch's logger, absent from release frameworks"
    assert not any("bitexport_tq2_linear_f32" in s for s in defined), "the desktop-only C entry points got in"
