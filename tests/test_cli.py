"""The command line on tiny checkpoints of both formats: help, inspect, run, python -m."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitexport.cli import main

BIN = Path(sys.executable).parent / "bitexport"


def test_help_lists_every_command():
    out = subprocess.run([str(BIN), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("export", "inspect", "run", "verify"):
        assert cmd in out


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "bitexport", "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.startswith("bitexport ")


@pytest.mark.parametrize("fixture", ["tiny_hf", "tiny_1bitllm"])
def test_inspect_json(request, capsys, fixture):
    folder = request.getfixturevalue(fixture)
    assert main(["inspect", str(folder), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    n = d["parameters"]
    cfg = d["architecture"]
    per_layer = 2 * 64 * cfg["num_heads"] * cfg["head_dim"] + 2 * 64 * cfg["num_kv_heads"] * cfg["head_dim"] + 3 * 64 * 160
    assert n["ternary"] == cfg["num_layers"] * per_layer
    assert d["ternary_layers"]["count"] == 7 * cfg["num_layers"]
    if fixture == "tiny_hf":
        assert d["stored"]["ternary"]["bits_per_weight"] == 2.0
        assert d["format"] == "hf-bitnet"
    else:
        assert d["stored"]["ternary"]["bits_per_weight"] == 16.0
        assert d["format"] == "1bitllm"


def test_inspect_text(capsys, tiny_hf):
    assert main(["inspect", str(tiny_hf)]) == 0
    out = capsys.readouterr().out
    assert "uint8 packed 2-bit" in out and "14 linears" in out


@pytest.mark.parametrize("fixture", ["tiny_hf", "tiny_1bitllm"])
def test_run_reference_prints_text_and_speed(request, fixture):
    folder = request.getfixturevalue(fixture)
    r = subprocess.run([str(BIN), "run", str(folder), "--prompt", "To be", "-n", "12"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("[pytorch-reference] prefill") and "decode" in last and "tokens/s" in last


def test_run_json_matches_reference_generation(capsys, tiny_hf):
    from bitexport.formats import load_model
    from bitexport.runtime.generate import greedy_generate
    from bitexport.runtime.text import TextCodec

    assert main(["run", str(tiny_hf), "--prompt", "To be", "-n", "10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) >= {"tokens", "text", "prefill_tokens_per_s", "decode_tokens_per_s"}
    ids = TextCodec(tiny_hf / "tokenizer.json").encode("To be")
    assert d["tokens"] == greedy_generate(load_model(tiny_hf).model, ids, 10).tokens
    assert d["decode_tokens_per_s"] > 0
