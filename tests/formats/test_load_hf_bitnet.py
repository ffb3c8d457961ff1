"""The HF `bitnet` loader against transformers' BitNetForCausalLM, loaded from the same folder.

Tolerance: both sides compute in float32 with the same integer activation codes, so logits differ
only by float rounding (summation order, 1/weight_scale vs dividing by it): measured ~1e-5 on
logits of magnitude ~40. A rounding tie in the int8 activation quantization could flip one code
by 1/127 of a token's range, so the bound is 1e-3 of the logits' range: far below the O(1)
relative error of a flipped scale convention or packing order (tests below show it).

The fixtures use non-default rope_theta and rms_norm_eps (tests/conftest.py), so a loader ignoring
either breaks parity too (shown below). head_dim stays hidden_size / num_attention_heads:
transformers' BitNet sizes attn_sub_norm by hidden_size, so no other head_dim can run there.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import bitexport.formats.common as common
import bitexport.formats.hf_bitnet as hf_bitnet
from bitexport.formats import load_model
from bitexport.runtime.generate import greedy_generate
from hf_reference import hf_greedy, hf_logits, load_hf

REL_TOL = 1e-3
STEPS = 32


def _tokens(vocab: int, n: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_logits_match_transformers(tiny_hf_variant):
    ours = load_model(tiny_hf_variant)
    ref = load_hf(tiny_hf_variant)
    toks = _tokens(ours.config.vocab_size)
    with torch.no_grad():
        got = ours.model(toks, torch.tensor([0]))
    assert _rel_diff(got, hf_logits(ref, toks)) < REL_TOL


def test_greedy_tokens_match_transformers(tiny_hf_variant):
    ours = load_model(tiny_hf_variant)
    ref = load_hf(tiny_hf_variant)
    prompt = _tokens(ours.config.vocab_size, 8, seed=3)[0].tolist()
    got = greedy_generate(ours.model, prompt, STEPS).tokens
    assert got == hf_greedy(ref, prompt, STEPS)
    assert len(got) == STEPS


def test_kv_cache_decoding_equals_full_recomputation(tiny_hf):
    m = load_model(tiny_hf).model
    toks = _tokens(m.config.vocab_size, 20)
    with torch.no_grad():
        full = m.forward_train(toks)
        m.reset_cache()
        steps = [m(toks[:, :7], torch.tensor([0]))]
        for i in range(7, 20):
            steps.append(m(toks[:, i : i + 1], torch.tensor([i])))
    assert torch.allclose(torch.cat(steps, dim=1), full, rtol=0, atol=1e-4 * float(full.abs().max()))


def test_codes_and_scale_read_exactly(tiny_hf_variant):
    """The ternary codes and scales we hold equal the effective weights transformers uses."""
    ours = load_model(tiny_hf_variant)
    ref = load_hf(tiny_hf_variant)
    cls = json.loads((tiny_hf_variant / "config.json").read_text())["quantization_config"]
    with torch._dynamo.config.patch(disable=True):
        for name, lin in ours.model.bitlinears():
            hf_mod = ref.get_submodule(f"model.{name}")
            if hf_mod.__class__.__name__ == "BitLinear":
                from transformers.integrations.bitnet import unpack_weights

                codes = unpack_weights(hf_mod.weight, dtype=torch.float32)
                eff = codes / hf_mod.weight_scale.float()
            elif cls["quantization_mode"] == "online":
                from transformers.integrations.bitnet import WeightQuant

                eff = WeightQuant.apply(hf_mod.weight.float())
                codes = None
            else:
                codes = hf_mod.weight.float()
                eff = codes * hf_mod.weight_scale.float()
            if codes is not None:
                assert torch.equal(lin.codes.float(), codes)
            assert torch.allclose(lin.codes.float() * lin.scale, eff, rtol=1e-6, atol=0)


def test_flipped_scale_convention_is_caught(tiny_hf, tmp_path):
    """Reading a bitlinear checkpoint with autobitlinear's convention must break parity."""
    flipped = tmp_path / "flipped"
    shutil.copytree(tiny_hf, flipped)
    cfg = json.loads((flipped / "config.json").read_text())
    cfg["quantization_config"]["linear_class"] = "autobitlinear"
    (flipped / "config.json").write_text(json.dumps(cfg))
    wrong = load_model(flipped)
    ref = load_hf(tiny_hf)
    toks = _tokens(wrong.config.vocab_size)
    with torch.no_grad():
        assert _rel_diff(wrong.model(toks, torch.tensor([0])), hf_logits(ref, toks)) > 100 * REL_TOL


def test_flipped_packing_order_is_caught(tiny_hf, monkeypatch):
    """Unpacking with the high bit pair first (the opposite order) must break parity."""
    real = hf_bitnet.unpack_rows

    def reversed_order(packed, out):
        p = packed.to(torch.uint8)
        swapped = ((p & 0x03) << 6) | ((p & 0x0C) << 2) | ((p & 0x30) >> 2) | ((p & 0xC0) >> 6)
        return real(swapped, out)

    monkeypatch.setattr(hf_bitnet, "unpack_rows", reversed_order)
    wrong = load_model(tiny_hf)
    ref = load_hf(tiny_hf)
    toks = _tokens(wrong.config.vocab_size)
    with torch.no_grad():
        assert _rel_diff(wrong.model(toks, torch.tensor([0])), hf_logits(ref, toks)) > 100 * REL_TOL


@pytest.mark.parametrize("field", ["rope_theta", "rms_norm_eps"])
def test_a_loader_ignoring_the_configs_field_is_caught(tiny_hf, monkeypatch, field):
    """Reading the format's default instead of config.json's value must break parity."""
    monkeypatch.setattr(common, field, lambda raw, default: default)
    wrong = load_model(tiny_hf)
    assert getattr(wrong.config, field) != json.loads((tiny_hf / "config.json").read_text())[field]
    ref = load_hf(tiny_hf)
    toks = _tokens(wrong.config.vocab_size)
    with torch.no_grad():
        assert _rel_diff(wrong.model(toks, torch.tensor([0])), hf_logits(ref, toks)) > 10 * REL_TOL


@pytest.mark.parametrize("out_features", [4, 7, 9, 12])
def test_hf_packing_matches_transformers(out_features):
    from transformers.integrations.bitnet import pack_weights

    from bitexport.formats.hf_packing import pack_rows, unpack_rows

    codes = torch.randint(-1, 2, (out_features, 5), generator=torch.Generator().manual_seed(out_features), dtype=torch.int8)
    ours = pack_rows(codes)
    theirs = pack_weights(codes.clone().to(torch.int32))
    if out_features % 4 == 0:  # transformers leaves padding rows as 0 bits; ours stores code 1 (weight 0)
        assert torch.equal(ours, theirs)
    assert torch.equal(unpack_rows(ours, out_features), codes)


def test_sharded_checkpoint_loads_like_single_file(tiny_hf, tmp_path):
    from safetensors.torch import load_file, save_file

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(tiny_hf / f, sharded / f)
    tensors = load_file(str(tiny_hf / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(sharded / fname))
        weight_map.update({k: fname for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    a, b = load_model(tiny_hf).model, load_model(sharded).model
    toks = _tokens(a.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(a(toks, torch.tensor([0])), b(toks, torch.tensor([0])))
