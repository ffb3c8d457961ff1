"""onnxruntime-genai's Generator as a Runner: token ids in (never text, so prompts match the
reference exactly), prefill and decode timed apart.

genai runs the model (`append_tokens`, its KV cache) and shows the logits (`get_logits`); the pick
is bitexport's shared one (runtime/sampling.py), so greedy and seeded sampling give the same tokens
as the other runners. The stop tokens are genai_config.json's eos_token_id, as genai reads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bitexport.errors import BundleError, InputError, require
from bitexport.runtime.base import check_fits
from bitexport.runtime.generate import Generation, TokenCallback, timed_generate
from bitexport.runtime.sampling import GREEDY, SamplingConfig

MODEL_FILE = "model.onnx"


class OnnxGenaiRunner:
    name = "onnxruntime-genai"

    def __init__(
        self,
        folder: str | Path,
        max_seq_len: int,
        stop_ids: tuple[int, ...] | None = None,
        threads: int | None = None,
        ignore_eos: bool = False,
    ) -> None:
        """`stop_ids`: tokens that end a generation (None: genai_config.json's eos_token_id);
        `threads`: ORT intra-op threads (None: ORT's default); `ignore_eos`: always generate
        max_new_tokens (benchmarks), by asking genai for a min_length equal to its max_length."""
        og = require("onnxruntime_genai", "onnxruntime-genai>=0.18,<0.19")
        self.folder = Path(folder)
        if not (self.folder / "genai_config.json").is_file():
            raise BundleError(f"{self.folder}: no genai_config.json; export the bundle again")
        self.max_seq_len = max_seq_len
        if stop_ids is None:
            stop_ids = config_stop_ids(self.folder / "genai_config.json")
        self.stop_ids = () if ignore_eos else tuple(stop_ids)
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

    def generate(self, prompt_ids: list[int], max_new_tokens: int, sampling: SamplingConfig = GREEDY,
                 on_token: TokenCallback | None = None) -> Generation:
        if not prompt_ids:
            raise InputError("the prompt is empty")
        check_fits(len(prompt_ids), self.max_seq_len, "this ONNX model's KV cache")
        budget = max(min(max_new_tokens, self.max_seq_len - len(prompt_ids)), 1)
        params = self._og.GeneratorParams(self.model)
        # genai's max_length counts the prompt; it also sizes the shared KV buffer. Its own search
        # picks nothing here (no generate_next_token): the loop appends the tokens it picked
        length = len(prompt_ids) + budget
        params.set_search_options(do_sample=False, max_length=length, num_beams=1, min_length=length if self.ignore_eos else 0)
        gen = self._og.Generator(self.model, params)

        def step(tokens: list[int], pos: int) -> np.ndarray:
            gen.append_tokens(list(map(int, tokens)))  # one model run on these tokens, after the cache
            return gen.get_logits().reshape(-1)  # [1, 1, V]: the last position's

        return timed_generate(step, prompt_ids, max_new_tokens, self.max_seq_len, self.stop_ids, sampling, on_token)

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


def config_stop_ids(genai_config: Path) -> tuple[int, ...]:
    """genai_config.json's model.eos_token_id (an id or a list), as genai reads it."""
    try:
        eos = json.loads(genai_config.read_text())["model"].get("eos_token_id")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise BundleError(f"{genai_config}: unreadable or without a model section; export the bundle again") from None
    ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
    return tuple(int(i) for i in ids)
