"""The bundle format: atomic writes, --force, manifest validation and hash checks."""

from __future__ import annotations

import json

import pytest

from bitexport.bundle.store import Artifact, read_bundle, sha256_of, staged_bundle, write_manifest
from bitexport.errors import BundleError


def _write(folder, payload=b"weights"):
    (folder / "model.bin").write_bytes(payload)
    (folder / "tokenizer.json").write_text("{}")
    write_manifest(
        folder, target="desktop", source={"name": "m"}, tokenizer="tokenizer.json", bos_token_id=None,
        eos_token_ids=[1], max_seq_len=64, vocab_size=10,
        artifacts=[Artifact("model.bin", "onnx", "onnxruntime-genai", "tq2")],
    )


def test_manifest_fields_and_hashes(tmp_path):
    out = tmp_path / "b"
    with staged_bundle(out, force=False) as tmp:
        _write(tmp)
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "bitexport-bundle" and m["format_version"] == 1
    a = m["artifacts"][0]
    assert a["bytes"] == 7 and a["sha256"] == sha256_of(out / "model.bin")
    assert m["tokenizer"]["path"] == "tokenizer.json" and m["eos_token_ids"] == [1]
    assert read_bundle(out).hash_problems() == []


def test_changed_file_is_reported(tmp_path):
    out = tmp_path / "b"
    with staged_bundle(out, force=False) as tmp:
        _write(tmp)
    (out / "model.bin").write_bytes(b"tampered")
    assert read_bundle(out).hash_problems() == ["model.bin: sha256 differs from the manifest (file changed or corrupt)"]


def test_failed_export_leaves_nothing(tmp_path):
    out = tmp_path / "b"
    with pytest.raises(RuntimeError):
        with staged_bundle(out, force=False) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_bundle_needs_force_and_is_replaced_whole(tmp_path):
    out = tmp_path / "b"
    with staged_bundle(out, force=False) as tmp:
        _write(tmp, b"old")
    with pytest.raises(BundleError, match="--force"):
        with staged_bundle(out, force=False):
            pass
    with staged_bundle(out, force=True) as tmp:
        _write(tmp, b"new!")
    assert (out / "model.bin").read_bytes() == b"new!"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_force_never_replaces_a_folder_that_is_not_a_bundle(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    with pytest.raises(BundleError, match="not a bitexport bundle"):
        with staged_bundle(out, force=True):
            pass
    assert (out / "thesis.tex").exists()


def test_newer_format_version_is_refused(tmp_path):
    out = tmp_path / "b"
    with staged_bundle(out, force=False) as tmp:
        _write(tmp)
    m = json.loads((out / "manifest.json").read_text())
    m["format_version"] = 99
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="export it again"):
        read_bundle(out)
