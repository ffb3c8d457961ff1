"""onnxruntime-genai's Generator as a Runner: token ids in (never text, so prompts match the
reference exactly), greedy, prefill and decode timed apart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bitexport.errors import BundleError, InputError, require
from bitexport.runtime.base import check_fits
from bitexport.runtime.generate import Generation, GenerationStats

MODEL_FILE = "model.onnx"


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
        self._threads = threads
        self._session = None  # next_token_logits makes a new one with these threads
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
            raise InputError("the prompt is empty")
        check_fits(len(prompt_ids), self.max_seq_len, "this ONNX model's KV cache")
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

    def next_token_logits(self, prompt_ids: list[int], continuation: list[int]) -> np.ndarray:
        """The same model.onnx through a plain onnxruntime.InferenceSession (genai hides the
        logits): the prompt in one call, then one token a call on the session's own KV cache, as
        genai runs it. The graph outputs the last position's logits only, hence one call a token."""
        import onnxruntime as ort

        check_fits(len(prompt_ids) + len(continuation), self.max_seq_len + 1, "this ONNX model's KV cache")
        if self._session is None:
            so = ort.SessionOptions()
            if self._threads:
                so.intra_op_num_threads = int(self._threads)
            try:
                self._session = ort.InferenceSession(str(self.folder / MODEL_FILE), so, providers=["CPUExecutionProvider"])
            except Exception as e:  # ORT raises its own exception types for every load failure
                raise BundleError(f"{self.folder / MODEL_FILE}: onnxruntime cannot load it ({str(e).splitlines()[0]}); export the bundle again") from None
        sess = self._session
        outputs = [o.name for o in sess.get_outputs()]
        feeds = {}
        for i in sess.get_inputs():
            if i.name.startswith("past_key_values."):
                _, kv_heads, _, head_dim = i.shape  # [batch, kv_heads, past, head_dim]: static but past
                feeds[i.name] = np.zeros((1, kv_heads, 0, head_dim), np.float32)
        rows, ids, pos = [], list(prompt_ids), 0
        for step in range(len(continuation) + 1):
            feeds["input_ids"] = np.array([ids], np.int64)
            feeds["attention_mask"] = np.ones((1, pos + len(ids)), np.int64)
            out = dict(zip(outputs, sess.run(None, feeds)))
            rows.append(out["logits"].reshape(-1, out["logits"].shape[-1])[-1])
            for name in out:
                if name.startswith("present."):
                    feeds["past_key_values." + name[len("present."):]] = out[name]
            pos += len(ids)
            if step < len(continuation):
                ids = [int(continuation[step])]
        return np.stack(rows).astype(np.float32)
