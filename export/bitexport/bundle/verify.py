"""`bitexport verify`: a bundle's hashes, each artifact's static checks, and, for every artifact
this machine can run, its own greedy tokens scored under the PyTorch reference.

The artifact generates greedily from a fixed prompt; the reference then scores that very sequence
teacher-forced. A step passes when the artifact's token is the reference's argmax or trails it by
at most the artifact's stated tolerance (bundle/tolerance.py): two tokens whose logits nearly tie
may swap under any correct change of float rounding order, so a near-tie is not an error, while a
broken export trails by far more. Where the runner shows its logits, the largest logit difference
over those steps and the perplexity on a fixed held text (bundle/held_text.py) are bounded too.
Without the source model nothing is compared, and the report says so instead of "ok".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from bitexport.bundle.held_text import HELD_TEXT
from bitexport.bundle.score import TokenScore, logit_deviation, perplexity, score_tokens
from bitexport.bundle.store import Bundle, read_bundle
from bitexport.bundle.tolerance import Tolerance, tolerance_for
from bitexport.errors import BitexportError, EnvironmentProblem, InputError
from bitexport.runtime.base import LogitsRunner
from bitexport.runtime.generate import common_prefix
from bitexport.runtime.text import TextCodec
from bitexport.targets import get_target

VERIFY_PROMPT = "ROMEO: But soft, what light through yonder window breaks?"
HELD_TOKENS = 256  # at most; fewer where the bundle's KV cache is shorter


@dataclass
class ArtifactCheck:
    path: str
    target: str
    weight_format: str
    problems: list[str] = field(default_factory=list)
    not_compared: str = ""  # why the tokens were not compared ("" when they were)
    generated: list[int] = field(default_factory=list)  # the artifact's own greedy tokens
    emulated: str = ""  # "aarch64": the tokens came from the emulated runtime (--emulate)
    desktop_agreeing: int | None = None  # --emulate: common prefix with the desktop runtime's tokens
    tolerance: Tolerance | None = None
    tokens: TokenScore | None = None
    logits_compared: bool = False
    max_logit_dev: float = 0.0
    max_logit_dev_rel: float = 0.0
    ppl: float | None = None
    ppl_reference: float | None = None
    held_tokens: int = 0

    @property
    def compared(self) -> bool:
        return self.tokens is not None

    @property
    def ppl_rel(self) -> float | None:
        return None if self.ppl is None or not self.ppl_reference else self.ppl / self.ppl_reference - 1

    @property
    def failures(self) -> list[str]:
        out = list(self.problems)
        t = self.tolerance
        if self.tokens is not None and t is not None:
            if self.tokens.misses:
                worst = max(m for _, m in self.tokens.misses)
                steps = ", ".join(str(i) for i, _ in self.tokens.misses[:8]) + (", ..." if len(self.tokens.misses) > 8 else "")
                out.append(f"{len(self.tokens.misses)} of {self.tokens.steps} tokens trail the reference's argmax by more than "
                           f"{t.token} of max|logit| (up to {worst:.3f}; steps {steps})")
            if self.logits_compared and self.max_logit_dev_rel > t.logits:
                out.append(f"logits differ by up to {self.max_logit_dev_rel:.3f} of max|logit| (> {t.logits})")
            if self.ppl_rel is not None and abs(self.ppl_rel) > t.ppl:
                out.append(f"perplexity {self.ppl:.3f} vs the reference's {self.ppl_reference:.3f} ({self.ppl_rel:+.1%}, > {t.ppl:.0%})")
        return out

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class VerifyReport:
    bundle: str
    hash_problems: list[str]
    artifacts: list[ArtifactCheck]
    reference: str = ""  # the source model compared with ("" when none was found)
    allow_no_reference: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.hash_problems) or any(not a.ok for a in self.artifacts)

    @property
    def verdict(self) -> str:
        """"FAILED", "ok", or "not compared" (the source model was missing)."""
        if self.failed:
            return "FAILED"
        if not self.reference and any(a.not_compared.startswith("source model") for a in self.artifacts):
            return "not compared"
        return "ok"

    @property
    def exit_code(self) -> int:
        if self.verdict == "ok" or (self.verdict == "not compared" and self.allow_no_reference):
            return 0
        return 1

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def _reference_runner(bundle: Bundle, model: str | Path | None):
    """(ReferenceRunner, its folder) or (None, why not)."""
    from bitexport.formats import LoadOptions, is_model_input, load_model
    from bitexport.runtime.reference import ReferenceRunner

    path = Path(model) if model else Path(bundle.manifest["source"].get("path", ""))
    if not is_model_input(path):
        how = "" if model else " (the path recorded in the manifest)"
        return None, f"source model not found at {path}{how}; pass --model MODEL to compare tokens"
    # a checkpoint exported with --ternarize is read the same way again
    options = LoadOptions(ternarize=bool(bundle.manifest["source"].get("ternarize", False)))
    return ReferenceRunner(load_model(path, bundle.max_seq_len, options)), str(path)


def check_artifact(check: ArtifactCheck, runner, reference, prompt: list[int], held: list[int], max_new_tokens: int) -> None:
    """Generate with the artifact, score its tokens teacher-forced, and where it shows its logits
    compare them and its perplexity on the held text with the reference's."""
    try:
        tokens = runner.generate(prompt, max_new_tokens).tokens
    except BitexportError as e:
        check.problems.append(f"run failed: {e}")
        return
    check.generated = tokens
    ref_rows = reference.next_token_logits(prompt, tokens)
    check.tokens = score_tokens(ref_rows, tokens, check.tolerance.token)
    if not isinstance(runner, LogitsRunner):
        return
    got_rows = runner.next_token_logits(prompt, tokens)
    check.logits_compared = True
    check.max_logit_dev, check.max_logit_dev_rel = logit_deviation(got_rows, ref_rows)
    if len(held) >= 2:
        check.held_tokens = len(held)
        check.ppl = perplexity(runner.next_token_logits(held[:1], held[1:]), held[1:])
        check.ppl_reference = perplexity(reference.next_token_logits(held[:1], held[1:]), held[1:])


