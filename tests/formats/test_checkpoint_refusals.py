"""Checkpoints the loaders must refuse, naming the tensor: tensors the architecture has no place
for (they would be silently dropped), and poisoned values (NaN/inf, a zero or negative
weight_scale, an all-zero shadow weight, a 2-bit value 3 in a packed weight).

Each case edits a copy of a tiny fixture and goes through the CLI (`bitexport inspect`, which
loads the model): one line on stderr, exit 2, the tensor's name in the line. The unedited
fixtures load (every other test in tests/formats shows it), so each refusal is the edit's doing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from bitexport.cli import main
from bitexport.formats import load_model
from bitexport.formats.tiny import make_tiny_checkpoint

Edit = Callable[[dict[str, torch.Tensor]], None]

NAN, INF = float("nan"), float("inf")
L0, L1 = "model.layers.0.", "model.layers.1."
Q0, D1 = L0 + "self_attn.q_proj.", L1 + "mlp.down_proj."


def _edited(src: Path, dst: Path, edit: Edit) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def _refused(capsys, folder: Path, *needles: str) -> str:
    code = main(["inspect", str(folder)])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("bitexport: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def tiny_auto(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("auto") / "m", "hf-bitnet", linear_class="autobitlinear")


@pytest.fixture(scope="module")
def tiny_online(tmp_path_factory):
    return make_tiny_checkpoint(
        tmp_path_factory.mktemp("online") / "m", "hf-bitnet", linear_class="autobitlinear", mode="online"
    )


# ----------------------------------------------------------------------------- unused tensors

EXTRA = "model.layers.0.self_attn.q_norm.weight"


@pytest.mark.parametrize("fixture", ["tiny_hf", "tiny_1bitllm"])
def test_unknown_tensor_is_refused_by_name(request, capsys, tmp_path, fixture):
    src = request.getfixturevalue(fixture)

    def add(t):
        t[EXTRA] = torch.ones(16)

    line = _refused(capsys, _edited(src, tmp_path / "m", add), repr(EXTRA), "does not use")
    assert "1 tensor(s)" in line


def test_many_unknown_tensors_are_listed_five_and_counted(capsys, tmp_path, tiny_hf):
    names = [f"model.extra.{i}" for i in range(8)]

    def add(t):
        t.update({n: torch.zeros(2) for n in names})

    line = _refused(capsys, _edited(tiny_hf, tmp_path / "m", add), "8 tensor(s)", "and 3 more")
    assert sum(repr(n) in line for n in names) == 5


@pytest.mark.parametrize("fixture", ["tiny_hf", "tiny_1bitllm"])
def test_rotary_inv_freq_is_a_known_harmless_extra(request, tmp_path, fixture):
    src = request.getfixturevalue(fixture)
    cfg = load_model(src).config

    def add(t):
        inv = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
        for i in range(cfg.num_layers):
            t[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv.clone()

    a, b = load_model(src).model, load_model(_edited(src, tmp_path / "m", add)).model
    toks = torch.arange(10).reshape(1, 10)
    with torch.no_grad():
        assert torch.equal(a(toks, torch.tensor([0])), b(toks, torch.tensor([0])))


def test_tied_head_stored_anyway_is_accepted_only_as_a_copy_of_the_embedding(capsys, tmp_path, tiny_hf):
    assert load_model(tiny_hf).config.tie_word_embeddings

    def same(t):
        t["lm_head.weight"] = t["model.embed_tokens.weight"].clone()

    load_model(_edited(tiny_hf, tmp_path / "same", same))

    def other(t):
        t["lm_head.weight"] = t["model.embed_tokens.weight"] * 2

    _refused(capsys, _edited(tiny_hf, tmp_path / "other", other), "'lm_head.weight'", "tie_word_embeddings")


def test_1bitllm_sub_norm_in_a_later_layer_only_is_refused(capsys, tmp_path, tiny_1bitllm):
    def drop_layer0(t):
        del t["model.layers.0.self_attn.inner_attn_ln.weight"]

    _refused(capsys, _edited(tiny_1bitllm, tmp_path / "a", drop_layer0), repr(L1 + "self_attn.inner_attn_ln.weight"))

    def drop_layer1(t):
        del t["model.layers.1.mlp.ffn_layernorm.weight"]

    missing = repr(L1 + "mlp.ffn_layernorm.weight")
    _refused(capsys, _edited(tiny_1bitllm, tmp_path / "b", drop_layer1), missing, "missing")


def test_hf_bitnet_does_not_take_1bitllm_sub_norm_names(capsys, tmp_path, tiny_hf):
    def rename(t):
        t["model.layers.0.self_attn.inner_attn_ln.weight"] = t.pop("model.layers.0.self_attn.attn_sub_norm.weight")

    _refused(capsys, _edited(tiny_hf, tmp_path / "m", rename), repr(L0 + "self_attn.attn_sub_norm.weight"), "missing")


# ----------------------------------------------------------------------------- poisoned values


def _poison(kind: str, name: str, value: float = 0.0, index: tuple = (0,)) -> Edit:
    def edit(t):
        if kind == "set":
            t[name][index] = value
        elif kind == "fill":
            t[name].fill_(value)
        elif kind == "negate":
            t[name] = -t[name]
        else:  # "code-3": a 2-bit field holding 3, no ternary code (0, 1, 2 are -1, 0, +1)
            t[name][0, 0] |= 3

    return edit


# (fixture, case, tensor, how it is poisoned)
POISONS = [
    # transformers `bitnet`, linear_class bitlinear (W = codes / weight_scale)
    ("tiny_hf", "scale-nan", Q0 + "weight_scale", ("fill", NAN)),
    ("tiny_hf", "scale-inf", D1 + "weight_scale", ("fill", INF)),
    ("tiny_hf", "scale-zero", L0 + "self_attn.k_proj.weight_scale", ("fill", 0.0)),
    ("tiny_hf", "scale-negative", L1 + "mlp.up_proj.weight_scale", ("negate",)),
    ("tiny_hf", "norm-nan", L0 + "input_layernorm.weight", ("set", NAN, (3,))),
    ("tiny_hf", "sub-norm-inf", L1 + "self_attn.attn_sub_norm.weight", ("set", INF)),
    ("tiny_hf", "ffn-sub-norm-nan", L0 + "mlp.ffn_sub_norm.weight", ("set", NAN, (7,))),
    ("tiny_hf", "final-norm-nan", "model.norm.weight", ("set", NAN)),
    ("tiny_hf", "embedding-inf", "model.embed_tokens.weight", ("set", -INF, (5, 7))),
    ("tiny_hf", "packed-code-3", L0 + "mlp.gate_proj.weight", ("code-3",)),
    # autobitlinear (W = codes * weight_scale)
    ("tiny_auto", "scale-zero", L1 + "self_attn.o_proj.weight_scale", ("fill", 0.0)),
    ("tiny_auto", "scale-negative", L0 + "self_attn.v_proj.weight_scale", ("negate",)),
    ("tiny_auto", "scale-nan", L0 + "mlp.gate_proj.weight_scale", ("fill", NAN)),
    # autobitlinear online: full-precision shadow weights
    ("tiny_online", "shadow-nan", Q0 + "weight", ("set", NAN, (2, 3))),
    ("tiny_online", "shadow-all-zero", D1 + "weight", ("fill", 0.0)),
    # 1bitLLM: fp16 shadow weights, untied head, sub-norms under their own names
    ("tiny_1bitllm", "shadow-nan", L0 + "self_attn.o_proj.weight", ("set", NAN, (1, 2))),
    ("tiny_1bitllm", "shadow-inf", L1 + "mlp.gate_proj.weight", ("set", INF, (0, 9))),
    ("tiny_1bitllm", "shadow-all-zero", L1 + "self_attn.k_proj.weight", ("fill", 0.0)),
    ("tiny_1bitllm", "head-nan", "lm_head.weight", ("set", NAN, (4, 4))),
    ("tiny_1bitllm", "embedding-nan", "model.embed_tokens.weight", ("set", NAN, (0, 0))),
    ("tiny_1bitllm", "inner-attn-ln-nan", L0 + "self_attn.inner_attn_ln.weight", ("set", NAN)),
    ("tiny_1bitllm", "ffn-layernorm-inf", L1 + "mlp.ffn_layernorm.weight", ("set", INF)),
]


@pytest.mark.parametrize(
    "fixture,tensor,how", [(f, t, h) for f, _, t, h in POISONS], ids=[f"{f}-{c}" for f, c, _, _ in POISONS]
)
def test_poisoned_checkpoint_is_refused_naming_the_tensor(request, capsys, tmp_path, fixture, tensor, how):
    src = request.getfixturevalue(fixture)
    _refused(capsys, _edited(src, tmp_path / "m", _poison(how[0], tensor, *how[1:])), repr(tensor))


def test_poisoned_checkpoint_is_refused_at_export(tmp_path, tiny_hf):
    from bitexport import export
    from bitexport.errors import InputError

    bad = _edited(tiny_hf, tmp_path / "m", _poison("fill", Q0 + "weight_scale", 0.0))
    with pytest.raises(InputError, match=Q0 + "weight_scale"):
        export(bad, "desktop", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_config_json_of_the_fixtures_is_untouched_by_edits(tmp_path, tiny_hf):
    # the edits above change tensors only: the refusals are not config errors
    dst = _edited(tiny_hf, tmp_path / "m", lambda t: None)
    assert json.loads((dst / "config.json").read_text()) == json.loads((tiny_hf / "config.json").read_text())
    load_model(dst)


@pytest.mark.parametrize(
    "field,value", [("rope_theta", 0), ("rope_theta", -10000.0), ("rms_norm_eps", 0.0), ("rms_norm_eps", "1e-5x")]
)
def test_non_positive_theta_or_eps_in_config_is_refused(capsys, tmp_path, tiny_1bitllm, field, value):
    dst = tmp_path / "m"
    shutil.copytree(tiny_1bitllm, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg[field] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    _refused(capsys, dst, repr(field), "positive")
