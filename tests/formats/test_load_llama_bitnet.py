"""The Llama-family BitNet loader against transformers' LlamaForCausalLM with its BitNet quantizer
(from_pretrained on the same folder), on tiny look-alikes of Falcon3-1B-Instruct-1.58bit
(bitlinear, head_dim != hidden / heads, untied head in modules_to_not_convert), Falcon-E-1B-Base
(autobitlinear, use_rms_norm, tied) and Llama3-8B-1.58-100B-tokens (llama3 rope scaling):
tests/llama_family.py.

Tolerance. Both sides compute BitNet's arithmetic in float32 from the same codes, but in different
float orders: transformers' scale is 127 * (1/max|x|) (PyTorch's `127 / t`), ours 127 / max|x|;
it divides by weight_scale * s where we multiply by 1/weight_scale after / s. An ulp decides
round(x * s) at an exact .5 tie, and bf16 checkpoints make exact ties common (a ratio of bf16
values times 127), so a few int8 codes differ by one, and through the KV cache every later position
feels them: measured max |d logit| 0.6-2.7 % of max |logit| over 40 positions (the bitlinear
look-alikes more: two float orders differ there). Bound: REL_TOL = 5 % of max |logit|. What it
catches: the wrong scale convention (>= 120 %), dropping use_rms_norm (~80 %), ignoring llama3
rope scaling (~100 %): each shown below.

Greedy tokens, teacher-forced: our 32 greedy tokens fed to transformers as one sequence; at
every step its argmax must be our token, or (a near tie, listed) our token's logit must trail its
argmax by at most TIE_TOL of max |logit|.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import bitexport.formats.common as common
from bitexport.errors import InputError
from bitexport.formats import LoadOptions, load_model
from bitexport.runtime.generate import greedy_generate
from llama_family import MIRRORS, load_transformers, write_mirror

REL_TOL = 0.05
TIE_TOL = 0.05
STEPS = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=sorted(MIRRORS))
def mirror(request, llama_mirrors):
    folder = llama_mirrors[request.param]
    return folder, load_transformers(folder)


def _tokens(n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 320, (1, n), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _ref_logits(ref, toks: torch.Tensor) -> torch.Tensor:
    with torch._dynamo.config.patch(disable=True):
        return ref(toks).logits


@torch.no_grad()
def _rel_diff(loaded, ref, toks=None) -> float:
    toks = _tokens() if toks is None else toks
    loaded.model.reset_cache()
    got = loaded.model(toks, torch.tensor([0]))
    want = _ref_logits(ref, toks)
    return float((got - want).abs().max() / want.abs().max())


def test_logits_match_transformers(mirror):
    folder, ref = mirror
    d = _rel_diff(load_model(folder), ref)
    print(f"{folder.name}: max |d logit| {d:.2%} of max |logit|")
    assert d < REL_TOL


def test_greedy_tokens_teacher_forced_match_transformers(mirror):
    folder, ref = mirror
    ours = load_model(folder)
    prompt = _tokens(8, seed=3)[0].tolist()
    tokens = greedy_generate(ours.model, prompt, STEPS).tokens
    assert len(tokens) == STEPS
    logits = _ref_logits(ref, torch.tensor([prompt + tokens]))[0, len(prompt) - 1 : -1]
    ties = []
    for step, (row, tok) in enumerate(zip(logits, tokens)):
        best = int(row.argmax())
        if best != tok:
            margin = float((row[best] - row[tok]) / row.abs().max())
            assert margin <= TIE_TOL, f"step {step}: transformers picks {best}, we {tok} (margin {margin:.2%})"
            ties.append((step, margin))
    print(f"{folder.name}: {STEPS - len(ties)}/{STEPS} tokens transformers' argmax; near ties {ties}")


def test_config_is_read_as_published(llama_mirrors):
    f3 = load_model(llama_mirrors["falcon3"]).config
    assert (f3.head_dim, f3.q_size, f3.hidden_size) == (32, 128, 64)  # head_dim != hidden / heads
    assert not f3.tie_word_embeddings and not f3.linear_norm and f3.rope_theta == 1000042
    fe = load_model(llama_mirrors["falcon-e"])
    assert fe.config.linear_norm and fe.config.linear_norm_eps == 1e-5 and fe.config.tie_word_embeddings
    assert all(lin.rms_norm is not None for _, lin in fe.model.bitlinears())
    ll = load_model(llama_mirrors["llama3-8b"]).config
    assert ll.rope_scaling is not None and ll.rope_scaling.factor == 8.0 and ll.num_kv_heads == 1


def test_llama3_rope_frequencies_are_transformers(llama_mirrors):
    from bitexport.model.rope import inverse_frequencies

    cfg = load_model(llama_mirrors["llama3-8b"]).config
    ref = load_transformers(llama_mirrors["llama3-8b"])
    ours = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    plain = inverse_frequencies(cfg.head_dim, cfg.rope_theta)
    theirs = ref.model.rotary_emb.inv_freq.float()
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)
    assert not torch.allclose(plain, theirs, rtol=1e-3, atol=0)  # the scaling does change them here


# --- deliberate breaks: each must fail the parity above ----------------------------------------


def _flip_convention(src, dst):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    q = cfg["quantization_config"]
    q["linear_class"] = "bitlinear" if q.get("linear_class") == "autobitlinear" else "autobitlinear"
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("name", ["falcon3", "falcon-e"])
def test_wrong_scale_convention_is_caught(llama_mirrors, tmp_path, name):
    wrong = load_model(_flip_convention(llama_mirrors[name], tmp_path / name))
    assert _rel_diff(wrong, load_transformers(llama_mirrors[name])) > 10 * REL_TOL


def test_ignoring_use_rms_norm_is_caught(llama_mirrors):
    wrong = load_model(llama_mirrors["falcon-e"])
    for _, lin in wrong.model.bitlinears():
        lin.rms_norm = None
    assert _rel_diff(wrong, load_transformers(llama_mirrors["falcon-e"])) > 10 * REL_TOL


def test_ignoring_rope_scaling_is_caught(llama_mirrors, monkeypatch):
    monkeypatch.setattr(common, "rope_scaling", lambda raw, src: None)
    wrong = load_model(llama_mirrors["llama3-8b"])
    assert _rel_diff(wrong, load_transformers(llama_mirrors["llama3-8b"])) > 10 * REL_TOL


# --- --ternarize, modules_to_not_convert, refusals ---------------------------------------------


def test_ternarize_reads_a_bf16_llama_as_transformers_online_mode(tmp_path):
    """A plain Llama checkpoint in bf16 (Falcon-E's prequantized revision: no quantization_config,
    the input norms' tensors present) loads only with --ternarize, and then computes what
    transformers computes when the same weights are declared online autobitlinear with use_rms_norm
    (absmean at every forward; eps left at its default, as --ternarize assumes)."""
    q = {"linear_class": "autobitlinear", "quant_method": "bitnet", "quantization_mode": "online", "use_rms_norm": True}
    online = write_mirror(tmp_path / "online", "falcon-e", quantization_config=q)
    plain = _edited(online, tmp_path / "plain", quantization_config=None)
    with pytest.raises(InputError, match="--ternarize"):
        load_model(plain)
    ours = load_model(plain, options=LoadOptions(ternarize=True))
    assert ours.details["ternarize"] and ours.config.linear_norm and ours.config.linear_norm_eps == 1e-6
    d = _rel_diff(ours, load_transformers(online))
    print(f"ternarized at load vs transformers online: {d:.2%}")
    assert d < REL_TOL


def test_ternarize_refuses_packed_codes(llama_mirrors):
    with pytest.raises(InputError, match="drop --ternarize"):
        load_model(llama_mirrors["falcon3"], options=LoadOptions(ternarize=True))


def _edited(src, dst, **fields):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in fields.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("skip, match", [
    (["lm_head", "model.layers.1.mlp.down_proj"], "keeps 'model.layers.1.mlp.down_proj'"),
    (["lm_head", "model.layers.*.mlp"], "keeps 'model.layers.0.mlp.gate_proj' and 5 more"),
    ([], "does not name 'lm_head'"),
])
def test_modules_to_not_convert_other_than_the_head_is_refused(llama_mirrors, tmp_path, skip, match):
    q = {**MIRRORS["falcon3"]["quantization_config"], "modules_to_not_convert": skip}
    folder = _edited(llama_mirrors["falcon3"], tmp_path / "m", quantization_config=q)
    with pytest.raises(InputError, match=match):
        load_model(folder)


def test_modules_to_not_convert_matching_is_transformers():
    from transformers.quantizers.quantizers_utils import should_convert_module

    from bitexport.formats.llama_bitnet import _not_converted

    names = ["lm_head", "model.layers.1.mlp.down_proj", "model.layers.11.self_attn.q_proj", "model.layers.0.mlp.gate_proj"]
    patterns = [["lm_head"], ["mlp"], ["model.layers.1"], ["layers.*.mlp"], ["model.layers.*.mlp"], ["down_proj"],
                ["mlp.gate"], ["q_proj", "lm_head"], ["model.layers.1.mlp"]]
    for p in patterns:
        for n in names:
            assert _not_converted(n, tuple(p)) == (not should_convert_module(n, p)), (n, p)


@pytest.mark.parametrize("rope, match", [
    ({"rope_type": "yarn", "factor": 4.0}, "rope scaling type 'yarn' is not supported"),
    ({"type": "linear", "factor": 2.0}, "rope scaling type 'linear' is not supported"),
    ({"rope_type": "llama3", "factor": 8.0}, "llama3 rope scaling lacks low_freq_factor"),
])
def test_other_rope_scaling_is_refused_by_name(llama_mirrors, tmp_path, rope, match):
    folder = _edited(llama_mirrors["llama3-8b"], tmp_path / "r", rope_scaling=rope)
    with pytest.raises(InputError, match=match):
        load_model(folder)


def test_cli_refusal_is_one_line(llama_mirrors, tmp_path, capsys):
    from bitexport.cli import main

    folder = _edited(llama_mirrors["llama3-8b"], tmp_path / "r", rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    assert main(["export", str(folder), "--target", "desktop", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("bitexport: error:")]
    assert len(errors) == 1 and "'dynamic'" in errors[0] and "Traceback" not in err
