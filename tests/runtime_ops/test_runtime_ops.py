"""bitexport.runtime_ops: the tq2 layout, the operator's reference, and the C++ ExecuTorch kernels
(every instruction-set path) checked bit for bit against the reference through real .pte files.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from bitexport.runtime_ops import library
from bitexport.runtime_ops.ops import tq2_linear_reference
from bitexport.runtime_ops.tq2_layout import (
    bits_per_weight,
    pack_tq2,
    packed_shape,
    unpack_tq2,
)

K_VALUES = (32, 100, 128, 300, 1536)
N_VALUES = (1, 7, 64, 129)
ISAS = ("portable", "avx2", "avx512vnni", "neon", "neon_dotprod", "neon_i8mm")
# Each CPU runs one ladder; a path is available when it is on the ladder of the best one, below it.
_LADDERS = (("portable", "avx2", "avx512vnni"), ("portable", "neon", "neon_dotprod", "neon_i8mm"))


def _has_path(name: str, best: str) -> bool:
    return any(name in l and best in l and l.index(name) <= l.index(best) for l in _LADDERS)


def _codes(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)


def _scales(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.rand(n, generator=g) * 0.5 + 0.01


def _acts(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 2000)
    x = torch.randn(shape, generator=g) * 2.0
    if x.numel():
        # Values that land exactly on .5 after scaling exercise round-half-to-even.
        x.view(-1, shape[-1])[:, 0] = 127.0
        x.view(-1, shape[-1])[:, -1] = 0.5
    return x


# ----------------------------------------------------------------------------- layout


def test_pack_matches_documented_layout_and_round_trips():
    n, k = 7, 300  # neither a multiple of the group (4) nor of the block (128)
    codes = _codes(n, k, seed=1)
    packed = pack_tq2(codes)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == packed_shape(n, k) == (2, 384)
    flat = packed.reshape(-1).tolist()
    kb = 3
    # Walk every stored 2-bit field with the formula of tq2_layout.h, padding included.
    for row in range(8):
        for kk in range(kb * 128):
            g, r = divmod(row, 4)
            b, within = divmod(kk, 128)
            q, j = divmod(within, 32)
            byte = flat[g * kb * 128 + b * 128 + r * 32 + j]
            code = (byte >> (2 * q)) & 3
            want = int(codes[row, kk]) + 1 if (row < n and kk < k) else 1
            assert code == want, (row, kk)
    assert torch.equal(unpack_tq2(packed, n, k), codes)


def test_pack_known_bytes():
    codes = torch.zeros(1, 128, dtype=torch.int8)
    codes[0, 0] = 1  # byte 0 bits 0-1 -> 2
    codes[0, 32] = -1  # byte 0 bits 2-3 -> 0
    codes[0, 97] = 1  # byte 1 bits 6-7 -> 2
    packed = pack_tq2(codes)
    assert packed.shape == (1, 128)
    assert packed[0, 0].item() == 0b01_01_00_10
    assert packed[0, 1].item() == 0b10_01_01_01
    assert packed[0, 2].item() == 0b01010101
    # rows 1-3 of the group are padding: all weights 0 (code 1)
    assert bool((packed[0, 32:] == 0b01010101).all())


@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("n", N_VALUES)
def test_round_trip_shapes(n, k):
    codes = _codes(n, k, seed=n * 7 + k)
    assert torch.equal(unpack_tq2(pack_tq2(codes), n, k), codes)


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError):
        pack_tq2(torch.tensor([[2, 0]], dtype=torch.int8))
    with pytest.raises(ValueError):
        pack_tq2(torch.zeros(4, dtype=torch.int8))
    with pytest.raises(ValueError):
        unpack_tq2(torch.zeros(1, 128, dtype=torch.uint8), 5, 128)


@pytest.mark.parametrize(
    "n,k", [(1536, 4096), (4096, 1536), (2560, 6912), (6912, 2560), (640, 2560), (1536, 1536)]
)
def test_bits_per_weight(n, k):
    packed = pack_tq2(torch.zeros(n, k, dtype=torch.int8))
    stored_bits = packed.numel() * 8 + n * 32  # codes + one float32 scale a row
    assert stored_bits / (n * k) == pytest.approx(bits_per_weight(n, k))
    assert bits_per_weight(n, k) <= 2.1


# ----------------------------------------------------------------------------- reference


def _numpy_reference(x: np.ndarray, codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The arithmetic of tq2_layout.h, written independently in numpy float32."""
    x = x.astype(np.float32).reshape(-1, x.shape[-1])
    m = np.maximum(np.abs(x).max(axis=1), np.float32(1e-5)).astype(np.float32)
    s = (np.float32(127.0) / m).astype(np.float32)
    xq = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int64)
    acc = xq @ codes.astype(np.int64).T
    return ((acc.astype(np.float32) / s[:, None]).astype(np.float32) * scale[None, :]).astype(
        np.float32
    )


