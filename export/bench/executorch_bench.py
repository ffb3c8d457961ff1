"""ExecuTorch benchmark: tq2 against int4 and fp32 on XNNPACK, side by side in one run.

    python -m bitexport.bench.executorch_bench --shape large --threads 2 --out et.json

For each variant: export the synthetic model of `--shape` (random ternary weights, seed 0) to a
.pte, then measure prefill of a `--prompt-len` prompt and `--new-tokens` greedy tokens through
bitexport's ExecuTorch runner, with ExecuTorch's thread pool at `--threads`. Every export and
every measurement runs in a process of its own, so that its peak resident memory (the child's
ru_maxrss) is its own; with `--repeats R` the measurements alternate between variants R times and
the medians are reported. Figures are printed and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variant:
    key: str
    weights: str
    head: str
    extra: tuple = ()

    def options(self, max_seq_len: int):
        from bitexport.targets import ExportOptions

        return ExportOptions(weights=self.weights, max_seq_len=max_seq_len, head=self.head, extra=dict(self.extra))


VARIANTS = {v.key: v for v in (
    Variant("tq2", "tq2", "int4"),
    Variant("int4", "int4", "int4"),
    Variant("int4-exact", "int4", "int4", (("int4_activations", "exact"),)),
    Variant("fp32", "fp32", "fp32"),
)}
DEFAULT_VARIANTS = ("tq2", "int4", "fp32")


# ----------------------------------------------------------------------------- child processes


def _child_export(args: argparse.Namespace) -> dict:
    from bitexport.bench.shapes import synthetic_model
    from bitexport.targets.executorch import TARGET

    v = VARIANTS[args.variant]
    t0 = time.perf_counter()
    loaded = synthetic_model(args.shape, args.max_seq_len)
    options = v.options(args.max_seq_len)
    TARGET.check(loaded, options)
    out = Path(args.folder)
    out.mkdir(parents=True, exist_ok=True)
    [artifact] = TARGET.emit(loaded, options, out)
    return {"pte": str(out / artifact.path), "bytes": (out / artifact.path).stat().st_size,
            "export_s": time.perf_counter() - t0, "details": artifact.details}


def _child_measure(args: argparse.Namespace) -> dict:
    from bitexport.runners.executorch import ExecutorchRunner

    prompt = json.loads(Path(args.prompt).read_text())
    t0 = time.perf_counter()
    runner = ExecutorchRunner(args.pte, (), needs=json.loads(args.needs))
    runner.set_threads(args.threads)
    load_s = time.perf_counter() - t0
    runner.generate(prompt[:8], 2)  # warm-up: XNNPACK's lazy packing, the thread pool
    gen = runner.generate(prompt, args.new_tokens)
    s = gen.stats
    return {"load_s": load_s, "threads": runner.threads(), "prompt_tokens": s.prompt_tokens,
            "new_tokens": s.new_tokens, "prefill_tokens_per_s": s.prefill_tokens_per_s,
            "decode_tokens_per_s": s.decode_tokens_per_s, "tokens": gen.tokens}


def _run_child(argv: list[str]) -> tuple[dict, int]:
    """Run this module as a child; (its JSON result, its own peak RSS in bytes)."""
    from bitexport.bench.llamacpp import run_with_rusage

    rc, stdout, stderr, _, peak = run_with_rusage([sys.executable, "-m", "bitexport.bench.executorch_bench", *argv])
    if rc != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"child {' '.join(argv[:3])} failed (exit {rc}):\n{tail}")
    return json.loads(stdout.strip().splitlines()[-1]), peak


# ----------------------------------------------------------------------------- the run


def _machine() -> dict:
    info = {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["load_avg_start"] = os.getloadavg()
    except OSError:
        pass
    import executorch.version
    import torch

    info["torch"], info["executorch"] = torch.__version__, executorch.version.__version__
    return info


def run(args: argparse.Namespace) -> dict:
    from bitexport.bench.shapes import SHAPES

    cfg = SHAPES[args.shape]
    max_seq_len = args.prompt_len + args.new_tokens
    work = Path(args.workdir or f"/tmp/bitexport-et-bench-{args.shape}")
    work.mkdir(parents=True, exist_ok=True)
    variants = [VARIANTS[k] for k in args.variants.split(",")]
    import random

    rng = random.Random(0)
    prompt = [rng.randrange(3, cfg.vocab_size) for _ in range(args.prompt_len)]
    prompt_file = work / "prompt.json"
    prompt_file.write_text(json.dumps(prompt))
    results: dict = {"shape": args.shape, "config": cfg.to_dict(), "threads": args.threads,
                     "prompt_tokens": args.prompt_len, "new_tokens": args.new_tokens, "max_seq_len": max_seq_len,
                     "repeats": args.repeats, "machine": _machine(), "variants": {}}
    for v in variants:
        folder = work / v.key
        pte = folder / f"synthetic-{args.shape}-{v.weights}.pte"
        rec = results["variants"].setdefault(v.key, {"weights": v.weights, "head": v.head, "extra": dict(v.extra)})
        if args.reuse and pte.is_file() and (folder / "export.json").is_file():
            rec["export"] = json.loads((folder / "export.json").read_text())
            print(f"[bench] {v.key}: reusing {pte}", file=sys.stderr, flush=True)
            continue
        print(f"[bench] exporting {v.key} ...", file=sys.stderr, flush=True)
        res, peak = _run_child(["--child", "export", "--variant", v.key, "--shape", args.shape,
                                "--max-seq-len", str(max_seq_len), "--folder", str(folder)])
        res["peak_rss_bytes"] = peak
        (folder / "export.json").write_text(json.dumps(res))
        rec["export"] = res
        print(f"[bench] {v.key}: {res['bytes'] / 1e6:.1f} MB in {res['export_s']:.0f} s", file=sys.stderr, flush=True)
    for r in range(args.repeats):
        for v in variants:
            rec = results["variants"][v.key]
            needs = rec["export"]["details"].get("custom_kernels", [])
            res, peak = _run_child(["--child", "measure", "--pte", rec["export"]["pte"], "--needs", json.dumps(needs),
                                    "--threads", str(args.threads), "--prompt", str(prompt_file),
                                    "--new-tokens", str(args.new_tokens)])
            res["peak_rss_bytes"] = peak
            rec.setdefault("runs", []).append(res)
            print(f"[bench] {v.key} run {r + 1}: prefill {res['prefill_tokens_per_s']:.1f} tok/s, decode "
                  f"{res['decode_tokens_per_s']:.1f} tok/s, peak RSS {peak / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    for rec in results["variants"].values():
        runs = rec.pop("runs")
        rec["prefill_tokens_per_s"] = statistics.median(x["prefill_tokens_per_s"] for x in runs)
        rec["decode_tokens_per_s"] = statistics.median(x["decode_tokens_per_s"] for x in runs)
        rec["decode_runs"] = [round(x["decode_tokens_per_s"], 2) for x in runs]
        rec["prefill_runs"] = [round(x["prefill_tokens_per_s"], 2) for x in runs]
        rec["peak_rss_bytes"] = max(x["peak_rss_bytes"] for x in runs)
        rec["pte_bytes"] = rec["export"]["bytes"]
        rec["tokens"] = runs[-1]["tokens"]
    v = results["variants"]
    ratios = {}
    if "tq2" in v:
        for other in ("int4", "int4-exact", "fp32"):
            if other in v:
                ratios[f"tq2/{other} decode"] = v["tq2"]["decode_tokens_per_s"] / v[other]["decode_tokens_per_s"]
                ratios[f"tq2/{other} prefill"] = v["tq2"]["prefill_tokens_per_s"] / v[other]["prefill_tokens_per_s"]
        if "int4-exact" in v:  # both compute the reference's arithmetic: their tokens must agree
            ratios["tokens tq2 == int4-exact"] = v["tq2"]["tokens"] == v["int4-exact"]["tokens"]
    results["ratios"] = ratios
    results["machine"]["load_avg_end"] = os.getloadavg()
    return results


def format_table(res: dict) -> str:
    lines = [f"ExecuTorch, shape {res['shape']}, {res['threads']} threads, prompt {res['prompt_tokens']}, "
             f"{res['new_tokens']} new tokens, median of {res['repeats']}",
             f"{'variant':<11} {'head':<5} {'.pte MB':>8} {'bits/w':>7} {'prefill tok/s':>14} {'decode tok/s':>13} "
             f"{'peak RSS MiB':>13} {'XNNPACK ops':>12}"]
    for key, r in res["variants"].items():
        d = r["export"]["details"]
        lines.append(f"{key:<11} {r['head']:<5} {r['pte_bytes'] / 1e6:>8.1f} {d.get('ternary_bits_per_weight', 0):>7.2f} "
                     f"{r['prefill_tokens_per_s']:>14.1f} {r['decode_tokens_per_s']:>13.1f} "
                     f"{r['peak_rss_bytes'] / 2**20:>13.0f} {d.get('delegated_op_share', 0):>12.1%}")
    for k, x in res["ratios"].items():
        lines.append(f"{k}: {x:.2f}x" if isinstance(x, float) else f"{k}: {x}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bitexport.bench.executorch_bench", description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="large", help="bitexport.bench.shapes.SHAPES key (default large)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--workdir", help="where the .pte files go (default /tmp/bitexport-et-bench-SHAPE)")
    p.add_argument("--reuse", action="store_true", help="reuse .pte files a previous run left in --workdir")
    p.add_argument("--out", help="write the results here as JSON")
    # internal: one step in a child process
    p.add_argument("--child", choices=("export", "measure"), help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--max-seq-len", type=int, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--pte", help=argparse.SUPPRESS)
    p.add_argument("--needs", default="[]", help=argparse.SUPPRESS)
    p.add_argument("--prompt", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        from bitexport.quiet import quiet_loggers

        quiet_loggers()
        res = _child_export(args) if args.child == "export" else _child_measure(args)
        print(json.dumps(res))
        return 0
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    res = run(args)
    print(format_table(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
