"""`bitexport bench --kernels`: the tq2 kernels alone, on the real layer shapes of the models.

Two tables, written as kernels.json and kernels.md:

- GEMV (one token, a decode step's linear): GB/s of packed weights read, on 1 and 2 threads, as a
  share of the read probe (bench/bandwidth.py) on the same number of threads. The weights are
  DRAM-resident: the timed loop cycles through copies of the packed tensor that together exceed
  `rotate_mb` (1 GB by default), so no call finds its weights in a cache, as in a whole model.
- GEMM (prefill): GMAC/s at M = 1, 8, 32, 128 tokens, the kernel alone (DRAM-resident weights, the
  C entry point timed in C), and side by side in the same process through the ExecuTorch runtime
  (Method.execute from Python, one weight copy, so cache-warm): a one-op tq2 program and the
  one-linear program XNNPACK runs for `--weights int4` (torchao int4 weights, per-row scale, int8
  dynamic activations; the recipe of targets/executorch/passes/int4.py).

Timing only: nothing here asserts a speed.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bitexport.bench import bandwidth as bw
from bitexport.bench import proc
from bitexport.errors import InputError
from bitexport.model.config import ModelConfig

log = logging.getLogger("bitexport")

DEFAULT_SHAPES = ("2b", "large")
# ExecuTorch tq2 (the op), XNNPACK int4 (the stock path), each through the ExecuTorch runtime
ET_IMPLS = ("et-tq2", "et-xnnpack-int4")


@dataclass(frozen=True)
class KernelBenchOptions:
    out: Path
    shapes: tuple[str, ...] = DEFAULT_SHAPES  # model shapes (bench/shapes.py) whose linears are timed
    threads: tuple[int, ...] = (1, 2)
    tokens: tuple[int, ...] = (1, 8, 32, 128)  # M of the GEMM rows (M = 1 is the GEMV)
    rotate_mb: int = 1024  # packed weight copies cycled through, at least this many MB in all
    min_time_s: float = 0.2  # seconds a timed repetition runs at least
    repeats: int = 3  # timed repetitions; the best is kept (noise only slows a kernel down)
    executorch: bool = True  # also time tq2 and XNNPACK int4 through the ExecuTorch runtime
    bandwidth_mb: int = bw.DEFAULT_BUFFER_MB

    def __post_init__(self) -> None:
        from bitexport.bench.shapes import SHAPES

        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown:
            raise InputError(f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
        if not self.threads or min(self.threads) < 1:
            raise InputError("--threads must be at least 1")
        if not self.tokens or min(self.tokens) < 1:
            raise InputError("kernel token counts must be at least 1")
        if self.rotate_mb < 1 or self.repeats < 1 or self.min_time_s <= 0:
            raise InputError("--kernel-rotate-mb and the repetitions must be positive")


def linear_shapes(cfg: ModelConfig) -> list[tuple[str, int, int]]:
    """(layers, N, K) of every distinct ternary linear shape of a decoder layer."""
    shapes: dict[tuple[int, int], list[str]] = {}
    for name, n, k in (
        ("q_proj/o_proj", cfg.num_heads * cfg.head_dim, cfg.hidden_size),
        ("k_proj/v_proj", cfg.kv_size, cfg.hidden_size),
        ("gate_proj/up_proj", cfg.intermediate_size, cfg.hidden_size),
        ("down_proj", cfg.hidden_size, cfg.intermediate_size),
    ):
        shapes.setdefault((n, k), []).append(name)
    return [("+".join(names), n, k) for (n, k), names in shapes.items()]


def _c_rotate():
    from bitexport.runtime_ops import library

    h = library.kernels_handle()
    f = h.bitexport_tq2_linear_f32_rotate
    f.restype = ctypes.c_double
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                  ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_char_p,
                  ctypes.c_int64]
    h.bitexport_tq2_selected_isa.restype = ctypes.c_char_p
    return f, h.bitexport_tq2_selected_isa().decode()


def _best_of(call, opts: KernelBenchOptions) -> float:
    """Best seconds a call over `repeats` repetitions of at least min_time_s each."""
    call(1)  # warm up: threads, page faults, the activation buffers
    iters = 1
    while True:
        sec = call(iters)
        if sec * iters >= opts.min_time_s / 4 or iters >= 1 << 16:
            break
        iters *= 2
    iters = max(1, math.ceil(opts.min_time_s / max(sec, 1e-9)))
    return min(call(iters) for _ in range(opts.repeats))


def _time_kernel(f, isa: str, copies: torch.Tensor, n: int, k: int, m: int, scale: torch.Tensor,
                 opts: KernelBenchOptions) -> float:
    x = torch.randn(m, k)
    y = torch.empty(m, n)
    stride = copies.shape[1]

    def call(iters: int) -> float:
        sec = f(x.data_ptr(), copies.data_ptr(), stride, copies.shape[0], scale.data_ptr(), y.data_ptr(),
                m, k, n, isa.encode(), iters)
        if sec < 0:
            raise RuntimeError(f"the tq2 kernel refused n={n} k={k} m={m} isa={isa}")
        return sec

    return _best_of(call, opts)


def _programs(n: int, k: int, codes: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor,
              max_tokens: int) -> dict[str, bytes]:
    """The .pte of a one-op tq2 program and of a one-linear XNNPACK int4 program, dynamic in M."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, quantize_

    class Tq2(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("p", packed)
            self.register_buffer("s", scale)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.bitexport.tq2_linear(x, self.p, self.s, n)

    class Int4(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(k, n, bias=False)
            self.register_buffer("row_scale", scale.clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x) * self.row_scale

    int4 = Int4()
    quantize_(int4, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerAxis(0)),
              filter_fn=lambda mod, _: isinstance(mod, torch.nn.Linear))
    with torch.no_grad():  # the ternary codes with unit scales, as passes/int4.py stores them
        int4.linear.weight.qdata.copy_(codes)
        int4.linear.weight.scale.fill_(1.0)
        int4.linear.weight.zero_point.zero_()
    tokens = torch.export.Dim("tokens", min=1, max=max(max_tokens, 2))
    example = (torch.randn(2, k),)
    out = {}
    for key, module, parts in (("et-tq2", Tq2(), []), ("et-xnnpack-int4", int4, [XnnpackPartitioner()])):
        ep = torch.export.export(module.eval(), example, dynamic_shapes=({0: tokens},))
        out[key] = to_edge_transform_and_lower(ep, partitioner=parts).to_executorch().buffer
    return out


def _time_executorch(pte: bytes, k: int, m: int, opts: KernelBenchOptions) -> float:
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(pte)
    method = program.load_method("forward")
    x = (torch.randn(m, k),)

    def call(iters: int) -> float:
        t0 = time.perf_counter()
        for _ in range(iters):
            method.execute(x)
        return (time.perf_counter() - t0) / iters

    try:
        return _best_of(call, opts)
    finally:
        del method, program  # before the next pool reset (runner.py: set_threads)


def _row(**kw) -> dict:
    n, k, m, sec = kw["n"], kw["k"], kw["tokens"], kw["seconds"]
    kw["gmac_per_s"] = n * k * m / sec / 1e9
    kw["seconds"] = sec
    return kw


def run_kernel_bench(opts: KernelBenchOptions, step=lambda msg: log.info(msg)) -> dict:
    from executorch.extension.pybindings import portable_lib

    from bitexport.bench.shapes import SHAPES
    from bitexport.runtime_ops import load_kernels, pack_tq2

    torch.set_num_threads(1)  # torch's own workers must not compete with ExecuTorch's pool
    load_kernels()
    f, isa = _c_rotate()
    machine = proc.machine_info()
    load_start = os.getloadavg()[0]
    step(f"kernels: {machine['cpu']}, tq2 path {isa}, load average {load_start:.1f}")
    probe = {}
    for th in opts.threads:
        probe[th] = bw.measure_bandwidth(th, opts.bandwidth_mb).to_dict()
        step(f"read probe: {probe[th]['gb_per_s']:.1f} GB/s on {th} thread(s)")
    gemv, gemm = [], []
    seen: set[tuple[int, int]] = set()
    for shape in opts.shapes:
        for layers, n, k in linear_shapes(SHAPES[shape]):
            if (n, k) in seen:
                continue
            seen.add((n, k))
            g = torch.Generator().manual_seed(n * 7 + k)
            codes = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
            packed = pack_tq2(codes)
            scale = torch.rand(n, generator=g) + 0.01
            nbytes = packed.numel()
            n_copies = max(2, math.ceil(opts.rotate_mb * 1e6 / nbytes))
            copies = packed.reshape(1, -1).expand(n_copies, -1).contiguous()
            ptes = _programs(n, k, codes, packed, scale, max(opts.tokens)) if opts.executorch else {}
            base = dict(shape=shape, layers=layers, n=n, k=k, packed_bytes=nbytes)
            for th in opts.threads:
                portable_lib._unsafe_reset_threadpool(th)
                for m in opts.tokens:
                    sec = _time_kernel(f, isa, copies, n, k, m, scale, opts)
                    row = _row(**base, tokens=m, threads=th, impl=f"tq2-{isa}", weights="dram", copies=n_copies,
                               seconds=sec)
                    gemm.append(row)
                    if m == 1:
                        gbs = nbytes / sec / 1e9
                        gemv.append(dict(**base, threads=th, impl=f"tq2-{isa}", copies=n_copies, seconds=sec,
                                         weight_gb_per_s=gbs, probe_gb_per_s=probe[th]["gb_per_s"],
                                         probe_share=gbs / probe[th]["gb_per_s"]))
                        step(f"{n}x{k} GEMV {th} thr: {gbs:.1f} GB/s = "
                             f"{100 * gbs / probe[th]['gb_per_s']:.0f} % of the probe")
                    for impl, pte in ptes.items():
                        sec = _time_executorch(pte, k, m, opts)
                        gemm.append(_row(**base, tokens=m, threads=th, impl=impl, weights="cache", copies=1,
                                         seconds=sec))
                    step(f"{n}x{k} M={m} {th} thr: " + ", ".join(
                        f"{r['impl']} {r['gmac_per_s']:.1f}" for r in gemm[-1 - len(ptes):]) + " GMAC/s")
            del copies
    portable_lib._unsafe_reset_threadpool(max(opts.threads))
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine, "load_average_start": load_start, "load_average_end": os.getloadavg()[0]},
        "versions": proc.versions(),
        "isa": isa,
        "settings": {"shapes": list(opts.shapes), "threads": list(opts.threads), "tokens": list(opts.tokens),
                     "rotate_mb": opts.rotate_mb, "min_time_s": opts.min_time_s, "repeats": opts.repeats},
        "read_probe": {str(th): p for th, p in probe.items()},
        "gemv": gemv,
        "gemm": gemm,
        "notes": [
            "GEMV: packed weight bytes / seconds a call, weights cycled through copies larger than rotate_mb "
            "(DRAM-resident); probe_share = that / the read probe on the same threads",
            "GEMM: N*K*M multiply-adds / seconds; tq2-<isa> times the kernel's C entry point in C on DRAM-resident "
            "weights; et-* time Method.execute from Python (runtime and binding overhead included) on one "
            "cache-warm weight copy",
            "best of the repetitions: other processes only slow a kernel down",
        ],
    }
    write_outputs(report, Path(opts.out))
    return report


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# bitexport bench --kernels: tq2 path {report['isa']}",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average_start']:.1f} at start, "
        f"{m['load_average_end']:.1f} at end",
        "- Read probe: " + ", ".join(f"{p['gb_per_s']:.1f} GB/s on {th} thread(s)"
                                     for th, p in report["read_probe"].items()),
        "",
        "## GEMV (one token), weights in DRAM",
        "",
        "| shape | layers | N x K | threads | MB | GB/s | share of read probe |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in report["gemv"]:
        lines.append(f"| {r['shape']} | {r['layers']} | {r['n']}x{r['k']} | {r['threads']} | "
                     f"{r['packed_bytes'] / 1e6:.2f} | {r['weight_gb_per_s']:.1f} | {100 * r['probe_share']:.0f} % |")
    impls = list(dict.fromkeys(r["impl"] for r in report["gemm"]))
    lines += ["", "## GEMM GMAC/s", "",
              "| N x K | threads | M | " + " | ".join(impls) + " |",
              "|---|---:|---:|" + "---:|" * len(impls)]
    cells: dict[tuple, dict[str, float]] = {}
    for r in report["gemm"]:
        cells.setdefault((r["n"], r["k"], r["threads"], r["tokens"]), {})[r["impl"]] = r["gmac_per_s"]
    for (n, k, th, mm), by in cells.items():
        lines.append(f"| {n}x{k} | {th} | {mm} | " + " | ".join(
            f"{by[i]:.1f}" if i in by else "-" for i in impls) + " |")
    lines += ["", *[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def write_outputs(report: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "kernels.json", out / "kernels.md"
    js.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(markdown(report))
    return {"json": js, "markdown": md}


__all__ = ["KernelBenchOptions", "linear_shapes", "markdown", "run_kernel_bench", "write_outputs"]
