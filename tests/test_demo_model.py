"""The bundled demo model (bitexport/demo_model): shipped as package data, read the same way by
bitexport's loader and by transformers' BitNetForCausalLM.

Logit tolerance: both sides compute float32 with the same ternary codes and int8 activation
codes, so they differ by float rounding (~1e-6 in hidden states: different operation order for
the scales). Such a difference occasionally moves an activation across a rounding boundary and
flips one int8 code (1/127 of that token's range); a flip at position 0, which every later
position attends to, spreads to all logits. On the prompt below one flip happens (layer 4,
position 0) and the logits differ by 1.9e-3 of their range; the bound 1e-2 leaves a 5x margin
and stays far below the O(1) error of a wrong packing order, scale convention or layer. The
top-1 token at every prompt position and 32 greedy tokens must be identical.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from bitexport.formats import load_model
from bitexport.runtime.generate import greedy_generate
from hf_reference import hf_greedy, hf_logits, load_hf

DEMO = Path(str(files("bitexport") / "demo_model"))
PROMPT = "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
REL_TOL = 1e-2
STEPS = 32


@pytest.fixture(scope="module")
def ours():
    return load_model(DEMO)


@pytest.fixture(scope="module")
def ref():
    return load_hf(DEMO)


@pytest.fixture(scope="module")
def prompt_ids():
    return Tokenizer.from_file(str(DEMO / "tokenizer.json")).encode(PROMPT).ids


def test_demo_model_is_a_small_tied_bitnet(ours):
    cfg = ours.config
    assert ours.source_format == "hf-bitnet"
    assert ours.details == {"linear_class": "bitlinear", "quantization_mode": "offline"}
    assert 10_000_000 <= cfg.parameter_counts()["total"] <= 30_000_000
    assert cfg.tie_word_embeddings and ours.model.lm_head is None  # llama.cpp needs tied embeddings
    assert cfg.hidden_act == "relu2" and cfg.num_kv_heads < cfg.num_heads
    assert ours.stored["ternary"].format == "uint8 packed 2-bit"
    assert ours.stored["embedding"].format == "bfloat16"
    for name in ("README.md", "training_metrics.json", "tokenizer.json", "config.json", "model.safetensors"):
        assert (DEMO / name).is_file(), name


def test_metrics_describe_this_model(ours):
    metrics = json.loads((DEMO / "training_metrics.json").read_text())
    # fields ModelConfig gained after training (Llama-family options) hold their defaults
    trained, now = metrics["model"]["config"], ours.config.to_dict()
    assert trained == {k: now[k] for k in trained}
    from bitexport.model.config import ModelConfig

    defaults = ModelConfig(**{k: v for k, v in ModelConfig.from_dict(trained).__dict__.items()}).to_dict()
    assert {k: now[k] for k in now.keys() - trained.keys()} == {k: defaults[k] for k in now.keys() - trained.keys()}
    ternary, full = metrics["runs"]
    assert (ternary["variant"], full["variant"]) == ("ternary", "full-precision")
    assert ternary["tokens_seen"] == full["tokens_seen"]
    assert ternary["schedule"] == full["schedule"]


def test_logits_match_transformers(ours, ref, prompt_ids):
    toks = torch.tensor([prompt_ids])
    with torch.no_grad():
        got = ours.model(toks, torch.tensor([0]))
    want = hf_logits(ref, toks)
    assert float((got - want).abs().max() / want.abs().max()) < REL_TOL
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_greedy_tokens_match_transformers(ours, ref, prompt_ids):
    got = greedy_generate(ours.model, prompt_ids, STEPS).tokens
    assert len(got) == STEPS
    assert got == hf_greedy(ref, prompt_ids, STEPS)


def test_recorded_sample_comes_from_these_weights(ours):
    """The greedy sample in training_metrics.json was taken on the training machine from the
    saved checkpoint; the shipped file must reproduce its first tokens."""
    sample = json.loads((DEMO / "training_metrics.json").read_text())["runs"][0]["sample"]
    ids = Tokenizer.from_file(str(DEMO / "tokenizer.json")).encode(sample["prompt"]).ids
    assert greedy_generate(ours.model, ids, STEPS).tokens == sample["tokens"][:STEPS]
