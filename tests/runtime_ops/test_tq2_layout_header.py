"""runtime_ops/csrc/tq2_layout.h and runtime_ops/tq2_layout.py state one layout (issue 13).

A small host program includes the header alone and prints its constants, the sizes and offsets
of its typed blocks, and the code it reads (code_at) at every (n, k) of tensors packed by the
Python packer; all of it must agree with the Python module. Needs a host C++ compiler (the kernel
build needs one anyway): skipped without one, failed under CI (CI=true).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bitexport.runtime_ops import tq2_layout

CSRC = Path(__file__).resolve().parents[2] / "runtime_ops" / "csrc"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")

PROGRAM = r"""
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "tq2_layout.h"
using namespace bitexport::tq2;

int main(int argc, char** argv) {
  std::printf("BLOCK_K %lld\nBLOCK_BYTES %lld\nGROUP_ROWS %lld\nPAD_CODE %d\nCODE_BITS %d\n",
              (long long)TQ2_BLOCK_K, (long long)TQ2_BLOCK_BYTES, (long long)TQ2_GROUP_ROWS,
              (int)TQ2_PAD_CODE, TQ2_CODE_BITS);
  std::printf("sizeof_block %zu\nsizeof_group_block %zu\n", sizeof(Tq2Block), sizeof(Tq2GroupBlock));
  for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
    Tq2GroupBlock gb;
    std::printf("row_offset %d %td\n", r,
                reinterpret_cast<const unsigned char*>(&gb.rows[r]) -
                    reinterpret_cast<const unsigned char*>(&gb));
  }
  // then: for each "n k file" triple, the codes of every row < n and column < k (padding included)
  for (int a = 1; a + 2 < argc; a += 3) {
    const long long n = std::atoll(argv[a]), k = std::atoll(argv[a + 1]);
    std::FILE* f = std::fopen(argv[a + 2], "rb");
    std::vector<unsigned char> p(row_groups(n) * group_bytes(k));
    if (!f || std::fread(p.data(), 1, p.size(), f) != p.size()) return 3;
    std::fclose(f);
    std::printf("codes %lld %lld ", n, k);
    for (long long i = 0; i < row_groups(n) * TQ2_GROUP_ROWS; ++i)
      for (long long j = 0; j < blocks_per_row(k) * TQ2_BLOCK_K; ++j)
        std::putchar('0' + code_at(p.data(), i, j, k));
    std::printf("\n");
  }
  return 0;
}
"""


def _host_cxx() -> str:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        if IN_CI:
            pytest.fail("no host C++ compiler under CI")
        pytest.skip("no host C++ compiler")
    return cxx


def test_header_and_python_module_state_the_same_layout(tmp_path):
    src = tmp_path / "layout.cpp"
    src.write_text(PROGRAM)
    exe = tmp_path / "layout"
    res = subprocess.run([_host_cxx(), "-std=c++17", "-Wall", f"-I{CSRC}", str(src), "-o", str(exe)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr

    g = torch.Generator().manual_seed(3)
    shapes = [(7, 300), (4, 128), (1, 1), (9, 257)]
    args, codes = [], {}
    for n, k in shapes:
        c = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
        path = tmp_path / f"p{n}x{k}.bin"
        path.write_bytes(tq2_layout.pack_tq2(c).numpy().tobytes())
        args += [str(n), str(k), str(path)]
        codes[(n, k)] = c
    out = subprocess.run([str(exe), *args], check=True, capture_output=True, text=True).stdout

    values = {}
    row_offsets = {}
    code_lines = {}
    for line in out.splitlines():
        key, rest = line.split(" ", 1)
        if key == "row_offset":
            r, off = rest.split()
            row_offsets[int(r)] = int(off)
        elif key == "codes":
            n, k, digits = rest.split(" ", 2)
            code_lines[(int(n), int(k))] = digits.strip()
        else:
            values[key] = int(rest)

    assert values["BLOCK_K"] == tq2_layout.BLOCK_K
    assert values["BLOCK_BYTES"] == tq2_layout.BLOCK_BYTES
    assert values["GROUP_ROWS"] == tq2_layout.GROUP_ROWS
    assert values["PAD_CODE"] == tq2_layout.PAD_CODE
    assert values["BLOCK_BYTES"] * 8 == values["BLOCK_K"] * values["CODE_BITS"]
    assert values["sizeof_block"] == tq2_layout.BLOCK_BYTES
    assert values["sizeof_group_block"] == tq2_layout.BLOCK_BYTES * tq2_layout.GROUP_ROWS
    assert row_offsets == {r: r * tq2_layout.BLOCK_BYTES for r in range(tq2_layout.GROUP_ROWS)}
    for n, k in shapes:
        rows = tq2_layout.row_groups(n) * tq2_layout.GROUP_ROWS
        full = torch.full((rows, tq2_layout.blocks_per_row(k) * tq2_layout.BLOCK_K),
                          tq2_layout.PAD_CODE, dtype=torch.int64)
        full[:n, :k] = codes[(n, k)].to(torch.int64) + 1
        want = "".join(str(v) for v in full.reshape(-1).tolist())
        assert code_lines[(n, k)] == want, (n, k)
