"""A Core ML .mlpackage as a Runner (macOS 15+ only: Core ML's runtime, `predict` and states).

The whole prompt in one `predict` (mask [1, 1, n, n], causal), then one token a call (mask
[1, 1, 1, past + 1] of zeros), the KV cache living in the model's state; picks, stop tokens and
streaming by the shared loop (runtime/generate.py). The stop tokens are the package's metadata.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bitexport.errors import BundleError, EnvironmentProblem, require
from bitexport.runtime.base import check_fits
from bitexport.runtime.generate import Generation, TokenCallback, timed_generate
from bitexport.runtime.sampling import GREEDY, SamplingConfig

COREMLTOOLS_PIN = "coremltools==9.0"  # what pyproject.toml pins
META = "bitexport."  # the prefix of bitexport's user_defined_metadata keys (target.py writes them)


def metadata_stop_ids(metadata: dict) -> tuple[int, ...]:
    """The stop tokens a package carries: `bitexport.stop_token_ids`, else (older packages)
    `bitexport.eos_token_ids`; comma-separated ids."""
    text = metadata.get(META + "stop_token_ids", metadata.get(META + "eos_token_ids", ""))
    return tuple(int(i) for i in text.split(",") if i.strip())


def prompt_mask(n: int) -> np.ndarray:
    """Additive causal mask for a prompt of n tokens and an empty cache."""
    keep = np.tril(np.ones((n, n), dtype=bool))
    return np.where(keep, 0.0, -np.inf).astype(np.float16).reshape(1, 1, n, n)


class CoreMLRunner:
    name = "coreml"

    def __init__(self, package: str | Path, max_seq_len: int, stop_ids: tuple[int, ...] | None = None,
                 compute_units: str = "CPU_AND_GPU") -> None:
        """`stop_ids`: tokens that end a generation (None: the package's metadata)."""
        if sys.platform != "darwin":
            raise EnvironmentProblem("Core ML models run on macOS only; use `bitexport verify` for the static checks here")
        ct = require("coremltools", COREMLTOOLS_PIN)
        self.package = Path(package)
        if not self.package.is_dir():
            raise BundleError(f"{self.package}: missing; export the bundle again")
        self.max_seq_len = max_seq_len
        try:
            self.model = ct.models.MLModel(str(self.package), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as e:  # Core ML reports compile and load failures as bare exceptions
            raise BundleError(f"{self.package}: Core ML cannot load it ({str(e).splitlines()[0]}); export the bundle again") from None
        self.stop_ids = metadata_stop_ids(dict(self.model.user_defined_metadata)) if stop_ids is None else tuple(stop_ids)

    def set_threads(self, n: int) -> None:
        """Core ML schedules its own threads (and the GPU); nothing to set."""

    def _step(self, state, ids: list[int], mask: np.ndarray) -> np.ndarray:
        out = self.model.predict({"input_ids": np.array([ids], dtype=np.int32), "causal_mask": mask}, state=state)
        return np.asarray(out["logits"]).reshape(-1)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, sampling: SamplingConfig = GREEDY,
                 on_token: TokenCallback | None = None) -> Generation:
        check_fits(len(prompt_ids), self.max_seq_len, "this Core ML model's KV cache")
        state = self.model.make_state()

        def step(tokens: list[int], pos: int) -> np.ndarray:
            mask = prompt_mask(len(tokens)) if pos == 0 else np.zeros((1, 1, 1, pos + 1), dtype=np.float16)
            return self._step(state, tokens, mask)

        return timed_generate(step, prompt_ids, max_new_tokens, self.max_seq_len, self.stop_ids, sampling, on_token)
