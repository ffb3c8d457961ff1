"""The shared sampler (runtime/sampling.py) and the streamed text (runtime/text.py TextStream),
without a model: the distribution a pick draws from against transformers' own logits warpers,
the draws against that distribution, seeds, greedy, refusals, and multi-byte characters cut
between BPE tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitexport.errors import InputError
from bitexport.formats.tiny import tiny_tokenizer
from bitexport.runtime.sampling import Sampler, SamplingConfig, filtered_probs
from bitexport.runtime.text import REPLACEMENT, TextCodec, TextStream

CONFIGS = [
    SamplingConfig(temperature=1.0),
    SamplingConfig(temperature=0.7, top_k=20),
    SamplingConfig(temperature=1.3, top_p=0.9),
    SamplingConfig(temperature=0.8, top_k=50, top_p=0.8),
    SamplingConfig(temperature=1.0, top_p=0.05),  # only the top token survives
]


def _transformers_probs(logits: np.ndarray, c: SamplingConfig) -> np.ndarray:
    """transformers' warpers in generate's order: temperature, top-k, top-p, then softmax."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    x = torch.tensor(logits, dtype=torch.float64)[None]
    ids = torch.zeros(1, 1, dtype=torch.long)
    x = TemperatureLogitsWarper(c.temperature)(ids, x)
    if c.top_k:
        x = TopKLogitsWarper(c.top_k)(ids, x)
    if c.top_p < 1:
        x = TopPLogitsWarper(c.top_p)(ids, x)
    return torch.softmax(x, -1)[0].numpy()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"T{c.temperature}-k{c.top_k}-p{c.top_p}")
def test_the_distribution_is_transformers(config):
    rng = np.random.default_rng(0)
    for _ in range(5):
        logits = rng.normal(0, 3, 320).astype(np.float32)
        np.testing.assert_allclose(filtered_probs(logits, config), _transformers_probs(logits, config), atol=1e-9)


def test_draws_follow_the_distribution():
    """20000 seeded draws: every token's frequency within 0.01 of its probability (binomial sd
    <= 0.0036), and tokens cut by top-k / top-p never drawn."""
    logits = np.log(np.array([0.30, 0.25, 0.20, 0.10, 0.08, 0.04, 0.02, 0.01]))
    config = SamplingConfig(temperature=1.0, top_k=6, top_p=0.9, seed=11)
    want = filtered_probs(logits, config)
    assert (want[5:] == 0).all() and want[4] > 0  # top-p keeps 5 tokens (0.93 of the mass), top-k 6
    sampler = Sampler(config)
    counts = np.bincount([sampler.pick(logits) for _ in range(20000)], minlength=logits.size)
    np.testing.assert_allclose(counts / counts.sum(), want, atol=0.01)
    assert (counts[5:] == 0).all()


def test_seeds_greedy_and_top_k_1():
    rng = np.random.default_rng(1)
    rows = [rng.normal(0, 2, 320) for _ in range(40)]
    sampled = SamplingConfig(temperature=1.0, seed=5)
    picks = [Sampler(sampled) for _ in range(2)]
    first = [picks[0].pick(r) for r in rows]
    assert first == [picks[1].pick(r) for r in rows]  # same seed, same tokens
    other = Sampler(SamplingConfig(temperature=1.0, seed=6))
    assert first != [other.pick(r) for r in rows]
    argmax = [int(r.argmax()) for r in rows]
    assert first != argmax
    assert [Sampler().pick(r) for r in rows] == argmax
    top1 = Sampler(SamplingConfig(temperature=2.0, top_k=1, seed=5))
    assert [top1.pick(r) for r in rows] == argmax


@pytest.mark.parametrize("kwargs,flag", [
    ({"temperature": -1.0}, "--temperature"), ({"temperature": float("nan")}, "--temperature"),
    ({"top_p": 1.5}, "--top-p"), ({"top_p": 0.0}, "--top-p"), ({"top_k": -2}, "--top-k"), ({"seed": -1}, "--seed"),
])
def test_bad_values_name_their_flag(kwargs, flag):
    with pytest.raises(InputError, match=flag):
        SamplingConfig(**kwargs)


def test_stream_holds_back_cut_characters(tmp_path):
    """Byte-level BPE splits characters outside its merges into one token a byte: decoding after
    each token would print U+FFFD; the stream hands each character out whole, and its pieces join
    to exactly the decoded text."""
    path = tmp_path / "tokenizer.json"
    tiny_tokenizer().save(str(path))
    codec = TextCodec(path)
    text = "To be, café ☕ 日本語 — or not 🙂."
    ids = codec.encode(text)
    assert codec.decode(ids) == text
    stream = TextStream(codec)
    pieces = [stream.push(t) for t in ids]
    pieces.append(stream.finish())
    assert "".join(pieces) == text
    assert not any(REPLACEMENT in p for p in pieces)
    # the test meets cut characters: decoding each prefix naively shows U+FFFD somewhere
    assert any(codec.decode(ids[:i]).endswith(REPLACEMENT) for i in range(1, len(ids)))
    assert pieces.count("") >= 3


def test_stream_finish_hands_out_a_character_that_never_completes(tmp_path):
    path = tmp_path / "tokenizer.json"
    tiny_tokenizer().save(str(path))
    codec = TextCodec(path)
    ids = codec.encode("ab☕")[:-1]  # the cup's last byte is missing
    stream = TextStream(codec)
    out = "".join(stream.push(t) for t in ids)
    assert out == "ab" and stream.finish() == REPLACEMENT
