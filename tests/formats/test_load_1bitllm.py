"""The 1bitLLM loader against a plain-numpy implementation of the published BitNet b1.58 arithmetic.

The numpy side reads the safetensors file itself and follows the paper's recipe in float64:
gamma = mean|W|, Wq = clip(round(W / gamma), -1, 1); per token s = 127 / max|x|,
xq = clip(round(x * s), -128, 127); y = (xq . Wq) * gamma / s; Llama blocks (RMSNorm, rotate-half
RoPE, causal softmax attention with grouped KV heads, SiLU-gated MLP).

Tolerance: our float32 and numpy's float64 agree to ~1e-6 relative before quantization, but a value
of x * s lying within that distance of a .5 boundary rounds the other way, moving one int8 code by
one step (1/127 of the token's range). Over the ~10^4 quantized activations of a forward pass a few
such flips are expected, each shifting logits by well under 1% of their range; so the bound is 2%
of the logits' range, while a wrong scale or a wrong code is O(100%).

Sub-norms as 1bitLLM's modeling_bitnet.py applies them: RMSNorm `self_attn.inner_attn_ln` over the
attention output before o_proj, RMSNorm `mlp.ffn_layernorm` over silu(gate) * up before down_proj,
both with the config's rms_norm_eps (llama.cpp's converter maps the same names to its BitNet
ATTN_SUB_NORM / FFN_SUB_NORM). The reference applies each where its tensor is in the file.

The tiny fixture uses non-default rope_theta and rms_norm_eps (tests/conftest.py): the last tests
show that a loader dropping the sub-norms, or ignoring theta or eps, fails the comparison.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import bitexport.formats.common as common
from bitexport.errors import InputError
from bitexport.formats import load_model
from bitexport.formats.tiny import make_tiny_checkpoint
from bitexport.runtime.generate import greedy_generate

REL_TOL = 2e-2


def _rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _bitlinear(x, w):
    gamma = max(np.abs(w).mean(), 1e-5)
    wq = np.clip(np.round(w / gamma), -1, 1)
    s = 127.0 / np.maximum(np.abs(x).max(-1, keepdims=True), 1e-5)
    xq = np.clip(np.round(x * s), -128, 127)
    return (xq @ wq.T) * gamma / s


def _rope(x, pos, theta):
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    f = pos[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([f, f], -1)), np.sin(np.concatenate([f, f], -1))
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + np.concatenate([-x2, x1], -1) * sin


def numpy_logits(folder, tokens: list[int]) -> np.ndarray:
    cfg = json.loads((folder / "config.json").read_text())
    t = {k: v.astype(np.float64) for k, v in load_file(str(folder / "model.safetensors")).items()}
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // nh
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    n = len(tokens)
    pos = np.arange(n, dtype=np.float64)
    x = t["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, t[p + "input_layernorm.weight"], eps)
        q = _bitlinear(h, t[p + "self_attn.q_proj.weight"]).reshape(n, nh, hd).transpose(1, 0, 2)
        k = _bitlinear(h, t[p + "self_attn.k_proj.weight"]).reshape(n, nkv, hd).transpose(1, 0, 2)
        v = _bitlinear(h, t[p + "self_attn.v_proj.weight"]).reshape(n, nkv, hd).transpose(1, 0, 2)
        q, k = _rope(q, pos, theta), _rope(k, pos, theta)
        k, v = np.repeat(k, nh // nkv, axis=0), np.repeat(v, nh // nkv, axis=0)
        a = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ v).transpose(1, 0, 2).reshape(n, nh * hd)
        if p + "self_attn.inner_attn_ln.weight" in t:
            o = _rms(o, t[p + "self_attn.inner_attn_ln.weight"], eps)
        x = x + _bitlinear(o, t[p + "self_attn.o_proj.weight"])
        h = _rms(x, t[p + "post_attention_layernorm.weight"], eps)
        g = _bitlinear(h, t[p + "mlp.gate_proj.weight"])
        u = _bitlinear(h, t[p + "mlp.up_proj.weight"])
        m = g / (1 + np.exp(-g)) * u
        if p + "mlp.ffn_layernorm.weight" in t:
            m = _rms(m, t[p + "mlp.ffn_layernorm.weight"], eps)
        x = x + _bitlinear(m, t[p + "mlp.down_proj.weight"])
    x = _rms(x, t["model.norm.weight"], eps)
    head = t["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else t["lm_head.weight"]
    return x @ head.T


def _tokens(vocab: int) -> list[int]:
    return torch.randint(0, vocab, (24,), generator=torch.Generator().manual_seed(0)).tolist()


def _rel_diff_from_numpy(model, folder) -> tuple[float, float]:
    """(largest logit difference / logit range, share of equal argmaxes) against the numpy model."""
    tokens = _tokens(model.config.vocab_size)
    model.reset_cache()
    with torch.no_grad():
        ours = model(torch.tensor([tokens]), torch.tensor([0]))[0].double().numpy()
    ref = numpy_logits(folder, tokens)
    return float(np.abs(ours - ref).max() / np.abs(ref).max()), float((ours.argmax(-1) == ref.argmax(-1)).mean())


def test_fixture_has_sub_norms_with_non_trivial_values(tiny_1bitllm):
    t = load_file(str(tiny_1bitllm / "model.safetensors"))
    for i in range(json.loads((tiny_1bitllm / "config.json").read_text())["num_hidden_layers"]):
        for name in (f"model.layers.{i}.self_attn.inner_attn_ln.weight", f"model.layers.{i}.mlp.ffn_layernorm.weight"):
            assert t[name].astype(np.float64).std() > 0.05, name


def test_logits_match_numpy_reference(tiny_1bitllm):
    m = load_model(tiny_1bitllm)
    assert m.config.attn_sub_norm and m.config.ffn_sub_norm
    rel, agree = _rel_diff_from_numpy(m.model, tiny_1bitllm)
    assert rel < REL_TOL
    assert agree >= 0.95


def test_greedy_tokens_match_numpy_reference(tiny_1bitllm):
    m = load_model(tiny_1bitllm)
    prompt = [5, 17, 33, 80, 2, 9, 100, 7]
    ours = greedy_generate(m.model, prompt, 32).tokens
    seq = list(prompt)
    for _ in range(32):  # full recomputation each step: no cache on the numpy side
        seq.append(int(numpy_logits(tiny_1bitllm, seq)[-1].argmax()))
    assert ours == seq[len(prompt):]


def test_codes_are_the_published_absmean_ternarization(tiny_1bitllm):
    m = load_model(tiny_1bitllm)
    t = load_file(str(tiny_1bitllm / "model.safetensors"))
    for name, lin in m.model.bitlinears():
        w = t[f"model.{name}.weight"].astype(np.float64)
        gamma = np.abs(w).mean()
        expected = np.clip(np.round(w / gamma), -1, 1)
        assert np.array_equal(lin.codes.numpy(), expected.astype(np.int8)), name
        assert abs(float(lin.scale) - gamma) <= 1e-6 * gamma


def _drop_sub_norms(model) -> None:
    """What the loader did before it read them: no norm before o_proj and down_proj."""
    for layer in model.layers:
        layer.self_attn.attn_sub_norm = None
        layer.mlp.ffn_sub_norm = None


def _ignore_sub_norm_weights(model) -> None:
    """Normalizing but with unit weights: a loader that builds the norms and never fills them."""
    for layer in model.layers:
        layer.self_attn.attn_sub_norm.weight.data.fill_(1.0)
        layer.mlp.ffn_sub_norm.weight.data.fill_(1.0)


@pytest.mark.parametrize("break_it", [_drop_sub_norms, _ignore_sub_norm_weights], ids=["dropped", "unit-weights"])
def test_a_loader_ignoring_sub_norms_fails_the_comparison(tiny_1bitllm, break_it):
    m = load_model(tiny_1bitllm)
    break_it(m.model)
    rel, _ = _rel_diff_from_numpy(m.model, tiny_1bitllm)
    assert rel > 5 * REL_TOL
    prompt = [5, 17, 33, 80, 2, 9, 100, 7]
    seq = list(prompt)
    for _ in range(8):
        seq.append(int(numpy_logits(tiny_1bitllm, seq)[-1].argmax()))
    assert greedy_generate(m.model, prompt, 8).tokens != seq[len(prompt):]


def test_checkpoint_without_sub_norms_still_loads_and_matches(tmp_path):
    folder = make_tiny_checkpoint(tmp_path / "plain", "1bitllm", attn_sub_norm=False, ffn_sub_norm=False)
    assert not any("inner_attn_ln" in k or "ffn_layernorm" in k for k in load_file(str(folder / "model.safetensors")))
    m = load_model(folder)
    assert not m.config.attn_sub_norm and not m.config.ffn_sub_norm
    rel, _ = _rel_diff_from_numpy(m.model, folder)
    assert rel < REL_TOL


@pytest.mark.parametrize("field", ["rope_theta", "rms_norm_eps"])
def test_a_loader_ignoring_the_configs_field_fails_the_comparison(tiny_1bitllm, monkeypatch, field):
    """The fixture's theta and eps differ from 1bitLLM's defaults; reading the default instead
    (what a loader ignoring config.json does) must break parity with numpy."""
    monkeypatch.setattr(common, field, lambda raw, default: default)
    m = load_model(tiny_1bitllm)
    assert getattr(m.config, field) != json.loads((tiny_1bitllm / "config.json").read_text())[field]
    rel, _ = _rel_diff_from_numpy(m.model, tiny_1bitllm)
    assert rel > 2 * REL_TOL


def test_head_dim_other_than_hidden_over_heads_is_refused(tiny_1bitllm, tmp_path):
    import shutil

    folder = tmp_path / "hd"
    shutil.copytree(tiny_1bitllm, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["head_dim"] = 2 * cfg["hidden_size"] // cfg["num_attention_heads"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="head_dim"):
        load_model(folder)
