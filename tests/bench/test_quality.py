"""bench/quality.py: teacher-forced perplexity, checked against an independent torch computation and
against exports, and shown to react to a broken head."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from bitexport.api import export
from bitexport.bench.quality import (
    demo_validation_text,
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
    export(tiny_hf, "onnx", tmp_path / "b", config=OnnxConfig(head="fp32", embedding="fp32", activations="exact"), max_seq_len=WINDOW)
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
    ids, text_out = demo_validation_text(DEMO_MODEL / "tokenizer.json", corpus, max_tokens=None)
    tail = text[text.index("\n", int(0.9 * len(text))) + 1:]  # the last tenth, from a line start
    assert Tokenizer.from_file(str(DEMO_MODEL / "tokenizer.json")).decode(ids) == tail
    assert text_out == tail and tail.startswith("line 18")
    with pytest.raises(InputError, match="not found"):
        demo_validation_text(DEMO_MODEL / "tokenizer.json", tmp_path / "missing.txt")


# --- llama-perplexity's protocol and the GGUF's tokenizer --------------------------------------------

def _seeded_logits(vocab: int):
    def run(window):
        g = torch.Generator().manual_seed(hash(tuple(window)) % (2**31))
        return torch.randn(len(window), vocab, generator=g).numpy()
    return run


def test_llamacpp_protocol_scores_the_second_half_of_full_windows():
    """perplexity(score_from=n//2, full_windows=True) against a loop written after perplexity.cpp:
    floor(len / n) chunks, positions n/2 .. n-2 of each predict the next token."""
    vocab, n = 13, 20
    tokens = np.random.default_rng(1).integers(0, vocab, 107).tolist()  # 5 chunks and 7 tokens dropped
    fn = _seeded_logits(vocab)
    nll, count = 0.0, 0
    for c in range(len(tokens) // n):
        w = tokens[c * n:(c + 1) * n]
        logp = torch.log_softmax(torch.from_numpy(fn(w)).double(), -1)
        for j in range(n // 2, n - 1):
            nll -= float(logp[j, w[j + 1]])
            count += 1
    got = perplexity(fn, tokens, n, score_from=n // 2, full_windows=True)
    assert (got.windows, got.tokens_scored, count) == (5, 45, 45)
    assert math.isclose(got.nll_sum, nll, rel_tol=1e-12)
    every = perplexity(fn, tokens, n)  # the bench's own protocol scores other tokens
    assert every.tokens_scored == 5 * 19 + 6 and not math.isclose(every.nll_sum, nll, rel_tol=1e-3)


def test_gguf_vocab_is_the_tokenizers_own(tmp_path):
    import json

    from tokenizers import Tokenizer

    from bitexport.bench.llamacpp.vocab import bpe_vocab
    from bitexport.cli import DEMO_MODEL
    from bitexport.errors import InputError

    path = DEMO_MODEL / "tokenizer.json"
    tok, v = Tokenizer.from_file(str(path)), bpe_vocab(path)
    assert len(v["tokens"]) == tok.get_vocab_size() == 4096
    assert all(v["tokens"][i] == tok.id_to_token(i) for i in range(4096))
    assert v["token_types"][0] == 3 and set(v["token_types"][1:]) == {1}  # <|endoftext|> is control
    assert len(v["merges"]) == len(json.loads(path.read_text())["model"]["merges"])
    assert all(m.count(" ") == 1 for m in v["merges"])
    other = json.loads(path.read_text())
    other["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "t.json").write_text(json.dumps(other))
    with pytest.raises(InputError, match="byte-level BPE"):
        bpe_vocab(tmp_path / "t.json")


def _llamacpp():
    from bitexport.bench.llamacpp import find_llamacpp

    return find_llamacpp()


@pytest.mark.skipif(_llamacpp() is None, reason="llama.cpp is not built (python -m bitexport.bench.llamacpp build)")
def test_llama_perplexity_agrees_with_the_reference_under_its_protocol(tmp_path):
    """The demo model's weights with a SiLU gate (the FFN llama.cpp's BitNet graph computes): the
    GGUF, given our tokenizer, cuts a held text (Shakespeare's sonnets) into our ids, and llama-perplexity's figure
    matches the PyTorch reference scored under the same protocol, not under the bench's own."""
    import json
    import shutil

    from bitexport.bench.llamacpp import convert, write_1bitllm
    from bitexport.bench.llamacpp import perplexity as lp
    from bitexport.bench.llamacpp.vocab import retokenize
    from tokenizers import Tokenizer

    from bitexport.bundle.held_text import HELD_TEXT
    from bitexport.cli import DEMO_MODEL
    from bitexport.errors import EnvironmentProblem

    lc = _llamacpp()
    model = tmp_path / "silu"
    shutil.copytree(DEMO_MODEL, model)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "hidden_act": "silu"}))
    n = 64
    text = HELD_TEXT  # in the package: the shared corpus is not beside every checkout
    ids = Tokenizer.from_file(str(model / "tokenizer.json")).encode(text).ids
    (tmp_path / "t.txt").write_text(text)
    loaded = load_model(model, n)
    gguf = convert(lc, write_1bitllm(loaded, tmp_path / "onebit"), "tq2_0", tmp_path / "m.gguf")["path"]
    try:  # the converter's stand-in SentencePiece vocabulary cuts text into other ids
        stand_in = lp.tokenize(lc, Path(gguf), tmp_path / "t.txt")
    except EnvironmentProblem:
        stand_in = None
    assert stand_in != ids
    g = retokenize(lc.source / "gguf-py", Path(gguf), tmp_path / "v.gguf", model / "tokenizer.json", 0)
    llama_ids = lp.tokenize(lc, g, tmp_path / "t.txt")
    assert llama_ids == ids
    got = lp.perplexity(lc, g, tmp_path / "t.txt", n, 2)
    ref = perplexity(reference_logits(loaded.model), llama_ids, n, score_from=n // 2, full_windows=True)
    other = perplexity(reference_logits(loaded.model), llama_ids, n)
    print(f"llama-perplexity {got['perplexity']:.4f}, reference under its protocol {ref.perplexity:.4f}, "
          f"under the bench's {other.perplexity:.4f}")
    assert got["tokens_scored"] == ref.tokens_scored == len(ids) // n * (n - n // 2 - 1)
    # llama.cpp quantizes activations per 256-block and keeps the embedding in F16: a small difference
    assert abs(got["perplexity"] / ref.perplexity - 1) < 0.02, (got, ref.perplexity)
    assert abs(got["perplexity"] / other.perplexity - 1) > 0.02, (got, other.perplexity)
