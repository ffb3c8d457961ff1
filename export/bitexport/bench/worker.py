"""What each benchmark subprocess does: export one variant, or measure one variant once.

    python -m bitexport.bench.worker export  --model DIR --target T --weights W --head H --max-seq-len N --out BUNDLE
    python -m bitexport.bench.worker measure --bundle BUNDLE --artifact I --threads T --prompt FILE --new-tokens N
    python -m bitexport.bench.worker measure --model DIR --threads T --prompt FILE --new-tokens N --max-seq-len N
    python -m bitexport.bench.worker quality --bundle BUNDLE --artifact I | --model DIR --tokens FILE --window N

Every step runs in a process of its own so that its peak resident memory (the parent reads the
child's ru_maxrss) is that step's alone. The result is one JSON line on stdout; a failure the user
can act on is one line on stderr with exit code 3 (the suite reports it as 'unavailable: ...'); any other
error leaves its traceback (reported as 'failed: ...').
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

UNAVAILABLE = 3  # exit code: this variant cannot be produced/run here (the message says why)


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _export(args: argparse.Namespace) -> dict:
    from bitexport.api import export
    from bitexport.targets import config_class

    import dataclasses

    cls = config_class(args.target)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = {}
    for item in args.option:  # NAME=VALUE, parsed as the CLI parses that option
        name, _, value = item.partition("=")
        extra[name] = fields[name].metadata.get("parse", str)(value)
    config = cls(weights=args.weights, head=args.head, **extra)
    t0 = time.perf_counter()
    bundle = export(args.model, args.target, args.out, config=config, max_seq_len=args.max_seq_len, force=True)
    wall = time.perf_counter() - t0
    return {"bundle": str(bundle.path), "export_s": wall,
            "artifacts": [{"path": a.path, "runtime": a.runtime, "weight_format": a.weight_format, "bytes": a.bytes,
                           "details": a.details} for a in bundle.artifacts]}


def make_runner(args: argparse.Namespace):
    """(runner, threads_applied) through the same function `bitexport run` uses."""
    from bitexport.runtime.open import open_runner

    runner, _ = open_runner(args.bundle or args.model, args.threads, artifact=args.artifact if args.bundle else None,
                            max_seq_len=getattr(args, "max_seq_len", None))  # quality has none
    return runner, bool(args.threads)


def _measure(args: argparse.Namespace) -> dict:
    prompt = json.loads(Path(args.prompt).read_text())
    t0 = time.perf_counter()
    runner, applied = make_runner(args)
    load_s = time.perf_counter() - t0
    runner.generate(prompt[: min(8, len(prompt))], 2)  # warm-up: lazy allocations, thread pools
    gen = runner.generate(prompt, args.new_tokens)
    s = gen.stats
    return {
        "runner": runner.name,
        "threads_applied": applied,
        "load_s": load_s,
        "prompt_tokens": s.prompt_tokens,
        "new_tokens": s.new_tokens,
        "prefill_s": s.prefill_s,
        "decode_s": s.decode_s,
        "prefill_tokens_per_s": s.prefill_tokens_per_s,
        "decode_tokens_per_s": s.decode_tokens_per_s,
        "tokens": list(map(int, gen.tokens)),
    }


def _quality(args: argparse.Namespace) -> dict:
    """Teacher-forced perplexity of one variant on the token ids in --tokens (bench/quality.py)."""
    from bitexport.bench import quality as Q

    tokens = json.loads(Path(args.tokens).read_text())
    if args.bundle:
        from bitexport.bundle.store import read_bundle

        bundle = read_bundle(args.bundle)
        artifact = bundle.artifacts[args.artifact]
        if artifact.target == "onnx":
            step = Q.onnx_step(bundle.path / artifact.details["model_file"], args.threads)
        else:
            runner, _ = make_runner(args)
            step = Q.executorch_step(runner)
        logits = Q.stepwise(step)
    else:
        from bitexport.formats import load_model
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        logits = Q.reference_logits(load_model(args.model, args.window).model)
    t0 = time.perf_counter()
    result = Q.perplexity(logits, tokens, args.window).to_dict()
    return {**result, "quality_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bitexport.bench.worker")
    sub = p.add_subparsers(dest="step", required=True)
    e = sub.add_parser("export")
    e.add_argument("--model", required=True)
    e.add_argument("--target", required=True)
    e.add_argument("--weights", required=True)
    e.add_argument("--head", default="int4")
    e.add_argument("--max-seq-len", type=int, required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--option", action="append", default=[], help="another config option, NAME=VALUE")
    m = sub.add_parser("measure")
    m.add_argument("--bundle")
    m.add_argument("--artifact", type=int, default=0)
    m.add_argument("--model")
    m.add_argument("--max-seq-len", type=int)
    m.add_argument("--threads", type=int, default=None)
    m.add_argument("--prompt", required=True, help="JSON file with the prompt's token ids")
    m.add_argument("--new-tokens", type=int, required=True)
    q = sub.add_parser("quality")
    q.add_argument("--bundle")
    q.add_argument("--artifact", type=int, default=0)
    q.add_argument("--model")
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--tokens", required=True, help="JSON file with the token ids to score")
    q.add_argument("--window", type=int, required=True, help="tokens per window (the KV length)")
    args = p.parse_args(argv)
    if getattr(args, "threads", None):
        # runtimes that size their pools from the environment (OpenMP, torch) follow it too
        import os

        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from bitexport.errors import BitexportError

    try:
        result = {"export": _export, "measure": _measure, "quality": _quality}[args.step](args)
    except BitexportError as e:  # anything else is a bug: its traceback goes to stderr
        print(str(e).splitlines()[0] if str(e) else type(e).__name__, file=sys.stderr)
        return UNAVAILABLE
    # the step's own high-water mark, read just before exit (the parent polls it too, but may
    # miss a peak in the last moments)
    result["vm_hwm_bytes"] = _vm_hwm()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