def verify_bundle(
    path: str | Path, model: str | Path | None = None, max_new_tokens: int = 32, allow_no_reference: bool = False,
    *, emulate: str | None = None,
) -> VerifyReport:
    """`emulate="aarch64"`: ExecuTorch artifacts run on the emulated aarch64 runtime
    (targets/executorch/emulated.py), scored against the reference like any runner; their
    agreement with the desktop ExecuTorch runtime is reported beside it."""
    bundle = read_bundle(path)
    if emulate is not None:
        from bitexport.targets.executorch.emulated import check_arch

        check_arch(emulate)
        if not any(a.target == "executorch" for a in bundle.artifacts):
            raise InputError(
                f"{path} holds no ExecuTorch .pte; --emulate {emulate} verifies ExecuTorch artifacts only "
                "(export one with `bitexport export --target android`)"
            )
    report = VerifyReport(str(path), bundle.hash_problems(), [], allow_no_reference=allow_no_reference)
    prompt: list[int] = []
    held: list[int] = []
    if not report.hash_problems:  # a damaged tokenizer is reported as such, never parsed
        codec = TextCodec(bundle.tokenizer_path)
        prompt = codec.encode(VERIFY_PROMPT)
        # leave room for the prompt and the new tokens in the KV cache
        max_new_tokens = max(1, min(max_new_tokens, bundle.max_seq_len - len(prompt) - 1))
        held = codec.encode(HELD_TEXT)[: min(HELD_TOKENS, bundle.max_seq_len)]
    reference, why_no_reference = None, ""
    for a in bundle.artifacts:
        check = ArtifactCheck(a.path, a.target, a.weight_format, tolerance=tolerance_for(a))
        report.artifacts.append(check)
        target = get_target(a.target)
        check.problems += target.verify(bundle, a)
        if check.problems or report.hash_problems:
            check.not_compared = "the static checks failed" if check.problems else "the hashes differ"
            continue
        if check.tolerance is None:
            check.not_compared = f"no tolerance is stated for {a.target} {a.weight_format} {a.details}"
            continue
        emulated = emulate is not None and a.target == "executorch"
        try:
            if emulated:
                from bitexport.targets.executorch.emulated import emulated_runner

                runner, check.emulated = emulated_runner(bundle, a, emulate), emulate
            else:
                runner = target.runner(bundle, a)
        except EnvironmentProblem as e:
            check.not_compared = f"{a.runtime} cannot run on this machine ({e})"
            continue
        if reference is None and not why_no_reference:
            reference, found = _reference_runner(bundle, model)
            if reference is None:
                why_no_reference = found
            else:
                report.reference = found
        if reference is None:
            check.not_compared = why_no_reference
            continue
        check_artifact(check, runner, reference, prompt, held, max_new_tokens)
        if emulated and check.generated:
            try:  # informational: the verdict stays the reference's, as for every runner
                desktop = target.runner(bundle, a).generate(prompt, max_new_tokens).tokens
                check.desktop_agreeing = common_prefix(check.generated, desktop)
            except BitexportError:
                pass  # reported as "desktop ExecuTorch runtime not run"
    return report


