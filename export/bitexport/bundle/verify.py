"""`bitexport verify`: a bundle's hashes, each artifact's static checks, and token agreement of
every artifact this machine can run with the PyTorch reference on a fixed prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bitexport.bundle.store import read_bundle
from bitexport.errors import BitexportError, EnvironmentProblem
from bitexport.formats import load_model
from bitexport.runtime.generate import common_prefix
from bitexport.runtime.reference import ReferenceRunner
from bitexport.targets import get_target
from bitexport.runtime.text import TextCodec

VERIFY_PROMPT = "ROMEO: But soft, what light through yonder window breaks?"


@dataclass
class ArtifactCheck:
    path: str
    target: str
    weight_format: str
    problems: list[str] = field(default_factory=list)
    ran: bool = False
    skipped: str = ""
    tokens_compared: int = 0
    tokens_agreeing: int = 0  # length of the common prefix with the reference's greedy tokens

    @property
    def ok(self) -> bool:
        return not self.problems and (not self.ran or self.tokens_agreeing == self.tokens_compared)


@dataclass
class VerifyReport:
    bundle: str
    hash_problems: list[str]
    artifacts: list[ArtifactCheck]

    @property
    def ok(self) -> bool:
        return not self.hash_problems and all(a.ok for a in self.artifacts)


def verify_bundle(path: str | Path, model: str | Path | None = None, max_new_tokens: int = 32) -> VerifyReport:
    bundle = read_bundle(path)
    report = VerifyReport(str(path), bundle.hash_problems(), [])
    codec = TextCodec(bundle.tokenizer_path)
    prompt = codec.encode(VERIFY_PROMPT)
    reference: list[int] | None = None
    model_path = Path(model) if model else Path(bundle.manifest["source"].get("path", ""))
    for a in bundle.artifacts:
        check = ArtifactCheck(a.path, a.target, a.weight_format)
        report.artifacts.append(check)
        target = get_target(a.target)
        check.problems += target.verify(bundle, a)
        try:
            runner = target.runner(bundle, a)
        except EnvironmentProblem as e:
            check.skipped = f"{a.runtime} cannot run on this machine ({e})"
            continue
        if reference is None:
            if not (model_path / "config.json").is_file():
                check.skipped = f"source model not found at {model_path}; pass --model to compare tokens"
                continue
            ref_model = load_model(model_path, bundle.max_seq_len)
            reference = ReferenceRunner(ref_model).generate(prompt, max_new_tokens).tokens
        try:
            got = runner.generate(prompt, max_new_tokens).tokens
        except BitexportError as e:
            check.problems.append(f"run failed: {e}")
            continue
        check.ran = True
        check.tokens_compared = len(reference)
        agree = common_prefix(got, reference)
        check.tokens_agreeing = agree
        if len(got) != len(reference) and agree == min(len(got), len(reference)):
            check.tokens_agreeing = min(len(got), len(reference))
    return report


def format_report(r: VerifyReport) -> str:
    lines = [f"bundle {r.bundle}"]
    lines.append("  hashes: " + ("ok" if not r.hash_problems else "; ".join(r.hash_problems)))
    for a in r.artifacts:
        head = f"  {a.path} ({a.target}, {a.weight_format}):"
        if a.problems:
            lines.append(f"{head} FAILED: " + "; ".join(a.problems))
        elif a.ran:
            lines.append(f"{head} {a.tokens_agreeing}/{a.tokens_compared} greedy tokens agree with the PyTorch reference")
        else:
            lines.append(f"{head} static checks ok; not run: {a.skipped}")
    lines.append("verify: " + ("ok" if r.ok else "FAILED"))
    return "\n".join(lines)
