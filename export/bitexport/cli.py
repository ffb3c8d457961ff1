"""The `bitexport` command: argument parsing and one-line errors; the work lives elsewhere."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from bitexport import __version__
from bitexport.errors import BitexportError, InputError

DEMO_MODEL = Path(__file__).resolve().parent / "demo_model"
DEFAULT_PROMPT = "ROMEO:"
REVISION_HELP = ("branch, tag or commit of a Hugging Face Hub id (default: main); a local path always wins over an id; "
                 "HF_HUB_OFFLINE=1 resolves ids from the local cache only")

RUN_EXAMPLES = """examples:
  bitexport run                                   # the bundled demo model, prompt 'ROMEO:', greedy
  bitexport run bundles/demo -p "JULIET:" -n 100  # a bundle, streamed as it decodes
  bitexport run bundles/demo --temperature 0.8 --top-p 0.95 --seed 7   # sampled, reproducible
  bitexport run bundles/demo --json               # tokens, text and tokens/s as one JSON object
  bitexport run bundles/falcon3 --chat --system "You are concise."     # chat with the model's template
  printf 'Hi\\nAnd then?\\n' | bitexport run bundles/falcon3 --chat   # a scripted conversation
"""


def _default_model(model: str | None) -> str:
    if model:
        return model
    if (DEMO_MODEL / "config.json").is_file():
        return str(DEMO_MODEL)
    raise InputError("no MODEL given and this install has no bundled demo model; pass a model folder")


def _local(spec: str, revision: str | None) -> str:
    """A Hub id resolved to its local snapshot folder (a local path wins; see formats/hub.py)."""
    from bitexport.formats.hub import resolve_model

    return str(resolve_model(spec, revision))


def _bundle_name(spec: str) -> str:
    """bundles/<this>-<target>: the folder's, the GGUF file's (without .gguf) or the Hub repository's name."""
    name = Path(spec).resolve().name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def _config_options() -> dict[str, list]:
    """Every target option, by field name: the (target, field) pairs that declare it."""
    from bitexport.targets import TARGETS, config_class

    options: dict[str, list] = {}
    for name in TARGETS:
        for f in config_class(name).options():
            options.setdefault(f.name, []).append((name, f))
    return options


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per target option (derived from the frozen configs), default None = "not given",
    so each target keeps its own default."""
    group = parser.add_argument_group("target options (each applies to the targets named in its help)")
    for name, decls in _config_options().items():
        choices = []
        for _, f in decls:
            choices += [c for c in (f.metadata["choices"] or ()) if c not in choices]
        targets = ", ".join(t for t, _ in decls)
        first = decls[0][1]
        defaults = {str(f.default) for _, f in decls}
        default = defaults.pop() if len(defaults) == 1 else "; ".join(f"{t}: {f.default}" for t, f in decls)
        accepts = {tuple(f.metadata["choices"] or ()) for _, f in decls}
        per_target = "" if len(accepts) == 1 else "; accepted: " + "; ".join(
            f"{t}: {', '.join(map(str, f.metadata['choices']))}" for t, f in decls)
        group.add_argument(
            "--" + name.replace("_", "-"), *(["-w"] if name == "weights" else []), dest=name, default=None,
            type=first.metadata["parse"], choices=choices or None, metavar=name.upper() if not choices else None,
            help=f"[{targets}] {first.metadata['help']} (default {default}{per_target})",
        )


def configs_from_args(args: argparse.Namespace) -> list:
    """The platform's target configs from the flags given; a flag no target of the platform has
    is refused rather than ignored."""
    from bitexport.targets import config_class, platform_targets

    names = platform_targets(args.target)
    options = _config_options()
    given = {n: v for n in options if (v := getattr(args, n, None)) is not None}
    for key in given:
        if not any(t in names for t, _ in options[key]):
            owners = ", ".join(t for t, _ in options[key])
            raise InputError(f"--{key.replace('_', '-')} is an option of {owners}, not of --target {args.target}; drop it")
    configs = []
    for t in names:
        cls = config_class(t)
        fields = {f.name for f in cls.options()}
        configs.append(cls(**{k: v for k, v in given.items() if k in fields}))
    return configs


def _cmd_export(args: argparse.Namespace) -> int:
    from bitexport.api import export

    spec = _default_model(args.model)
    out = Path(args.output) if args.output else Path("bundles") / f"{_bundle_name(spec)}-{args.target}"
    model = _local(spec, args.revision)
    from bitexport.formats import LoadOptions

    export(model, args.target, out, config=configs_from_args(args), max_seq_len=args.max_seq_len, force=args.force,
           load=LoadOptions(ternarize=args.ternarize))
    print(out)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from bitexport.bundle.describe import describe, format_description

    d = describe(_local(args.path, args.revision))
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0


def _sampling(args: argparse.Namespace):
    from bitexport.runtime.sampling import SamplingConfig

    return SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)


def _write(piece: str) -> None:
    if piece:
        sys.stdout.write(piece)
        sys.stdout.flush()


def _cmd_run(args: argparse.Namespace) -> int:
    from bitexport.runtime.text import TextCodec, TextStream

    if args.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    sampling = _sampling(args)  # bad values are refused before a runtime loads
    if args.chat and args.json:
        raise InputError("--chat streams a conversation as text; drop --json (or --chat)")
    if args.system is not None and not args.chat:
        raise InputError("--system applies to --chat only; add --chat or drop --system")
    from bitexport.runtime.open import open_runner

    path = _local(_default_model(args.path), args.revision)
    runner, tok_path = open_runner(path, args.threads, emulate=args.emulate)
    codec = TextCodec(tok_path)
    if args.chat:
        return _chat(args, path, runner, codec, tok_path, sampling)
    prompt_ids = codec.encode(args.prompt)
    emulated = getattr(runner, "emulated", None)
    if args.json:
        gen = runner.generate(prompt_ids, args.max_new_tokens, sampling)
        s = gen.stats
        result = {
            "runner": runner.name,
            "prompt_tokens": len(prompt_ids),
            "tokens": gen.tokens,
            "text": codec.decode(prompt_ids + gen.tokens),
            "prefill_tokens_per_s": round(s.prefill_tokens_per_s, 2),
            "decode_tokens_per_s": round(s.decode_tokens_per_s, 2),
            "sampling": sampling.as_dict(),
        }
        if emulated:  # tokens/s of an emulated run are qemu's on this machine, never a phone's
            result["emulated"] = emulated
        print(json.dumps(result))
        return 0
    # the prompt, then each piece of text as soon as its tokens are decoded
    stream = TextStream(codec, prompt_ids)
    _write(stream.finish())
    gen = runner.generate(prompt_ids, args.max_new_tokens, sampling, lambda t: _write(stream.push(t)))
    _write(stream.finish() + "\n")
    s = gen.stats
    print(
        f"[{runner.name}] prefill {s.prefill_tokens_per_s:.1f} tokens/s ({s.prompt_tokens} tokens), "
        f"decode {s.decode_tokens_per_s:.1f} tokens/s ({s.new_tokens} tokens)"
        + (f" -- EMULATED: qemu on this machine, not {emulated} hardware speed" if emulated else "")
    )
    return 0


def _chat(args: argparse.Namespace, path: str, runner, codec, tok_path: Path, sampling) -> int:
    from bitexport.runtime.chat import ChatSession, chat_loop, chat_template_for

    loaded = getattr(runner, "loaded", None)  # a model's reference runner: its config decides BOS / EOS
    ids = (loaded.config.bos_token_id, loaded.config.eos_token_ids) if loaded is not None else (None, None)
    session = ChatSession(runner, codec, chat_template_for(path, tok_path, *ids), args.system, sampling,
                          args.max_new_tokens)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"[{runner.name}] chat: type a message and Enter; /reset starts over; Ctrl-D ends", file=sys.stderr)

    def prompt() -> None:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()

    chat_loop(session, sys.stdin, _write, prompt)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from bitexport.bundle.verify import format_report, verify_bundle

    if args.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    model = _local(args.model, args.revision) if args.model else None
    if args.revision and not args.model:
        raise InputError("--revision applies to --model (a Hugging Face Hub id); pass --model too")
    report = verify_bundle(args.bundle, model, args.max_new_tokens, args.allow_no_reference, emulate=args.emulate)
    print(format_report(report))
    return report.exit_code


def _cmd_make_tiny(args: argparse.Namespace) -> int:
    from bitexport.formats.tiny import make_tiny_checkpoint

    out = Path(args.output)
    if out.exists() and not args.force:
        raise InputError(f"{out} already exists; pass --force to overwrite it or choose another folder")
    make_tiny_checkpoint(out, args.format, linear_class=args.linear_class, mode=args.mode, seed=args.seed)
    print(out)
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors become one line naming the fix, like every other bad input (argparse would
    print the whole usage block first)."""

    def error(self, message: str):  # type: ignore[override]
        raise InputError(f"{message}; see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    from bitexport.targets import PLATFORMS

    p = _Parser(
        prog="bitexport",
        description="Export 1.58-bit (BitNet b1.58) language models to ExecuTorch, Core ML and ONNX bundles, "
        "and run or verify them on this machine.",
    )
    p.add_argument("--version", action="version", version=f"bitexport {__version__}")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show the libraries' own warnings, logs and progress bars (hidden by default)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("export", help="export a model folder to a bundle for a target platform",
                       description="Load MODEL, lower its ternary layers for the target and write a bundle "
                       "(artifacts, tokenizer.json, manifest.json) atomically.")
    e.add_argument("model", nargs="?", metavar="MODEL",
                   help="model folder, GGUF file or Hugging Face Hub id (default: the bundled demo model)")
    e.add_argument("--revision", default=None, help=REVISION_HELP)
    e.add_argument("--target", "-t", required=True, choices=list(PLATFORMS),
                   help="android/executorch: .pte; ios: .pte + .mlpackage; coreml: .mlpackage; desktop/onnx: ONNX")
    e.add_argument("--max-seq-len", type=int, default=None, help="KV-cache length in tokens (default: min(512, model's))")
    e.add_argument("-o", "--output", help="bundle folder (default: bundles/<model>-<target>)")
    e.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    e.add_argument("--ternarize", action="store_true",
                   help="absmean-ternarize the linears of a full-precision (e.g. bf16) BitNet-trained checkpoint at load, "
                   "as transformers' online mode does (Falcon-E's prequantized revision)")
    _add_config_flags(e)
    e.set_defaults(func=_cmd_export)

    i = sub.add_parser("inspect", help="describe a model folder or a bundle")
    i.add_argument("path", metavar="PATH", help="model folder, GGUF file, Hugging Face Hub id or bundle folder")
    i.add_argument("--revision", default=None, help=REVISION_HELP)
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=_cmd_inspect)

    r = sub.add_parser("run", help="generate text with a bundle (desktop runtime) or a model folder (PyTorch reference)",
                       description="Generate text with a bundle (its first artifact this machine runs) or a model folder "
                       "(the PyTorch reference decoder). Text is printed as it is decoded; generation ends at any "
                       "of the model's stop tokens or after --max-new-tokens.",
                       epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("path", nargs="?", metavar="PATH",
                   help="bundle, model folder, GGUF file or Hugging Face Hub id (default: the bundled demo model)")
    r.add_argument("--revision", default=None, help=REVISION_HELP)
    r.add_argument("--prompt", "-p", default=DEFAULT_PROMPT, help=f"prompt text (default {DEFAULT_PROMPT!r})")
    r.add_argument("--max-new-tokens", "-n", type=int, default=64, help="tokens to generate (a chat reply's limit "
                   "with --chat; default 64)")
    r.add_argument("--chat", action="store_true", help="interactive chat: read messages from stdin, one a line, "
                   "format the conversation with the model's chat template, stream each reply")
    r.add_argument("--system", metavar="TEXT", default=None, help="system message for --chat")
    s = r.add_argument_group("sampling (the same on every runner; greedy unless --temperature > 0)")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); higher = more random")
    s.add_argument("--top-p", type=float, default=1.0, help="sample from the most likely tokens holding this "
                   "probability mass, in (0, 1] (default 1: all)")
    s.add_argument("--top-k", type=int, default=0, help="sample from the K most likely tokens (default 0: all)")
    s.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same tokens "
                   "(default: a fresh one each run)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads (default: the runtime's)")
    r.add_argument("--json", action="store_true", help="print tokens, text and tokens/s as JSON")
    r.add_argument("--emulate", choices=("aarch64",), default=None,
                   help="run the bundle's .pte on ExecuTorch's aarch64 runtime under qemu (needs qemu-user and "
                        "g++-aarch64-linux-gnu; tokens/s are emulated, not a phone's)")
    r.set_defaults(func=_cmd_run)

    v = sub.add_parser("verify", help="check a bundle's hashes and score its artifacts' tokens, logits and perplexity under the PyTorch reference (exit 1: FAILED or not compared)")
    v.add_argument("bundle", metavar="BUNDLE")
    v.add_argument("--model", help="source model folder, GGUF file or Hub id (default: the path recorded in the manifest)")
    v.add_argument("--revision", default=None, help=REVISION_HELP)
    v.add_argument("--max-new-tokens", "-n", type=int, default=32, help="greedy tokens to compare (default 32)")
    v.add_argument("--allow-no-reference", action="store_true",
                   help="exit 0 when the source model is missing (tokens are then reported 'not compared')")
    v.add_argument("--emulate", choices=("aarch64",), default=None,
                   help="run the .pte artifacts on ExecuTorch's aarch64 runtime under qemu, compared with the "
                        "reference and with the desktop ExecuTorch runtime")
    v.set_defaults(func=_cmd_verify)

    t = sub.add_parser("make-tiny", help="write a tiny random checkpoint to try the pipeline on")
    t.add_argument("output", metavar="OUT")
    t.add_argument("--format", choices=("hf-bitnet", "1bitllm"), default="hf-bitnet")
    t.add_argument("--linear-class", choices=("bitlinear", "autobitlinear"), default="bitlinear")
    t.add_argument("--mode", choices=("offline", "online"), default="offline")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--force", action="store_true", help="overwrite an existing folder")
    t.set_defaults(func=_cmd_make_tiny)

    # subcommands that live with their own code (training recipe, benchmark suite); an import
    # failure here is a bug to see, not a subcommand to hide
    for module in ("bitexport.train", "bitexport.bench.cli"):
        importlib.import_module(module).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from bitexport.log import configure, quiet_libraries

    verbose = bool({"-v", "--verbose"} & set(argv))
    if not verbose:  # before the parser imports the subcommands' libraries
        quiet_libraries()
    configure(verbose)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except BitexportError as e:
        print(f"bitexport: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bitexport: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