@pytest.mark.parametrize("m", [1, 2, 5])
def test_reference_matches_independent_numpy(m):
    n, k = 129, 300
    codes, scale, x = _codes(n, k, 3), _scales(n, 3), _acts((m, k), 3)
    got = tq2_linear_reference(x, codes, scale)
    want = _numpy_reference(x.numpy(), codes.numpy(), scale.numpy())
    assert np.array_equal(got.numpy(), want)


def test_eager_op_equals_numpy_arithmetic():
    """The eager op (what export traces and the Python runner falls back on) against the numpy
    statement of tq2_layout.h's arithmetic, not against the op's own reference function."""
    n, k = 64, 300
    codes, scale = _codes(n, k, 4), _scales(n, 4)
    packed = pack_tq2(codes)
    for shape in [(1, k), (5, k), (2, 3, k), (k,), (0, k)]:
        x = _acts(shape, 4)
        want = torch.from_numpy(_numpy_reference(x.numpy(), codes.numpy(), scale.numpy()).reshape(*shape[:-1], n))
        got = torch.ops.bitexport.tq2_linear(x, packed, scale, n)
        assert got.shape == (*shape[:-1], n)
        assert torch.equal(got, want)
        out = torch.empty(0)
        res = torch.ops.bitexport.tq2_linear.out(x, packed, scale, n, out=out)
        assert res is out and torch.equal(out, want)
    # the comparison sees a wrong weight: one flipped code changes the output
    wrong = codes.clone()
    wrong[0, 0] = 1 if int(codes[0, 0]) != 1 else -1
    x = _acts((5, k), 4)
    want = torch.from_numpy(_numpy_reference(x.numpy(), codes.numpy(), scale.numpy()))
    assert not torch.equal(torch.ops.bitexport.tq2_linear(x, pack_tq2(wrong), scale, n), want)


def test_registration_is_idempotent():
    import gc
    import importlib

    from bitexport.runtime_ops import ops

    ops.register()
    lib = ops._LIBRARY
    importlib.reload(ops)  # registers nothing twice, and keeps the Library that holds the ops
    ops.register()
    assert ops._LIBRARY is lib
    gc.collect()
    x, packed, scale = torch.randn(2, 8), pack_tq2(torch.zeros(3, 8, dtype=torch.int8)), torch.ones(3)
    assert torch.equal(torch.ops.bitexport.tq2_linear(x, packed, scale, 3), torch.zeros(2, 3))


def test_fake_kernel_under_export():
    n, k = 7, 100
    packed, scale = pack_tq2(_codes(n, k, 5)), _scales(n, 5)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("p", packed)
            self.register_buffer("s", scale)

        def forward(self, x):
            return torch.ops.bitexport.tq2_linear(x, self.p, self.s, n)

    ep = torch.export.export(M(), (torch.randn(3, k),))
    targets = [str(nd.target) for nd in ep.graph.nodes if nd.op == "call_function"]
    assert "bitexport.tq2_linear.default" in targets


# ----------------------------------------------------------------------------- C++ kernels


@pytest.fixture(scope="session")
def kernels():
    return library.load_kernels()


def _c_api():
    h = library.kernels_handle()
    for name in ("bitexport_tq2_best_isa", "bitexport_tq2_selected_isa"):
        getattr(h, name).restype = ctypes.c_char_p
    return h


def _to_pte(module: torch.nn.Module, args, dynamic_shapes=None) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    return edge.to_executorch().buffer


_PROGRAMS = []  # executorch.runtime.Method does not keep its Program alive: these do


def _method(pte: bytes):
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(pte)
    _PROGRAMS.append(program)
    return program.load_method("forward")


class _Grid(torch.nn.Module):
    """One tq2_linear per (K, N) pair; input i has K_VALUES[i] features."""

    def __init__(self):
        super().__init__()
        self.specs = []
        for i, k in enumerate(K_VALUES):
            for n in N_VALUES:
                name = f"w{k}_{n}"
                codes = _codes(n, k, seed=k * 1000 + n)
                self.register_buffer(f"{name}_p", pack_tq2(codes))
                self.register_buffer(f"{name}_s", _scales(n, seed=k * 1000 + n))
                self.register_buffer(f"{name}_c", codes, persistent=False)
                self.specs.append((i, n, name))

    def forward(self, x32, x100, x128, x300, x1536):
        xs = (x32, x100, x128, x300, x1536)
        return tuple(
            torch.ops.bitexport.tq2_linear(
                xs[i], getattr(self, f"{name}_p"), getattr(self, f"{name}_s"), n
            )
            for i, n, name in self.specs
        )

    def reference(self, xs):
        return [
            tq2_linear_reference(xs[i], getattr(self, f"{name}_c"), getattr(self, f"{name}_s"))
            for i, n, name in self.specs
        ]


