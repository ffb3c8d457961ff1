"""Hugging Face Hub ids as MODEL, resolved through huggingface_hub from a local cache, offline.

The cache is laid out as huggingface_hub lays it out (HF_HUB_CACHE/models--owner--name/
snapshots/<commit>/..., refs/<branch> holding the commit); HF_HUB_OFFLINE=1 keeps every test off
the network: an id not in the cache must fail in one line naming the fix.
"""

from __future__ import annotations

import json
import shutil

import pytest

from bitexport.formats.tiny import make_tiny_checkpoint
from test_cli_errors import assert_one_line_error, run_cli

MAIN = "a" * 40
V2 = "b" * 40


@pytest.fixture
def hub_cache(tmp_path, tiny_hf, monkeypatch):
    """org/tiny: main = the tiny HF fixture (2 layers), branch v2 = a 3-layer model."""
    repo = tmp_path / "hub" / "models--org--tiny"
    shutil.copytree(tiny_hf, repo / "snapshots" / MAIN)
    make_tiny_checkpoint(repo / "snapshots" / V2, "hf-bitnet", num_layers=3)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN)
    (repo / "refs" / "v2").write_text(V2)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return repo


def _layers(capsys, *argv) -> int:
    code, out, err = run_cli(capsys, "inspect", *argv, "--json")
    assert code == 0, err
    return json.loads(out)["architecture"]["num_layers"]


def test_id_resolves_from_the_cache(hub_cache, capsys):
    code, out, err = run_cli(capsys, "inspect", "org/tiny", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["name"] == "tiny"  # the repository's name, not the snapshot's commit hash
    assert d["architecture"]["num_layers"] == 2


def test_revision_picks_the_branch(hub_cache, capsys):
    assert _layers(capsys, "org/tiny", "--revision", "v2") == 3
    assert _layers(capsys, "org/tiny", "--revision", MAIN) == 2


def test_local_path_wins_over_an_id(hub_cache, tmp_path, capsys):
    make_tiny_checkpoint(tmp_path / "org" / "tiny", "hf-bitnet", num_layers=4)
    assert _layers(capsys, "org/tiny") == 4


def test_export_and_run_by_id(hub_cache, tmp_path, capsys):
    code, out, err = run_cli(capsys, "export", "--target", "desktop", "org/tiny")
    assert code == 0, err
    bundle = tmp_path / "bundles" / "tiny-desktop"
    assert out.strip() == str(bundle.relative_to(tmp_path))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["source"]["path"] == str((hub_cache / "snapshots" / MAIN).resolve())
    code, out, err = run_cli(capsys, "run", "org/tiny", "-n", "4", "--json")
    assert code == 0 and len(json.loads(out)["tokens"]) == 4, err


@pytest.mark.parametrize("argv,needles", [
    (["inspect", "org/absent"], ["org/absent", "not in the Hugging Face cache", "HF_HUB_OFFLINE", "local model folder"]),
    (["export", "--target", "ios", "microsoft/bitnet-b1.58-2B-4T"], ["microsoft/bitnet-b1.58-2B-4T", "not in the Hugging Face cache"]),
    (["run", "org/tiny", "--revision", "nope"], ["org/tiny at revision 'nope'", "not in the Hugging Face cache"]),
    (["inspect", "nowhere", "--revision", "v2"], ["nowhere: no such file or folder", "--revision applies to Hugging Face Hub ids"]),
])
def test_unfetchable_ids_fail_in_one_line(hub_cache, capsys, argv, needles):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *needles)


def test_revision_with_a_local_path_is_refused(hub_cache, tiny_hf, capsys):
    code, _, err = run_cli(capsys, "inspect", str(tiny_hf), "--revision", "v2")
    assert_one_line_error(code, err, "is a local path", "drop --revision")