def _artifact_lines(a: ArtifactCheck) -> list[str]:
    head = f"  {a.path} ({a.target}, {a.weight_format}):"
    lines = []
    if a.tokens is None:
        lines.append(f"{head} tokens not compared: {a.not_compared}" if not a.problems else head)
    else:
        t, s = a.tolerance, a.tokens
        lines.append(head)
        lines.append(f"    tolerance: token {t.token}, logits {t.logits}, perplexity {t.ppl:.0%} of the reference ({t.why})")
        lines.append(f"    steps checked {s.steps}; argmax {s.argmax}; near-ties accepted {len(s.near_ties)}"
                     + ("" if not s.near_ties else " (margins " + ", ".join(f"step {i}: {m:.4f}" for i, m in s.near_ties) + ")"))
        if a.emulated:
            desk = ("desktop ExecuTorch runtime not run" if a.desktop_agreeing is None
                    else f"{a.desktop_agreeing}/{s.steps} with the desktop ExecuTorch runtime")
            lines.append(f"    emulated {a.emulated}: {s.argmax}/{s.steps} greedy tokens agree with the PyTorch "
                         f"reference, {desk}")
        if a.logits_compared:
            lines.append(f"    max logit deviation {a.max_logit_dev:.4g} ({a.max_logit_dev_rel:.4f} of max|logit|) "
                         f"over the {s.steps + 1} positions after the prompt")
            lines.append(f"    perplexity on the held text ({a.held_tokens} tokens): {a.ppl:.4f} vs reference "
                         f"{a.ppl_reference:.4f} ({a.ppl_rel:+.2%})")
        else:
            lines.append("    logits: this runner does not show them; compared token by token only")
    for f in a.failures:
        lines.append(f"    FAILED: {f}")
    lines.append(f"    verdict: {'FAILED' if a.failures else ('ok' if a.compared else 'not compared')}")
    return lines


def format_report(r: VerifyReport) -> str:
    lines = [f"bundle {r.bundle}", "  hashes: " + ("ok" if not r.hash_problems else "; ".join(r.hash_problems))]
    lines.append(f"  reference: {r.reference or 'none'}")
    for a in r.artifacts:
        lines += _artifact_lines(a)
    verdict = r.verdict
    if verdict == "not compared":
        verdict += (" (hashes and static checks only: --allow-no-reference given)" if r.allow_no_reference
                    else "; pass --model MODEL to compare tokens, or --allow-no-reference to accept hashes and static checks only")
    lines.append("verify: " + verdict)
    return "\n".join(lines)


__all__ = ["ArtifactCheck", "VerifyReport", "check_artifact", "format_report", "verify_bundle"]
