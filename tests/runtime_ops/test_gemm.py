"""The x86 token-blocked prefill GEMM (tq2_kernel_x86.cpp's gemm tiles, tq2_kernel.cpp's gemm_task
and 2-D grid), bit for bit against an independent numpy statement of the arithmetic and against
the portable path, through the library's C entry point (no .pte needed, so M can sweep 1..130).

Shapes are chosen off the blocking: row blocks of up to 16 groups (64 rows), token tiles of 8 and
token blocks of up to 64, K chunks of at most 15 blocks of 128. A path this CPU lacks is skipped
(the AVX-512 VNNI twin runs on a VNNI machine: BITEXPORT_TQ2_ISA is not needed, the test names the
path itself).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from bitexport.runtime_ops import library
from bitexport.runtime_ops.tq2_layout import pack_tq2

X86_PATHS = ("avx2", "avx512vnni")


@pytest.fixture(scope="module")
def c_linear():
    library.load_kernels()
    h = library.kernels_handle()
    f = h.bitexport_tq2_linear_f32
    f.restype = ctypes.c_double
    f.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_char_p, ctypes.c_int64]
    return f


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(request.param)
    yield request.param
    portable_lib._unsafe_reset_threadpool(1)


def _run(f, isa: str, x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor:
    m, k = x.shape
    y = torch.full((m, n), float("nan"))
    sec = f(x.data_ptr(), packed.data_ptr(), scale.data_ptr(), y.data_ptr(), m, k, n, isa.encode(), 1)
    if sec < 0:
        pytest.skip(f"this CPU has no {isa}")
    return y


def _numpy_reference(x: np.ndarray, codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """tq2_layout.h's arithmetic in numpy float32 (written apart from the package's reference)."""
    m = np.maximum(np.abs(x).max(axis=1), np.float32(1e-5)).astype(np.float32)
    s = (np.float32(127.0) / m).astype(np.float32)
    xq = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int64)
    acc = xq @ codes.astype(np.int64).T
    return ((acc.astype(np.float32) / s[:, None]).astype(np.float32) * scale[None, :]).astype(np.float32)


def _problem(n: int, k: int, m: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g) * 0.5 + 0.01
    x = torch.randn(m, k, generator=g) * 2.0
    return codes, scale, x


def _check(f, isa, codes, scale, x):
    n = codes.shape[0]
    packed = pack_tq2(codes)
    got = _run(f, isa, x, packed, scale, n)
    want = torch.from_numpy(_numpy_reference(x.numpy(), codes.numpy(), scale.numpy()))
    portable = _run(f, "portable", x, packed, scale, n)
    assert torch.equal(portable, want)
    if not torch.equal(got, want):
        bad = (got != want).nonzero()
        raise AssertionError(f"{isa}: {len(bad)} of {got.numel()} outputs differ, first at "
                             f"(token, row) {tuple(bad[0].tolist())}: {got[tuple(bad[0])]} != "
                             f"{want[tuple(bad[0])]}")


@pytest.mark.parametrize("isa", X86_PATHS)
def test_every_token_count_1_to_130(c_linear, threads, isa):
    """M = 1..130: every token-tile remainder (1..7 after 8s), one and several token blocks (64),
    the M = 1 GEMV; N = 75 leaves a partial row group and a second, short row block."""
    n, k = 75, 300
    codes, scale, x = _problem(n, k, 130, seed=11)
    packed = pack_tq2(codes)
    want = torch.from_numpy(_numpy_reference(x.numpy(), codes.numpy(), scale.numpy()))
    for m in range(1, 131):
        got = _run(c_linear, isa, x[:m].contiguous(), packed, scale, n)
        assert torch.equal(got, want[:m]), f"{isa} m={m}: max diff {(got - want[:m]).abs().max()}"


@pytest.mark.parametrize("isa", X86_PATHS)
@pytest.mark.parametrize(
    "n,k,m",
    [
        (1, 1, 2),        # one weight
        (3, 127, 9),      # one partial block, a partial group, 8 + 1 tokens
        (64, 1920, 8),    # exactly one row block, exactly one K chunk (15 blocks)
        (65, 1921, 17),   # one row past the block, one weight past the chunk (2 chunks: 8 + 8)
        (260, 2560, 67),  # 65 groups (several row blocks), 20 blocks as 10 + 10, 64 + 3 tokens
        (129, 4000, 33),  # 32 blocks (3 chunks of <= 11), 4 token tiles + 1
        (4, 6912, 24),    # the 2B down_proj K (54 blocks, 4 chunks), one group: a token grid
    ],
)
def test_shapes_off_the_blocking(c_linear, threads, isa, n, k, m):
    _check(c_linear, isa, *_problem(n, k, m, seed=n * 13 + k + m))


@pytest.mark.parametrize("isa", X86_PATHS)
def test_rounding_ties(c_linear, threads, isa):
    """Activations that land exactly on .5 after scaling (max |x| = 127 gives s = 1): xq rounds
    half to even (2.5 -> 2, -3.5 -> -4), as in the reference."""
    n, k, m = 37, 260, 11
    codes, scale, _ = _problem(n, k, m, seed=5)
    g = torch.Generator().manual_seed(6)
    x = torch.randint(-126, 126, (m, k), generator=g).float() + 0.5
    x[:, 0] = 127.0
    x[1::2, 3] = -127.0
    _check(c_linear, isa, codes, scale, x)


@pytest.mark.parametrize("isa", X86_PATHS)
def test_largest_sums_stay_exact(c_linear, threads, isa):
    """Every weight +1 (code 2) or every weight -1 against activations at full scale: the largest
    int16 partial sums the AVX2 tile forms (15 blocks a chunk) and large int32 totals."""
    k, m = 128 * 30, 10  # two chunks of exactly 15 blocks
    x = torch.full((m, k), 3.0)
    x[1::2] = -3.0
    for w in (1, -1):
        codes = torch.full((8, k), w, dtype=torch.int8)
        _check(c_linear, isa, codes, torch.ones(8), x)
