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
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.numpy import load_file

from bitexport.formats import load_model
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
    import json

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
        x = x + _bitlinear(o, t[p + "self_attn.o_proj.weight"])
        h = _rms(x, t[p + "post_attention_layernorm.weight"], eps)
        g = _bitlinear(h, t[p + "mlp.gate_proj.weight"])
        u = _bitlinear(h, t[p + "mlp.up_proj.weight"])
        x = x + _bitlinear(g / (1 + np.exp(-g)) * u, t[p + "mlp.down_proj.weight"])
    x = _rms(x, t["model.norm.weight"], eps)
    head = t["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else t["lm_head.weight"]
    return x @ head.T


def test_logits_match_numpy_reference(tiny_1bitllm):
    m = load_model(tiny_1bitllm)
    tokens = torch.randint(0, m.config.vocab_size, (24,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        ours = m.model(torch.tensor([tokens]), torch.tensor([0]))[0].double().numpy()
    ref = numpy_logits(tiny_1bitllm, tokens)
    assert np.abs(ours - ref).max() / np.abs(ref).max() < REL_TOL
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.95


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
