"""`python -m bitexport.train` / `bitexport train`: train a BitNet b1.58 decoder from scratch.

    python -m bitexport.train -o runs/demo                    # ternary (BitLinear), the default
    python -m bitexport.train -o runs/demo --full-precision   # same shape, no quantization
    python -m bitexport.train -o runs/demo --compare          # both, same tokens and steps
    torchrun --nproc_per_node 8 -m bitexport.train -o runs/demo   # data parallel

Writes into OUT: tokenizer.json, `ternary/` (HF `bitnet` packed checkpoint that
`bitexport.formats.load_model` and transformers' BitNetForCausalLM read), `full-precision/`
(state dict) and training_metrics.json.
"""

from __future__ import annotations

import argparse
import copy
import logging
import json
import platform
import shlex
import sys
import time
from pathlib import Path

DEFAULT_PROMPT = "ROMEO:"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bitexport.train.data import default_data_path

    p.add_argument("-o", "--out", required=True, help="output folder (created; files in it are replaced)")
    p.add_argument("--data", default=None, help=f"UTF-8 training text (default {default_data_path()})")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--full-precision", action="store_true",
                      help="train the same shape with plain linears (no ternary weights, no int8 activations)")
    what.add_argument("--compare", action="store_true",
                      help="train the ternary model, then the full-precision one on the same tokens and steps")
    g = p.add_argument_group("tokenizer and data")
    g.add_argument("--vocab-size", type=int, default=4096, help="byte-level BPE entries (default 4096)")
    g.add_argument("--val-fraction", type=float, default=0.1, help="held-out tail of the text (default 0.1)")
    m = p.add_argument_group("model shape (defaults: the bundled demo model)")
    m.add_argument("--hidden-size", type=int, default=512)
    m.add_argument("--intermediate-size", type=int, default=1280)
    m.add_argument("--layers", type=int, default=8)
    m.add_argument("--heads", type=int, default=8)
    m.add_argument("--kv-heads", type=int, default=2)
    m.add_argument("--head-dim", type=int, default=None, help="default hidden-size / heads")
    m.add_argument("--rope-theta", type=float, default=500000.0)
    t = p.add_argument_group("schedule")
    t.add_argument("--steps", type=int, default=300,
                   help="optimizer steps (default 300: the best of 300/400/1000/2000 on Tiny Shakespeare)")
    t.add_argument("--batch-size", type=int, default=32, help="windows per GPU and step (default 32)")
    t.add_argument("--seq-len", type=int, default=512, help="training context, also the model's max positions")
    t.add_argument("--lr", type=float, default=1.5e-3)
    t.add_argument("--min-lr-ratio", type=float, default=0.1)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--eval-every", type=int, default=50)
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--seed", type=int, default=1234)
    r = p.add_argument_group("runtime")
    r.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    r.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="autocast precision (auto: bf16 on GPU, fp32 on CPU)")
    r.add_argument("--sample-prompt", default=DEFAULT_PROMPT, help=f"greedy sample prompt (default {DEFAULT_PROMPT!r})")
    r.add_argument("--sample-tokens", type=int, default=100)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `train` subcommand to an argparse subparsers object (bitexport's CLI)."""
    p = subparsers.add_parser(
        "train", help="train a BitNet b1.58 decoder from scratch (the demo model's recipe)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bitexport.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def _check(args: argparse.Namespace) -> None:
    from bitexport.errors import InputError

    for name in ("steps", "batch_size", "seq_len", "vocab_size", "hidden_size", "intermediate_size", "layers",
                 "heads", "kv_heads", "eval_every", "log_every"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.heads % args.kv_heads:
        raise InputError(f"--heads ({args.heads}) must be a multiple of --kv-heads ({args.kv_heads})")
    if args.head_dim is None and args.hidden_size % args.heads:
        raise InputError(f"--hidden-size ({args.hidden_size}) is not a multiple of --heads; pass --head-dim")
    if (args.head_dim or args.hidden_size // args.heads) % 2:
        raise InputError("the head dimension must be even (RoPE rotates pairs); change --head-dim or --heads")
    if args.vocab_size < 260:
        raise InputError("--vocab-size must be at least 260 (256 byte symbols, <|endoftext|> and a few merges)")


def run(args: argparse.Namespace) -> int:
    """Train as `args` say; rank 0 writes the outputs. Returns the process exit code."""
    _check(args)
    from bitexport.model.config import ModelConfig
    from bitexport.train import data as D
    from bitexport.train import distributed as dist_
    from bitexport.train.recipe import Schedule, train_variant

    started = time.perf_counter()
    ctx = dist_.setup(args.device)
    try:
        out = Path(args.out)
        # progress on bitexport's logger (stderr); the results table and sample go to stdout
        log = logging.getLogger("bitexport").info if ctx.is_main else (lambda *a, **k: None)
        data_path = Path(args.data) if args.data else D.default_data_path()
        text = D.read_corpus(data_path)
        train_text, val_text = D.split_text(text, args.val_fraction)
        tok_path = out / "tokenizer.json"
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            D.train_tokenizer(train_text, args.vocab_size).save(str(tok_path))
            log(f"tokenizer: {args.vocab_size} entries requested, trained in {time.perf_counter() - t0:.1f} s")
        dist_.barrier(ctx)  # the other ranks read rank 0's tokenizer: one vocabulary for all
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tok_path))
        eos = tok.token_to_id(D.EOS_TOKEN)
        data = D.TokenData(D.encode(tok, train_text).to(ctx.device), D.encode(tok, val_text).to(ctx.device),
                           args.seq_len)
        log(f"data: {data_path.name}: {len(train_text):,} + {len(val_text):,} chars -> "
            f"{data.train.numel():,} train + {data.val.numel():,} val tokens")

        heads = args.heads
        cfg = ModelConfig(
            vocab_size=tok.get_vocab_size(), hidden_size=args.hidden_size,
            intermediate_size=args.intermediate_size, num_layers=args.layers, num_heads=heads,
            num_kv_heads=args.kv_heads, head_dim=args.head_dim or args.hidden_size // heads,
            hidden_act="relu2", rope_theta=args.rope_theta, rms_norm_eps=1e-5,
            attn_sub_norm=True, ffn_sub_norm=True, tie_word_embeddings=True,
            max_position_embeddings=args.seq_len, bos_token_id=None, eos_token_ids=(eos,),
        )
        counts = cfg.parameter_counts()
        log(f"model: {counts['total']:,} parameters ({counts['ternary']:,} in ternary linears)")
        bf16 = args.dtype == "bf16" or (args.dtype == "auto" and ctx.device.type == "cuda")
        sched = Schedule(
            steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
            min_lr_ratio=args.min_lr_ratio, warmup=min(args.warmup, args.steps), weight_decay=args.weight_decay,
            grad_clip=args.grad_clip, eval_every=args.eval_every, log_every=args.log_every, seed=args.seed,
            bf16=bf16,
        )
        variants = [False, True] if args.compare else [args.full_precision]
        runs = []
        for full_precision in variants:
            result = train_variant(ctx, cfg, data, sched, full_precision, log)
            if ctx.is_main:
                runs.append(_finish(result, out, tok, tok_path, data, sched, args, ctx))
        if ctx.is_main:
            metrics = _metrics(args, ctx, cfg, data, data_path, text, train_text, val_text, runs, started)
            (out / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            print(_summary(runs))
        dist_.barrier(ctx)
    finally:
        dist_.teardown(ctx)
    return 0


def _finish(result, out: Path, tok, tok_path: Path, data, sched, args, ctx) -> dict:
    """Save the run's checkpoint, measure it as saved, and sample from it (rank 0)."""
    from bitexport.formats import load_model
    from bitexport.train import outputs

    m = result.metrics
    eos = tuple(result.model.config.eos_token_ids)
    folder = out / result.variant
    if result.variant == "ternary":
        outputs.save_ternary(result.model, folder, tok_path)
        m["checkpoint"] = {"folder": folder.name, "format": "hf-bitnet (bitlinear, offline, bf16)"}
        m["checkpoint"].update(outputs.evaluate_checkpoint(folder, data.val_windows(), ctx.device,
                                                           sched.eval_batch_size))
        shipped = load_model(folder).model
        m["sample"] = outputs.sample(shipped, tok, args.sample_prompt, args.sample_tokens, eos)
    else:
        outputs.save_full_precision(result.model, folder, tok_path)
        m["checkpoint"] = {"folder": folder.name, "format": "state dict (bf16) + bitexport_config.json"}
        cpu = copy.deepcopy(result.model).to("cpu").float().eval()
        m["sample"] = outputs.sample(cpu, tok, args.sample_prompt, args.sample_tokens, eos)
    print(f"[{result.variant}] sample:\n{m['sample']['text']}\n")
    return m


def _metrics(args, ctx, cfg, data, data_path, text, train_text, val_text, runs, started) -> dict:
    import torch

    gpu = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else None
    return {
        "format": "bitexport-training-metrics/1",
        "command": _command_line(),
        "data": {
            "file": data_path.name, "chars": len(text), "train_chars": len(train_text),
            "val_chars": len(val_text), "train_tokens": data.train.numel(), "val_tokens": data.val.numel(),
            "val_windows": int((data.val.numel() - 1) // args.seq_len),
        },
        "model": {"config": cfg.to_dict(), "parameters": cfg.parameter_counts()},
        "hardware": {
            "device": str(ctx.device), "gpu": gpu, "world_size": ctx.world_size, "torch": torch.__version__,
            "python": platform.python_version(), "autocast": "bf16" if runs and runs[0]["schedule"]["bf16"] else "fp32",
        },
        "total_wall_s": round(time.perf_counter() - started, 1),
        "runs": runs,
    }


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        argv[:1] = ["python", "-m", "bitexport.train"]
    return " ".join(shlex.quote(a) for a in argv)


def _summary(runs: list[dict]) -> str:
    lines = ["variant          best val (ppl)     @step  final val (ppl)    saved ckpt val"]
    for r in runs:
        ck = r.get("checkpoint", {}).get("val_loss")
        lines.append(f"{r['variant']:<16} {r['best_val_loss']:.4f} ({r['best_val_ppl']:7.2f}) {r['best_step']:6d}  "
                     f"{r['final_val_loss']:.4f} ({r['final_val_ppl']:7.2f})  {ck if ck is not None else '-'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bitexport.errors import BitexportError
    from bitexport.log import configure

    configure()  # `python -m bitexport.train` has no CLI around it to set the logger up
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except BitexportError as e:
        print(f"bitexport train: error: {e}", file=sys.stderr)
        return 2
