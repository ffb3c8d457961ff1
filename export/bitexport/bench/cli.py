"""`bitexport bench`: argument parsing only; the suite lives in bench/suite.py."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from bitexport.bench.suite import DEFAULT_VARIANTS, VARIANTS

    b = subparsers.add_parser(
        "bench", help="benchmark every export variant side by side (and llama.cpp with --with-llama-cpp)",
        description="Export each variant, then measure prefill and decode tokens/s, peak memory, file size and "
        "agreement with the PyTorch reference in one run (variants alternating over --repeats repetitions). "
        "Writes results.json, results.md and results.png to --out.",
    )
    b.add_argument("model", nargs="?", metavar="MODEL",
                   help="model folder to benchmark (default: the --shape with random ternary weights)")
    b.add_argument("--shape", choices=("large", "2b", "tiny"), default="large",
                   help="shape of the random model when no MODEL is given: large = bitnet_b1_58-large (default), "
                   "2b = BitNet-b1.58-2B-4T, tiny = a few layers (a quick check)")
    b.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime (default 2)")
    b.add_argument("--repeats", type=int, default=3, help="measurements per variant, alternating (default 3)")
    b.add_argument("--out", "-o", default="bench-results", help="output folder (default bench-results)")
    b.add_argument("--with-llama-cpp", action="store_true",
                   help="add llama.cpp TQ2_0 and TQ1_0 (builds llama.cpp from PyPI's llama-cpp-python source once)")
    b.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all but llama.cpp's)")
    b.add_argument("--prompt-len", type=int, default=128, help="prompt tokens for prefill (default 128)")
    b.add_argument("--new-tokens", type=int, default=128, help="greedy tokens to decode (default 128)")
    b.add_argument("--keep-work", action="store_true", help="keep the exported bundles under OUT/work")
    b.add_argument("--max-wait-quiet", type=float, default=600, metavar="SECONDS",
                   help="before each measurement wait up to this long for other processes to leave the CPUs "
                   "(default 600; 0: never wait)")
    b.add_argument("--phone-model", action="store_true",
                   help="print and write the phone performance MODEL (phone-model.md/.json in --out: predicted, "
                   "not measured, decode/prefill tokens/s on named phones) instead of measuring this machine")
    b.add_argument("--kernels", action="store_true",
                   help="time the tq2 kernels alone instead (kernels.md/.json in --out): GEMV GB/s per layer shape "
                   "on 1 and --threads threads against the read probe, weights in DRAM; GEMM GMAC/s at several token "
                   "counts beside XNNPACK's int4 GEMM through the ExecuTorch runtime")
    b.add_argument("--kernel-shapes", default="2b,large", metavar="SHAPES",
                   help="with --kernels: model shapes whose linear layers are timed (default 2b,large)")
    b.add_argument("--kernel-tokens", default="1,8,32,128", metavar="M,...",
                   help="with --kernels: token counts of the GEMM rows (default 1,8,32,128)")
    b.add_argument("--kernel-rotate-mb", type=int, default=1024, metavar="MB",
                   help="with --kernels: weight copies cycled through, at least this many MB (default 1024: "
                   "more than the caches, so the weights come from DRAM)")
    b.add_argument("--quality", action=argparse.BooleanOptionalAction, default=None,
                   help="teacher-forced perplexity of every variant and its difference from the reference "
                   "(default: on when MODEL is the demo model, scored on its validation split)")
    b.add_argument("--quality-tokens", type=int, default=4096, help="tokens the perplexity scores (default 4096)")
    b.set_defaults(func=run)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (defaults left out)."""
    parts = ["bitexport", "bench"] + ([args.model] if args.model else ["--shape", args.shape])
    parts += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    if args.with_llama_cpp:
        parts.append("--with-llama-cpp")
    from bitexport.bench.suite import DEFAULT_VARIANTS

    if args.variants != ",".join(DEFAULT_VARIANTS):
        parts += ["--variants", args.variants]
    if (args.prompt_len, args.new_tokens) != (128, 128):
        parts += ["--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens)]
    if args.quality is not None:
        parts.append("--quality" if args.quality else "--no-quality")
    return " ".join(shlex.quote(p) for p in parts)


def _phone_model(out: Path) -> int:
    import json

    from bitexport.bench import phone_model

    rows = phone_model.predict()
    text = phone_model.markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "phone-model.md").write_text(text + "\n")
    (out / "phone-model.json").write_text(json.dumps({"label": phone_model.LABEL, "rows": rows,
                                                      "targets": phone_model.targets(rows)}, indent=2) + "\n")
    print(text)
    return 0


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    from bitexport.errors import InputError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{flag} takes comma-separated whole numbers, e.g. {flag} 1,8,32") from None


def _kernels(args: argparse.Namespace) -> int:
    from bitexport.bench.kernels import KernelBenchOptions, markdown, run_kernel_bench

    opts = KernelBenchOptions(
        out=Path(args.out), shapes=tuple(s.strip() for s in args.kernel_shapes.split(",") if s.strip()),
        threads=tuple(sorted({1, args.threads})), tokens=_int_list(args.kernel_tokens, "--kernel-tokens"),
        rotate_mb=args.kernel_rotate_mb,
    )
    from bitexport.bench.suite import step

    print(markdown(run_kernel_bench(opts, step)))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.phone_model:
        return _phone_model(Path(args.out))
    if args.kernels:
        return _kernels(args)
    from bitexport.bench.suite import SuiteOptions, run_suite

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    opts = SuiteOptions(
        out=Path(args.out), model=args.model, shape=args.shape, threads=args.threads, repeats=args.repeats,
        variants=variants, with_llama_cpp=args.with_llama_cpp, prompt_len=args.prompt_len,
        new_tokens=args.new_tokens, keep_work=args.keep_work, max_wait_quiet_s=args.max_wait_quiet,
        quality=args.quality, quality_tokens=args.quality_tokens,
        command=_command(args),
    )
    report = run_suite(opts)
    from bitexport.bench.report import markdown

    print(markdown(report))
    failed = [v for v in report["variants"] if v["status"] == "failed"]
    return 1 if failed else 0


__all__ = ["register", "run"]
