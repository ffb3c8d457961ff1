"""The bundle format: atomic writes, --force, manifest validation (schema, paths confined to the
bundle) and hash and size checks."""

from __future__ import annotations

import json
import os

import pytest

from bitexport.bundle.store import Artifact, read_bundle, sha256_of, staged_bundle, write_manifest
from bitexport.errors import BundleError

SOURCE = {"name": "m", "format": "hf-bitnet", "path": "/nowhere", "config": {},
          "parameters": {"ternary": 1, "embedding": 1, "lm_head": 0, "norms": 1, "total": 3}}


def _write(folder, payload=b"weights"):
    (folder / "model.bin").write_bytes(payload)
    (folder / "tokenizer.json").write_text("{}")
    write_manifest(
        folder, target="desktop", source=SOURCE, tokenizer="tokenizer.json", bos_token_id=None,
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
    (out / "model.bin").write_bytes(b"tampere")
    assert read_bundle(out).hash_problems() == ["model.bin: sha256 differs from the manifest (file changed or corrupt)"]
    (out / "model.bin").write_bytes(b"tampered")
    assert read_bundle(out).hash_problems() == ["model.bin: 8 bytes, the manifest says 7 (truncated or changed)"]


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


@pytest.fixture
def bundle(tmp_path):
    out = tmp_path / "b"
    with staged_bundle(out, force=False) as tmp:
        _write(tmp)
    return out


def _edit(out, change):
    m = json.loads((out / "manifest.json").read_text())
    change(m)
    (out / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("rel", ["/etc/passwd", "../outside.bin", "sub/../../outside.bin", ""])
def test_paths_outside_the_bundle_are_refused(bundle, rel, tmp_path):
    (tmp_path / "outside.bin").write_bytes(b"secret")
    read_bundle(bundle)  # the untouched bundle reads
    for key in ("artifact", "tokenizer"):
        def change(m):
            if key == "artifact":
                m["artifacts"][0]["path"] = rel
            else:
                m["tokenizer"]["path"] = rel
        _edit(bundle, change)
        with pytest.raises(BundleError, match="leaves the bundle folder") as e:
            read_bundle(bundle)
        assert "\n" not in str(e.value)
        _edit(bundle, lambda m: (m["artifacts"][0].update(path="model.bin"), m["tokenizer"].update(path="tokenizer.json")))


def test_symlinks_pointing_outside_are_refused(bundle, tmp_path):
    (tmp_path / "outside.bin").write_bytes(b"weights")
    (bundle / "model.bin").unlink()
    os.symlink(tmp_path / "outside.bin", bundle / "model.bin")
    with pytest.raises(BundleError, match="points outside the bundle folder"):
        read_bundle(bundle)
    # a link that stays inside is fine
    (bundle / "model.bin").unlink()
    (bundle / "real.bin").write_bytes(b"weights")
    os.symlink("real.bin", bundle / "model.bin")
    assert read_bundle(bundle).hash_problems() == []
    # and inside a folder artifact
    (bundle / "model.bin").unlink()
    (bundle / "model.bin").mkdir()
    os.symlink(tmp_path / "outside.bin", bundle / "model.bin" / "weights.bin")
    with pytest.raises(BundleError, match="weights.bin points outside"):
        read_bundle(bundle)


@pytest.mark.parametrize("change, where", [
    (lambda m: m.pop("vocab_size"), "(top level)"),
    (lambda m: m["artifacts"][0].update(sha256="abc"), "artifacts/0/sha256"),
    (lambda m: m["artifacts"][0].update(target="tflite"), "artifacts/0/target"),
    (lambda m: m.update(max_seq_len="64"), "max_seq_len"),
    (lambda m: m["tokenizer"].pop("path"), "tokenizer"),
])
def test_manifest_is_validated_against_the_schema(bundle, change, where):
    _edit(bundle, change)
    with pytest.raises(BundleError, match="does not match the bundle schema") as e:
        read_bundle(bundle)
    assert f"at {where}:" in str(e.value) and "\n" not in str(e.value)


def test_sizes_and_small_hashes_are_checked_before_loading(bundle):
    b = read_bundle(bundle)
    b.check_before_loading()
    (bundle / "model.bin").write_bytes(b"weigh")  # truncated
    with pytest.raises(BundleError, match="model.bin: 5 bytes, the manifest says 7"):
        b.check_before_loading()
    (bundle / "model.bin").write_bytes(b"weightz")
    with pytest.raises(BundleError, match="model.bin: sha256 differs"):
        b.check_before_loading()
    b.check_before_loading(hash_limit=0)  # above the limit only the size is checked
    (bundle / "model.bin").write_bytes(b"weights")
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json: missing"):
        b.check_before_loading()
