"""Shared fixtures: tiny checkpoints of every supported format, built once per test session."""

from __future__ import annotations

import pytest

from bitexport.formats.tiny import make_tiny_checkpoint

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
    return make_tiny_checkpoint(tiny_root / "hf-bitlinear-offline", "hf-bitnet")


@pytest.fixture(scope="session")
def tiny_1bitllm(tiny_root):
    return make_tiny_checkpoint(tiny_root / "1bitllm", "1bitllm")


@pytest.fixture(scope="session", params=HF_VARIANTS, ids=lambda v: "-".join(v))
def tiny_hf_variant(request, tiny_root):
    linear_class, mode = request.param
    folder = tiny_root / f"hf-{linear_class}-{mode}"
    if not (folder / "config.json").exists():
        make_tiny_checkpoint(folder, "hf-bitnet", linear_class=linear_class, mode=mode, seed=1)
    return folder
