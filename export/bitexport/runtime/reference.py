"""The PyTorch reference decoder as a Runner."""

from __future__ import annotations

import torch

from bitexport.formats import LoadedModel
from bitexport.runtime.generate import Generation, greedy_generate


class ReferenceRunner:
    name = "pytorch-reference"

    def __init__(self, loaded: LoadedModel, threads: int | None = None) -> None:
        self.loaded = loaded
        self.max_seq_len = loaded.model.max_seq_len
        if threads:
            self.set_threads(threads)
        # one throw-away step so the first timed prefill does not pay PyTorch's lazy start-up
        with torch.no_grad():
            loaded.model(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))
        loaded.model.reset_cache()

    def set_threads(self, n: int) -> None:
        torch.set_num_threads(n)

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        return greedy_generate(self.loaded.model, prompt_ids, max_new_tokens, self.loaded.config.eos_token_ids)
