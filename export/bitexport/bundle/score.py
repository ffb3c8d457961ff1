"""Teacher-forced scoring of an artifact's output under the reference's logits (plain numpy).

Every quantity is relative to the reference's largest |logit| at that step, so one tolerance
serves models whose logits are O(1) (random tiny ones) and O(10) (trained ones) alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TokenScore:
    steps: int = 0  # tokens scored
    argmax: int = 0  # tokens that are the reference's argmax
    near_ties: list[tuple[int, float]] = field(default_factory=list)  # (step, margin) accepted within tolerance
    misses: list[tuple[int, float]] = field(default_factory=list)  # (step, margin) beyond tolerance

    @property
    def worst_margin(self) -> float:
        return max((m for _, m in self.near_ties + self.misses), default=0.0)


def token_margins(reference: np.ndarray, tokens: list[int]) -> np.ndarray:
    """Per step: (reference's max logit - its logit of the token taken) / max|reference logit|;
    0 where the token is the argmax. reference: [len(tokens), V], row i scoring tokens[i]."""
    ref = reference[: len(tokens)].astype(np.float64)
    taken = ref[np.arange(len(tokens)), tokens]
    return (ref.max(axis=1) - taken) / np.abs(ref).max(axis=1).clip(min=1e-12)


def score_tokens(reference: np.ndarray, tokens: list[int], tolerance: float) -> TokenScore:
    margins = token_margins(reference, tokens)
    s = TokenScore(steps=len(tokens))
    for i, m in enumerate(margins):
        if m <= 0:
            s.argmax += 1
        elif m <= tolerance:
            s.near_ties.append((i, float(m)))
        else:
            s.misses.append((i, float(m)))
    return s


def logit_deviation(got: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(largest |difference|, largest |difference| / max|reference logit| of its row) over all rows."""
    diff = np.abs(got.astype(np.float64) - reference.astype(np.float64)).max(axis=1)
    scale = np.abs(reference.astype(np.float64)).max(axis=1).clip(min=1e-12)
    return float(diff.max()), float((diff / scale).max())


def perplexity(logits: np.ndarray, targets: list[int]) -> float:
    """exp(mean negative log-likelihood) of `targets` under `logits` [len(targets) (+1), V]."""
    z = logits[: len(targets)].astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z[np.arange(len(targets)), targets] - np.log(np.exp(z).sum(axis=1))
    return float(np.exp(-logp.mean()))
