"""The physical limit of decoding: this machine's memory read bandwidth, and bytes read per token.

Decoding one token reads every weight once, so `bandwidth / bytes_per_token` is the fastest any
implementation can decode (the roofline); a variant's share of it says how much headroom is left.

The bandwidth probe is a small C program compiled on the fly (gcc -O3 -march=native -fopenmp):
NumPy's reductions run on one thread and would understate a multi-threaded decoder's bandwidth.
Without a C compiler it falls back to NumPy sums in Python threads (which release the GIL).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitexport.cache import cache_dir
from bitexport.model.config import ModelConfig

# A buffer well past the last-level cache, so the probe measures DRAM and not cache.
DEFAULT_BUFFER_MB = 1024

_PROBE_C = r"""
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Sum a buffer of uint64 with every thread reading its own contiguous slice (streamed reads,
   what a GEMV over packed weights does); print one GB/s figure per repetition. */
int main(int argc, char **argv) {
    size_t mb = (size_t)atol(argv[1]);
    int threads = atoi(argv[2]);
    int reps = atoi(argv[3]);
    size_t n = mb * 1024 * 1024 / sizeof(uint64_t);
    uint64_t *a = aligned_alloc(4096, n * sizeof(uint64_t));
    if (!a) return 1;
    omp_set_num_threads(threads);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = i;  /* first touch by the thread that reads it later */
    uint64_t sink = 0;
    for (int r = 0; r < reps; r++) {
        uint64_t total = 0;
        double t0 = omp_get_wtime();
        #pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t i = 0; i < n; i++) total += a[i];
        double dt = omp_get_wtime() - t0;
        sink += total;
        printf("%.3f\n", (double)(n * sizeof(uint64_t)) / dt / 1e9);
    }
    fprintf(stderr, "%llu\n", (unsigned long long)sink);  /* keeps the sums live */
    free(a);
    return 0;
}
"""


@dataclass
class BandwidthResult:
    threads: int
    gb_per_s: float  # median over repetitions
    best_gb_per_s: float
    buffer_mb: int
    method: str  # "c-openmp" or "numpy-threads"

    def to_dict(self) -> dict:
        return {
            "threads": self.threads,
            "gb_per_s": round(self.gb_per_s, 2),
            "best_gb_per_s": round(self.best_gb_per_s, 2),
            "buffer_mb": self.buffer_mb,
            "method": self.method,
        }


def _probe_binary() -> Path | None:
    """The compiled probe (cached by source hash), or None where no C compiler works."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    digest = hashlib.sha256(_PROBE_C.encode()).hexdigest()[:12]
    exe = cache_dir("bandwidth") / f"readbw-{digest}"
    if exe.is_file():
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "readbw.c"
        src.write_text(_PROBE_C)
        out = Path(tmp) / "readbw"
        proc = subprocess.run([cc, "-O3", "-march=native", "-fopenmp", str(src), "-o", str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        shutil.move(str(out), exe)  # rename into place: a concurrent run never sees half a file
    return exe


def _numpy_probe(buffer_mb: int, threads: int, repeats: int) -> list[float]:
    a = np.arange(buffer_mb * 1024 * 1024 // 8, dtype=np.uint64)
    chunks = np.array_split(a, threads)
    rates = []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(np.sum, chunks))
            rates.append(a.nbytes / (time.perf_counter() - t0) / 1e9)
    return rates


def measure_bandwidth(threads: int, buffer_mb: int = DEFAULT_BUFFER_MB, repeats: int = 7) -> BandwidthResult:
    """Read bandwidth with `threads` threads over a `buffer_mb` buffer (the first pass is dropped)."""
    exe = _probe_binary()
    if exe is not None:
        proc = subprocess.run([str(exe), str(buffer_mb), str(threads), str(repeats + 1)],
                              capture_output=True, text=True, check=True)
        rates = [float(x) for x in proc.stdout.split()][1:]
        method = "c-openmp"
    else:
        rates = _numpy_probe(buffer_mb, threads, repeats + 1)[1:]
        method = "numpy-threads"
    return BandwidthResult(threads, statistics.median(rates), max(rates), buffer_mb, method)


# --- bytes read per decoded token -------------------------------------------------------------

# bits per weight of the formats the variants store their head/embedding in
FORMAT_BITS = {
    "fp32": 32.0,
    "f32": 32.0,
    "fp16": 16.0,
    "f16": 16.0,
    "bf16": 16.0,
    "int8": 8.0,
    # int4 groupwise, group 32, one fp32 scale a group (torchao / MatMulNBits block 32 layouts);
    # formats that also store zero points read a little more: this is the lower bound
    "int4": 4.0 + 32.0 / 32,
    "q6_k": 6.5625,  # llama.cpp Q6_K: 210 bytes per 256 weights
}


def format_bits(name: str) -> float:
    """Bits per weight of a head/embedding format label: 'fp32', 'F16', 'int8', 'int4-block32'
    (onnx MatMulNBits: fp32 scale a block), 'int4-group32' (XNNPACK: bf16 scale a group),
    'int4-per-row' (one scale a row: negligible)."""
    key = name.lower()
    if key.startswith("int4"):
        rest = key[4:]
        digits = "".join(c for c in rest if c.isdigit())
        if "block" in rest:
            return 4.0 + 32.0 / int(digits or 32)
        if "group" in rest:
            return 4.0 + 16.0 / int(digits or 32)
        if "row" in rest:
            return 4.0
        return FORMAT_BITS["int4"]
    for prefix, bits in FORMAT_BITS.items():
        if key == prefix or key.startswith(prefix + "-") or key.startswith(prefix + "_"):
            return bits
    raise ValueError(f"unknown weight format {name!r}")


def bytes_per_token(
    cfg: ModelConfig,
    ternary_bits: float,
    head_bits: float,
    embedding_bits: float,
    context_tokens: float,
    kv_bytes_per_value: float = 4.0,
) -> dict[str, float]:
    """Bytes one decode step must read, at least: every ternary weight, the whole output head,
    one embedding row, all norms, and the K/V cache up to `context_tokens` positions."""
    counts = cfg.parameter_counts()
    ternary = counts["ternary"] * ternary_bits / 8
    # a tied head still reads the whole embedding matrix, in the head's own format
    head = cfg.vocab_size * cfg.hidden_size * head_bits / 8
    embedding_row = cfg.hidden_size * embedding_bits / 8
    norms = counts["norms"] * 4.0
    kv = 2 * cfg.num_layers * cfg.kv_size * context_tokens * kv_bytes_per_value
    total = ternary + head + embedding_row + norms + kv
    return {"ternary": ternary, "head": head, "embedding_row": embedding_row, "norms": norms, "kv_cache": kv,
            "total": total}


def roofline_tokens_per_s(total_bytes: float, gb_per_s: float) -> float:
    return gb_per_s * 1e9 / total_bytes if total_bytes else 0.0


def main(argv: list[str] | None = None) -> int:
    """`python -m bitexport.bench.bandwidth [THREADS...]`: print the probe's figures as JSON."""
    threads = [int(x) for x in (argv if argv is not None else sys.argv[1:])] or [1, os.cpu_count() or 1]
    print(json.dumps([measure_bandwidth(t).to_dict() for t in threads], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