@pytest.fixture(scope="session")
def grid_program(kernels):
    module = _Grid()
    tokens = torch.export.Dim("tokens", min=1, max=64)
    args = tuple(torch.randn(2, k) for k in K_VALUES)
    pte = _to_pte(module, args, dynamic_shapes=tuple({0: tokens} for _ in K_VALUES))
    return module, _method(pte), pte


@pytest.fixture
def isa(request, kernels, monkeypatch):
    name = request.param
    best = _c_api().bitexport_tq2_best_isa().decode()
    if not _has_path(name, best):
        pytest.skip(f"this CPU has no {name} (best: {best})")
    monkeypatch.setenv("BITEXPORT_TQ2_ISA", name)
    assert _c_api().bitexport_tq2_selected_isa().decode() == name
    return name


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("m", [1, 2, 3, 17, 64])
def test_kernel_bit_exact_grid(grid_program, isa, m):
    module, method, _ = grid_program
    xs = tuple(_acts((m, k), seed=m * 31 + k) for k in K_VALUES)
    got = method.execute(xs)
    want = module.reference(xs)
    assert len(got) == len(want)
    for (i, n, name), g, w in zip(module.specs, got, want):
        assert g.shape == w.shape == (m, n), name
        assert torch.equal(g, w), f"{isa} {name} m={m}: max diff {(g - w).abs().max()}"


class _Mixed(torch.nn.Module):
    """tq2_linear between XNNPACK partitions, on a 3-D input."""

    def __init__(self, k: int, n: int):
        super().__init__()
        self.dense = torch.nn.Linear(k, k)
        self.n = n
        self.codes = _codes(n, k, seed=77)
        self.register_buffer("p", pack_tq2(self.codes))
        self.register_buffer("s", _scales(n, seed=77))
        self.register_buffer("bias", torch.randn(n))

    def forward(self, x):
        h = self.dense(x)
        y = torch.ops.bitexport.tq2_linear(x * 2.0, self.p, self.s, self.n) + self.bias
        return h, y


@pytest.fixture(scope="session")
def mixed_program(kernels):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module = _Mixed(300, 129).eval()
    x = _acts((2, 3, 300), seed=9)
    ep = torch.export.export(module, (x,))
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph
    calls = [str(nd.target) for nd in graph.nodes if nd.op == "call_function"]
    return module, x, calls, _method(edge.to_executorch().buffer)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_kernel_3d_between_xnnpack_partitions(mixed_program, isa):
    module, x, calls, method = mixed_program
    assert any("executorch_call_delegate" in c for c in calls)
    assert any("tq2_linear" in c for c in calls)
    h, y = method.execute((x,))
    with torch.no_grad():
        h_ref = module.dense(x)
    y_ref = tq2_linear_reference(x * 2.0, module.codes, module.s) + module.bias
    assert y.shape == (2, 3, module.n)
    assert torch.equal(y, y_ref)
    assert torch.allclose(h, h_ref, atol=1e-4, rtol=1e-4)


def test_kernel_zero_rows(kernels):
    k, n = 100, 7

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("p", pack_tq2(_codes(n, k, 8)))
            self.register_buffer("s", _scales(n, 8))

        def forward(self, x):
            return torch.ops.bitexport.tq2_linear(x, self.p, self.s, n)

    x = torch.zeros(0, k)
    (y,) = _method(_to_pte(M(), (x,))).execute((x,))
    assert tuple(y.shape) == (0, n)


def test_load_kernels_is_cached_and_loads_once(kernels):
    assert library.load_kernels() == kernels
    assert kernels.is_file()
    assert kernels.parent.parent == library.cache_root() or os.environ.get("BITEXPORT_KERNELS_LIB")


