"""Shared fixtures: tiny checkpoints of every supported format, built once per test session."""

from __future__ import annotations

import pytest
import torch

from bitexport.formats.tiny import make_tiny_checkpoint

# What the loader fixtures set away from each format's defaults (the values its reference assumes
# when config.json omits a field: rope_theta 500000 / 10000, rms_norm_eps 1e-5 / 1e-6), so that a
# loader or target ignoring a field computes a different network and the parity tests see it
# (tests/formats shows that ignoring theta or eps breaks parity). The eps values are large enough
# for that to exceed each comparison's tolerance. 1bitLLM's fixture has its sub-norms
# (inner_attn_ln, ffn_layernorm), which the real checkpoints hold. head_dim stays hidden / heads:
# transformers' BitNet sizes attn_sub_norm by hidden_size and 1bitLLM computes head_dim itself.
FIXTURE_FIELDS = {
    "hf-bitnet": {"rope_theta": 12345.0, "rms_norm_eps": 1e-4},
    "1bitllm": {"rope_theta": 77777.0, "rms_norm_eps": 1e-2, "attn_sub_norm": True, "ffn_sub_norm": True},
}

# (format, linear_class, quantization_mode) of every checkpoint flavour the loaders accept
HF_VARIANTS = [
    ("bitlinear", "offline"),
    ("autobitlinear", "offline"),
    ("autobitlinear", "online"),
]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_hf(tiny_root):
    """The default tiny checkpoint: HF bitnet, bitlinear class, offline packed weights."""
    return make_tiny_checkpoint(tiny_root / "hf-bitlinear-offline", "hf-bitnet", **FIXTURE_FIELDS["hf-bitnet"])


@pytest.fixture(scope="session")
def tiny_1bitllm(tiny_root):
    return make_tiny_checkpoint(tiny_root / "1bitllm", "1bitllm", **FIXTURE_FIELDS["1bitllm"])


@pytest.fixture(scope="session", params=HF_VARIANTS, ids=lambda v: "-".join(v))
def tiny_hf_variant(request, tiny_root):
    linear_class, mode = request.param
    folder = tiny_root / f"hf-{linear_class}-{mode}"
    if not (folder / "config.json").exists():
        make_tiny_checkpoint(folder, "hf-bitnet", linear_class=linear_class, mode=mode, seed=1, **FIXTURE_FIELDS["hf-bitnet"])
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny references and exports run far faster on one torch thread than on two when the cores
    are shared (OpenMP's spinning workers wait for each other); ExecuTorch keeps its own pool.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def llama_mirrors(tmp_path_factory):
    """The tiny Falcon3 / Falcon-E / Llama3-8B look-alikes (tests/llama_family.py), written once."""
    from llama_family import MIRRORS, write_mirror

    root = tmp_path_factory.mktemp("llama-family")
    return {name: write_mirror(root / name, name) for name in MIRRORS}
