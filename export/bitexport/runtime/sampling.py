"""The one way every runner picks the next token from its logits: greedy, or sampled with a
temperature, top-k and top-p (nucleus), in that order (transformers' order of logits warpers).

Picks happen here in float64 numpy on a copy of the runner's logits, never inside a runtime, so
one seed gives the same tokens on every runner whose logits agree, and greedy is exactly argmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bitexport.errors import InputError


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 = greedy (the default; top_k, top_p and seed then play no part);
    top_k 0 = no top-k cut; top_p 1 = no nucleus cut; seed None = a fresh random seed."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        # the CLI passes the user's numbers straight in: each refusal names its flag
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise InputError(f"--temperature must be 0 (greedy) or a positive number (got {self.temperature})")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise InputError(f"--top-p must be in (0, 1] (got {self.top_p}); 1 keeps every token")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise InputError(f"--top-k must be a whole number >= 0 (got {self.top_k}); 0 keeps every token")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise InputError(f"--seed must be a whole number >= 0 (got {self.seed})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed}


GREEDY = SamplingConfig()


def _as_numpy(logits) -> np.ndarray:
    if hasattr(logits, "detach"):  # a torch tensor (reference and ExecuTorch runners)
        logits = logits.detach().float().numpy()
    return np.asarray(logits).reshape(-1)


def filtered_probs(logits: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """The distribution a sampled pick draws from: softmax(logits / T) restricted to the top_k
    largest logits, then to the smallest set of most likely tokens holding top_p of the mass."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1) / config.temperature
    if 0 < config.top_k < x.size:
        kth = np.partition(x, -config.top_k)[-config.top_k]
        x = np.where(x < kth, -np.inf, x)
    p = np.exp(x - x.max())
    p /= p.sum()
    if config.top_p < 1:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]  # mass of the tokens ranked above each one
        drop = order[before >= config.top_p]  # the top token always stays (its `before` is 0)
        p[drop] = 0.0
        p /= p.sum()
    return p


class Sampler:
    """Picks tokens for one generation; a sampled generation with a seed is reproducible."""

    def __init__(self, config: SamplingConfig = GREEDY) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)

    def pick(self, logits) -> int:
        x = _as_numpy(logits)
        if self.config.greedy:
            return int(x.argmax())
        p = filtered_probs(x, self.config)
        # inverse CDF with one uniform draw a token: the same draws whatever the vocabulary size
        cdf = np.cumsum(p)
        return int(min(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"), x.size - 1))


__all__ = ["GREEDY", "Sampler", "SamplingConfig", "filtered_probs"]
