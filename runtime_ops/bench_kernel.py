"""Micro-benchmark of the tq2 kernels: GEMV (and optionally prefill) time per shape, thread count
and instruction-set path. Timing only, no assertions.

    python -m bitexport.runtime_ops.bench_kernel --out bench.json [--tokens 1,128] [--repeat 7]

Shapes are N x K = out_features x in_features. "kernel" times call the C entry point in a loop
(no Python in the timed region); "executorch" times run a one-op .pte through
executorch.runtime (Method.execute from Python, so runtime and binding overhead included).
GOP/s counts a multiply-add as 2 ops; GB/s is packed weight bytes read per second.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import time

import torch

SHAPES = ((1536, 4096), (4096, 1536))
# Each CPU runs one ladder (csrc/tq2_kernel.h), from least to most preferred.
LADDERS = (("portable", "avx2", "avx512vnni"), ("portable", "neon", "neon_dotprod", "neon_i8mm"))


def _paths_up_to(best: str) -> list[str]:
    """The paths of best's ladder, up to and including best."""
    for ladder in LADDERS:
        if best in ladder:
            return list(ladder[: ladder.index(best) + 1])
    return [best]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _kernel_fn():
    from bitexport.runtime_ops import library

    h = library.kernels_handle()
    f = h.bitexport_tq2_linear_f32
    f.restype = ctypes.c_double
    f.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_char_p, ctypes.c_int64]
    h.bitexport_tq2_best_isa.restype = ctypes.c_char_p
    return f, h.bitexport_tq2_best_isa().decode()


def _time_kernel(f, x, packed, scale, y, m, k, n, isa, repeat, min_time):
    """(best wall seconds a call, median CPU seconds a call of the calling thread)."""
    args = (x.data_ptr(), packed.data_ptr(), scale.data_ptr(), y.data_ptr(), m, k, n, isa.encode())
    f(*args, 3)  # warm up caches, threads
    iters = 1
    while f(*args, iters) * iters < min_time and iters < 1 << 20:
        iters *= 2
    walls, cpus = [], []
    for _ in range(repeat):
        c0 = time.thread_time()
        walls.append(f(*args, iters))
        cpus.append((time.thread_time() - c0) / iters)
    return min(walls), sorted(cpus)[len(cpus) // 2]


def _time_executorch(n, k, m, packed, scale, repeat, min_time):
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("p", packed)
            self.register_buffer("s", scale)

        def forward(self, x):
            return torch.ops.bitexport.tq2_linear(x, self.p, self.s, n)

    x = torch.randn(m, k)
    pte = to_edge_transform_and_lower(torch.export.export(One(), (x,))).to_executorch().buffer
    program = Runtime.get().load_program(pte)
    method = program.load_method("forward")
    for _ in range(3):
        method.execute((x,))
    best = float("inf")
    for _ in range(repeat):
        iters, t0 = 0, time.perf_counter()
        while True:
            method.execute((x,))
            iters += 1
            el = time.perf_counter() - t0
            if el >= min_time:
                break
        best = min(best, el / iters)
    del method, program
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="where to write the JSON results")
    ap.add_argument("--tokens", default="1", help="comma-separated token counts (default 1)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeat", type=int, default=7, help="timed repetitions (best is kept)")
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per repetition")
    ap.add_argument("--no-executorch", action="store_true", help="skip the .pte timings")
    args = ap.parse_args(argv)

    from bitexport.runtime_ops import load_kernels, pack_tq2
    from executorch.extension.pybindings import portable_lib

    torch.set_num_threads(1)  # torch's OpenMP workers must not spin against ours
    lib = load_kernels()
    f, best_isa = _kernel_fn()
    isas = _paths_up_to(best_isa)
    tokens = [int(t) for t in args.tokens.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    results = []
    print(f"library {lib}\ncpu {_cpu_name()}, best path {best_isa}")
    try:
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "?"
    print(f"load average before: {load} (other processes skew wall times; 'cpu us' is the calling "
          "thread's CPU time, for 1 thread)")
    print(f"{'N x K':>11} {'M':>4} {'thr':>3} {'path':>12} {'wall us':>10} {'cpu us':>10} "
          f"{'GOP/s':>7} {'GB/s':>6}")
    for n, k in SHAPES:
        g = torch.Generator().manual_seed(n + k)
        codes = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
        packed = pack_tq2(codes)
        scale = torch.rand(n, generator=g) + 0.01
        for m in tokens:
            x = torch.randn(m, k, generator=g)
            y = torch.empty(m, n)
            for th in threads:
                portable_lib._unsafe_reset_threadpool(th)
                rows = [(isa, "kernel") for isa in isas]
                if not args.no_executorch:
                    rows.append(("auto", "executorch"))
                for isa, how in rows:
                    cpu = None
                    if how == "kernel":
                        sec, cpu = _time_kernel(f, x, packed, scale, y, m, k, n, isa,
                                                args.repeat, args.min_time)
                        if th != 1:
                            cpu = None  # other threads work too: the caller's CPU time says little
                    else:
                        sec = _time_executorch(n, k, m, packed, scale, args.repeat, args.min_time)
                    gops = 2 * m * n * k / sec / 1e9
                    gbs = packed.numel() / sec / 1e9
                    label = isa if how == "kernel" else f"et:{best_isa}"
                    cpu_txt = f"{cpu * 1e6:>10.1f}" if cpu is not None else f"{'-':>10}"
                    print(f"{n:>5}x{k:<5} {m:>4} {th:>3} {label:>12} {sec * 1e6:>10.1f} "
                          f"{cpu_txt} {gops:>7.1f} {gbs:>6.1f}", flush=True)
                    results.append(dict(n=n, k=k, tokens=m, threads=th, isa=isa, via=how,
                                        seconds=sec, cpu_seconds=cpu, gops=gops,
                                        weight_gbs=gbs))
    report = dict(cpu=_cpu_name(), machine=platform.machine(), best_isa=best_isa, load=load,
                  torch=torch.__version__, library=str(lib), results=results)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
