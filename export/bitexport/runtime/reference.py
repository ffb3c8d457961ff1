"""The PyTorch reference decoder as a Runner."""

from __future__ import annotations

import numpy as np
import torch

from bitexport.formats import LoadedModel
from bitexport.runtime.base import check_fits
from bitexport.runtime.generate import Generation, TokenCallback, generate_on
from bitexport.runtime.sampling import GREEDY, SamplingConfig


class ReferenceRunner:
    name = "pytorch-reference"

    def __init__(self, loaded: LoadedModel, threads: int | None = None) -> None:
        self.loaded = loaded
        self.max_seq_len = loaded.model.max_seq_len
        self.stop_ids = loaded.stop_token_ids  # config.json's and generation_config.json's eos
        if threads:
            self.set_threads(threads)
        # one throw-away step so the first timed prefill does not pay PyTorch's lazy start-up
        with torch.no_grad():
            loaded.model(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))
        loaded.model.reset_cache()

    def set_threads(self, n: int) -> None:
        torch.set_num_threads(n)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, sampling: SamplingConfig = GREEDY,
                 on_token: TokenCallback | None = None) -> Generation:
        check_fits(len(prompt_ids), self.max_seq_len, "the model, as loaded,")
        return generate_on(self.loaded.model, prompt_ids, max_new_tokens, self.stop_ids, sampling, on_token)

    @torch.no_grad()
    def next_token_logits(self, prompt_ids: list[int], continuation: list[int]) -> np.ndarray:
        tokens = list(prompt_ids) + list(continuation)
        check_fits(len(tokens), self.max_seq_len + 1, "the model, as loaded,")
        model = self.loaded.model
        last_only, model.last_logits_only = model.last_logits_only, False
        try:
            model.reset_cache()
            logits = model(torch.tensor([tokens]), torch.tensor([0]))[0]
        finally:
            model.last_logits_only = last_only
            model.reset_cache()
        return logits[len(prompt_ids) - 1 :].float().numpy()
