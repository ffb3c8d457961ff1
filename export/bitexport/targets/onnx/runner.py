"""onnxruntime-genai's Generator as a Runner: token ids in (never text, so prompts match the
reference exactly), greedy, prefill and decode timed apart."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bitexport.errors import BundleError, require
from bitexport.runtime.generate import Generation, GenerationStats


class OnnxGenaiRunner:
    name = "onnxruntime-genai"

    def __init__(
        self,
        folder: str | Path,
        max_seq_len: int,
        eos_ids: tuple[int, ...] = (),
        threads: int | None = None,
        ignore_eos: bool = False,
    ) -> None:
        """`threads`: ORT intra-op threads (None: ORT's default); `ignore_eos`: always generate
        max_new_tokens (benchmarks), by asking genai for a min_length equal to its max_length."""
        og = require("onnxruntime_genai", "onnxruntime-genai>=0.18,<0.19")
        self.folder = Path(folder)
        if not (self.folder / "genai_config.json").is_file():
            raise BundleError(f"{self.folder}: no genai_config.json; export the bundle again")
        self.max_seq_len = max_seq_len
        self.eos_ids = () if ignore_eos else tuple(eos_ids)
        self.ignore_eos = ignore_eos
        self._og = og
        self.set_threads(threads)

    def set_threads(self, threads: int | None) -> None:
        """ORT intra-op threads (None: ORT's default); a session option, so the model is reloaded."""
        config = self._og.Config(str(self.folder))
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": int(threads)}}}}))
        self.model = None  # free the old session before the new one loads
        try:
            self.model = self._og.Model(config)
        except Exception as e:  # genai raises a bare RuntimeError for every load failure
            raise BundleError(f"{self.folder}: onnxruntime-genai cannot load the model ({str(e).splitlines()[0]}); export the bundle again") from None

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        budget = min(max_new_tokens, self.max_seq_len - len(prompt_ids))
        stats = GenerationStats(prompt_tokens=len(prompt_ids))
        out: list[int] = []
        if budget <= 0:
            return Generation(out, stats)
        params = self._og.GeneratorParams(self.model)
        # genai's max_length counts the prompt; it also sizes the shared KV buffer
        length = len(prompt_ids) + budget
        params.set_search_options(do_sample=False, max_length=length, num_beams=1, min_length=length if self.ignore_eos else 0)
        gen = self._og.Generator(self.model, params)
        t0 = time.perf_counter()
        gen.append_tokens(list(map(int, prompt_ids)))  # runs the prompt through the model
        gen.generate_next_token()  # picks the first token from the prompt's logits (no model run)
        token = int(gen.get_next_tokens()[0])
        stats.prefill_s = time.perf_counter() - t0
        out.append(token)
        t0 = time.perf_counter()
        while len(out) < budget and token not in self.eos_ids and not gen.is_done():
            gen.generate_next_token()  # one model run on the last token, then the argmax
            token = int(gen.get_next_tokens()[0])
            out.append(token)
        stats.decode_s = time.perf_counter() - t0
        stats.new_tokens = len(out)
        return Generation(out, stats)
