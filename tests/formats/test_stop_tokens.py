"""Stop tokens at load: config.json's eos_token_id, then generation_config.json's (an id or a
list, as transformers' generate reads it); a bad one is refused in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bitexport.errors import InputError
from bitexport.formats import load_model

BIN = Path(sys.executable).parent / "bitexport"


@pytest.fixture
def folder(tiny_hf, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(tiny_hf, out)
    return out


@pytest.mark.parametrize("eos,want", [([7, 1, 9], (1, 7, 9)), (9, (1, 9)), (None, (1,)), ([1], (1,))])
def test_generation_config_adds_stop_tokens(folder, eos, want):
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "max_new_tokens": 5}))
    loaded = load_model(folder)
    assert loaded.config.eos_token_ids == (1,)  # config.json's, as the manifest records it
    assert loaded.stop_token_ids == want


def test_without_generation_config_config_json_decides(tiny_hf):
    assert load_model(tiny_hf).stop_token_ids == (1,)


@pytest.mark.parametrize("text", ['{"eos_token_id": [1, 100000]}', '{"eos_token_id": "</s>"}', "{not json"])
def test_a_bad_generation_config_is_one_line(folder, text):
    (folder / "generation_config.json").write_text(text)
    with pytest.raises(InputError, match="generation_config.json"):
        load_model(folder)
    r = subprocess.run([str(BIN), "run", str(folder), "-n", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "generation_config.json" in r.stderr
