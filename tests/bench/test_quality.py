"""bench/quality.py: teacher-forced perplexity, checked against an independent torch computation and
against exports, and shown to react to a broken head."""

from __future__ import annotations

import copy
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from bitexport.api import export
from bitexport.bench.quality import (
    demo_validation_tokens,
    onnx_step,
    perplexity,
    reference_logits,
    stepwise,
    windows,
)
from bitexport.formats import load_model
from bitexport.targets.onnx.config import OnnxConfig

WINDOW = 24
N_TOKENS = 100  # 5 windows (4 of 24, one of 4): the short last window is scored too
TEMPERATURE = 0.3  # sharper than the model: a text it predicts well (tiny random models have flat logits)


@pytest.fixture(scope="module")
def loaded(tiny_hf):
    return load_model(tiny_hf, WINDOW)


@pytest.fixture(scope="module")
def text(loaded):
    """Tokens sampled from the reference itself (at TEMPERATURE): a text it predicts better than
    chance, so that a broken head has room to be worse."""
    model = loaded.model
    g = torch.Generator().manual_seed(0)
    ids = [5]
    with torch.no_grad():
        while len(ids) < N_TOKENS:
            ctx = ids[-(WINDOW - 1):] if len(ids) % WINDOW else ids[-1:]
            logits = model.forward_train(torch.tensor([ctx]))[0, -1] / TEMPERATURE
            ids.append(int(torch.multinomial(F.softmax(logits, -1), 1, generator=g)))
    return ids


def torch_perplexity(model, tokens, length):
    """exp(mean NLL) with no KV cache (forward_train) and F.cross_entropy: shares only the window cut."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in [tokens[i:i + length] for i in range(0, len(tokens), length)]:
            if len(w) < 2:
                continue
            logits = model.forward_train(torch.tensor([w]))[0].double()
            nll += float(F.cross_entropy(logits[:-1], torch.tensor(w[1:]), reduction="sum"))
            count += len(w) - 1
    return math.exp(nll / count), count


def test_windows_cover_the_text():
    ws = windows(list(range(100)), 24)
    assert [len(w) for w in ws] == [24, 24, 24, 24, 4] and sum(ws, []) == list(range(100))
    assert windows([1, 2, 3], 2) == [[1, 2]]  # a 1-token tail predicts nothing


def test_reference_equals_independent_torch(loaded, text):
    got = perplexity(reference_logits(loaded.model), text, WINDOW)
    want, count = torch_perplexity(loaded.model, text, WINDOW)
    print(f"reference perplexity {got.perplexity:.4f} (torch {want:.4f}), {count} tokens")
    assert got.tokens_scored == count == N_TOKENS - 5
    assert got.perplexity == pytest.approx(want, rel=1e-5)
    assert got.perplexity < 0.5 * loaded.config.vocab_size  # the sampled text is better than chance


def test_wrong_head_is_much_worse(loaded, text):
    good = perplexity(reference_logits(loaded.model), text, WINDOW).perplexity
    broken = copy.deepcopy(loaded.model)
    w = broken.embed_tokens.weight if broken.lm_head is None else broken.lm_head.weight
    broken.lm_head = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        broken.lm_head.weight.copy_(-w)  # a sign error in the head
    bad = perplexity(reference_logits(broken), text, WINDOW).perplexity
    print(f"perplexity {good:.2f}, with a negated head {bad:.2f}")
    assert bad > 2 * good


def _negate_head(src: str, dst: str) -> None:
    proto = onnx.load(src)
    for t in proto.graph.initializer:
        if t.name.startswith(("lm_head.", "embed_tokens.weight")):
            t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(t), t.name))
    onnx.save(proto, dst)


def test_onnx_stepwise_matches_reference_and_catches_a_broken_head(tmp_path, tiny_hf, loaded, text):
    """The exact-activation ONNX export with an fp32 head scores the text as the reference does
    (float rounding only: within 1e-4 relative); the same file with its head table negated does not."""
    export(tiny_hf, "onnx", tmp_path / "b", config=OnnxConfig(head="fp32", activations="exact"), max_seq_len=WINDOW)
    path = str(tmp_path / "b" / "onnx" / "model.onnx")
    ref = perplexity(reference_logits(loaded.model), text, WINDOW).perplexity
    got = perplexity(stepwise(onnx_step(path, threads=1)), text, WINDOW).perplexity
    print(f"onnx exact {got:.5f} vs reference {ref:.5f}")
    assert got == pytest.approx(ref, rel=1e-4)
    _negate_head(path, str(tmp_path / "broken.onnx"))
    bad = perplexity(stepwise(onnx_step(tmp_path / "broken.onnx", threads=1)), text, WINDOW).perplexity
    assert bad > 2 * ref


def test_demo_validation_split(tmp_path):
    """The split is train/data.py's (last 10 % of the text, cut at a line start), encoded with the
    demo tokenizer; a missing corpus is one clear error."""
    from bitexport.cli import DEMO_MODEL
    from bitexport.errors import InputError

    from tokenizers import Tokenizer

    text = "".join(f"line {i} of the play\n" for i in range(200))
    corpus = tmp_path / "t.txt"
    corpus.write_text(text)
    ids, chars = demo_validation_tokens(DEMO_MODEL / "tokenizer.json", corpus, max_tokens=None)
    tail = text[text.index("\n", int(0.9 * len(text))) + 1:]  # the last tenth, from a line start
    assert Tokenizer.from_file(str(DEMO_MODEL / "tokenizer.json")).decode(ids) == tail
    assert chars == len(tail) and tail.startswith("line 18")
    with pytest.raises(InputError, match="not found"):
        demo_validation_tokens(DEMO_MODEL / "tokenizer.json", tmp_path / "missing.txt")