def _run_python(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("BITEXPORT_KERNELS_LIB", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_pte_without_kernels_fails_with_missing_operator(tmp_path, grid_program):
    pte = tmp_path / "m.pte"
    pte.write_bytes(grid_program[2])
    res = _run_python(
        f"""
        from executorch.runtime import Runtime
        prog = Runtime.get().load_program({str(pte)!r})
        try:
            prog.load_method("forward")
        except Exception as e:
            print("LOAD FAILED:", e)
        else:
            print("LOADED")
        """
    )
    out = res.stdout + res.stderr
    assert "LOAD FAILED" in out, out
    assert "Missing operator" in out and "bitexport::tq2_linear.out" in out, out


def test_environment_problems_name_the_fix(tmp_path):
    res = _run_python(
        """
        import os
        from bitexport.errors import EnvironmentProblem
        from bitexport.runtime_ops import library
        try:
            library.load_kernels()
        except EnvironmentProblem as e:
            print("MISSING LIB:", e)
        os.environ.pop("BITEXPORT_KERNELS_LIB")
        os.environ["PATH"] = "/nonexistent"
        os.environ.pop("CXX", None)
        try:
            library.build_kernels()
        except EnvironmentProblem as e:
            print("NO COMPILER:", e)
        """,
        {"BITEXPORT_KERNELS_LIB": str(tmp_path / "nope.so"), "BITEXPORT_CACHE": str(tmp_path)},
    )
    out = res.stdout + res.stderr
    assert "MISSING LIB:" in out and "BITEXPORT_KERNELS_LIB" in out, out
    assert "NO COMPILER:" in out and "g++" in out, out


_AARCH64_HARNESS = r"""
#include <cstdio>
#include <cstdint>
#include <vector>
#include "tq2_kernel.h"
#include "tq2_layout.h"
using namespace bitexport::tq2;
int main() {
  int64_t m, k, n;
  if (std::fread(&m, 8, 1, stdin) != 1 || std::fread(&k, 8, 1, stdin) != 1 ||
      std::fread(&n, 8, 1, stdin) != 1) return 1;
  std::vector<float> x(m * k), s(n), y(m * n);
  std::vector<uint8_t> p(row_groups(n) * group_bytes(k));
  if (std::fread(x.data(), 4, x.size(), stdin) != x.size() ||
      std::fread(s.data(), 4, s.size(), stdin) != s.size() ||
      std::fread(p.data(), 1, p.size(), stdin) != p.size()) return 1;
  tq2_linear_f32({x.data(), p.data(), s.data(), y.data(), m, k, n}, best_supported_isa());
  std::fwrite(y.data(), 4, y.size(), stdout);
  return 0;
}
"""


def test_aarch64_build_is_bit_exact_under_qemu(tmp_path):
    import shutil

    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
    if not (cxx and qemu):
        pytest.skip("needs g++-aarch64-linux-gnu and qemu-user")
    import executorch

    inc = os.path.join(executorch.__path__[0], "include")
    csrc = os.path.join(os.path.dirname(library.__file__), "csrc")
    (tmp_path / "main.cpp").write_text(_AARCH64_HARNESS)
    exe = tmp_path / "t_arm"
    # Every source of the library builds for aarch64 (x86 code compiles to nothing there); the
    # kernel itself runs without the ExecuTorch thread pool (parallel_for's serial fallback).
    common = ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math", "-DNDEBUG",
              "-DC10_USING_CUSTOM_GENERATED_MACROS", "-DET_LOG_ENABLED=0", f"-I{inc}",
              f"-I{inc}/executorch/runtime/core/portable_type/c10", f"-I{csrc}"]
    for src in ("tq2_kernel_x86.cpp", "tq2_op_executorch.cpp", "tq2_c_api.cpp"):
        subprocess.run([cxx, *common, "-DET_USE_THREADPOOL", "-fPIC", "-c",
                        os.path.join(csrc, src), "-o", str(tmp_path / (src + ".o"))], check=True)
    subprocess.run([cxx, *common, "-static", str(tmp_path / "main.cpp"),
                    os.path.join(csrc, "tq2_kernel.cpp"), os.path.join(csrc, "tq2_kernel_arm.cpp"),
                    "-o", str(exe)], check=True)
    for m, k, n in [(1, 300, 7), (3, 1536, 129), (2, 32, 1)]:
        codes, scale, x = _codes(n, k, 11), _scales(n, 11), _acts((m, k), 11)
        blob = (np.array([m, k, n], np.int64).tobytes() + x.numpy().tobytes()
                + scale.numpy().tobytes() + pack_tq2(codes).numpy().tobytes())
        res = subprocess.run([qemu, str(exe)], input=blob, capture_output=True, check=True)
        y = torch.from_numpy(np.frombuffer(res.stdout, np.float32).copy()).view(m, n)
        assert torch.equal(y, tq2_linear_reference(x, codes, scale)), (m, k, n)


@pytest.mark.slow
def test_concurrent_builds_into_empty_cache(tmp_path):
    code = """
        from bitexport.runtime_ops import load_kernels
        print("LIB", load_kernels())
        """
    env = dict(os.environ, BITEXPORT_CACHE=str(tmp_path))
    env.pop("BITEXPORT_KERNELS_LIB", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    libs = set()
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e
        libs.add(o.split("LIB", 1)[1].strip())
    assert len(libs) == 1
    built = list((tmp_path / "runtime_ops").iterdir())
    assert len(built) == 1 and not built[0].name.startswith(".build")
