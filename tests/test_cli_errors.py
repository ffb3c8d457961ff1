"""Every bad input gets one line on stderr naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from bitexport.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bitexport: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def copy_of(tiny_hf, tmp_path):
    def make(name="m"):
        dst = tmp_path / name
        shutil.copytree(tiny_hf, dst)
        return dst

    return make


def test_missing_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "no such file or folder")


def test_folder_that_is_not_a_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", str(tmp_path), "--prompt", "hi")
    assert_one_line_error(code, err, "not a model folder", "config.json")


def test_unknown_model_type(capsys, copy_of):
    m = copy_of()
    cfg = json.loads((m / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (m / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "inspect", str(m))
    assert_one_line_error(code, err, "unsupported model", "'gpt2'", "bitexport reads")


def test_unknown_architecture(capsys, copy_of):
    m = copy_of()
    cfg = json.loads((m / "config.json").read_text())
    cfg["model_type"] = "mistral"  # (a Llama with quant_method bitnet is a supported format now)
    cfg["architectures"] = ["MistralForCausalLM"]
    (m / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "inspect", str(m))
    assert_one_line_error(code, err, "MistralForCausalLM", "BitnetForCausalLM", "quant_method 'bitnet'")


def test_plain_llama_without_bitnet_quantization_names_ternarize(capsys, copy_of):
    m = copy_of()
    cfg = json.loads((m / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    del cfg["quantization_config"]
    (m / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "inspect", str(m))
    assert_one_line_error(code, err, "--ternarize")


def test_truncated_safetensors(capsys, copy_of):
    m = copy_of()
    f = m / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "inspect", str(m))
    assert_one_line_error(code, err, "truncated or corrupt", "download it again")


def test_corrupt_safetensors(capsys, copy_of):
    m = copy_of()
    f = m / "model.safetensors"
    f.write_bytes(b"\xff" * 64 + f.read_bytes()[64:])
    code, _, err = run_cli(capsys, "inspect", str(m))
    assert_one_line_error(code, err, "truncated or corrupt")


def test_shapes_disagree_with_config(capsys, copy_of):
    m = copy_of()
    cfg = json.loads((m / "config.json").read_text())
    cfg["intermediate_size"] += 16
    (m / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "inspect", str(m))
    assert_one_line_error(code, err, "shape", "config.json")


def test_missing_tensor(capsys, copy_of):
    m = copy_of()
    cfg = json.loads((m / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (m / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "inspect", str(m))
    assert_one_line_error(code, err, "'model.layers.2.", "missing")


def test_missing_tokenizer(capsys, copy_of):
    m = copy_of()
    (m / "tokenizer.json").unlink()
    code, _, err = run_cli(capsys, "run", str(m), "--prompt", "hi")
    assert_one_line_error(code, err, "tokenizer.json")


def test_invalid_config_json(capsys, copy_of):
    m = copy_of()
    (m / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "inspect", str(m))
    assert_one_line_error(code, err, "not valid JSON")


def test_existing_output_without_force(capsys, tiny_hf, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    code, _, err = run_cli(capsys, "export", str(tiny_hf), "--target", "desktop", "-o", str(out))
    assert_one_line_error(code, err, "already exists", "--force")
    assert (out / "manifest.json").read_text() == "{}"


def test_make_tiny_refuses_existing_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "make-tiny", str(tmp_path))
    assert_one_line_error(code, err, "already exists", "--force")


def test_unknown_weights_for_target(capsys, tiny_hf, tmp_path):
    code, _, err = run_cli(capsys, "export", str(tiny_hf), "--target", "coreml", "--weights", "int3",
                           "-o", str(tmp_path / "b"))
    assert code == 2 and "int3" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_run_on_a_bundle_nothing_can_run(capsys, tmp_path, tiny_hf):
    """A bundle whose manifest is damaged gets a one-line error too."""
    b = tmp_path / "b"
    b.mkdir()
    (b / "manifest.json").write_text("[1, 2]")
    code, _, err = run_cli(capsys, "run", str(b), "--prompt", "hi")
    assert_one_line_error(code, err, "not a bitexport manifest")


# ---------------------------------------------------------------------------- damaged bundles


@pytest.fixture(scope="module")
def onnx_bundle(tiny_hf, tmp_path_factory):
    from bitexport.api import export

    out = tmp_path_factory.mktemp("cli-errors") / "desktop"
    export(tiny_hf, "desktop", out, max_seq_len=64)
    return out


@pytest.fixture
def bundle_copy(onnx_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(onnx_bundle, dst)
    return dst


def _truncate(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip(f):
    data = bytearray(f.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    f.write_bytes(bytes(data))


def test_the_intact_bundle_runs(capsys, bundle_copy):
    code, out, err = run_cli(capsys, "run", str(bundle_copy), "--prompt", "hi", "-n", "2")
    assert code == 0 and "[onnxruntime-genai]" in out, err


@pytest.mark.parametrize("damage", [_truncate, _flip], ids=["truncated", "flipped"])
@pytest.mark.parametrize("rel", ["onnx/model.onnx", "tokenizer.json", "onnx/genai_config.json"])
def test_damaged_file_is_one_line_before_loading(capsys, bundle_copy, rel, damage):
    damage(bundle_copy / rel)
    code, _, err = run_cli(capsys, "run", str(bundle_copy), "--prompt", "hi")
    # the tokenizer is the bundle's own; the onnx folder's files are hashed as one artifact
    what = "tokenizer.json" if rel == "tokenizer.json" else "onnx:"
    fix = "bytes, the manifest says" if damage is _truncate else "sha256 differs"
    assert_one_line_error(code, err, what, fix, "export it again")


def test_damaged_file_above_the_hash_limit_still_gives_one_line(capsys, bundle_copy, monkeypatch):
    """Files too large to hash before every run reach the runtime's loader: a flipped .onnx must
    still end in one line (onnxruntime-genai's load error), not a crash."""
    import bitexport.bundle.store as store

    monkeypatch.setattr(store, "HASH_BEFORE_RUN_LIMIT", 0)
    monkeypatch.setattr(store.Bundle.check_before_loading, "__defaults__", (0,))
    f = bundle_copy / "onnx" / "model.onnx"
    f.write_bytes(b"\x00" * f.stat().st_size)
    code, _, err = run_cli(capsys, "run", str(bundle_copy), "--prompt", "hi")
    print(err)
    assert_one_line_error(code, err, "model.onnx", "export the bundle again")


def test_manifest_path_outside_the_bundle_is_refused(capsys, bundle_copy, tmp_path):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["tokenizer"]["path"] = "../../etc/passwd"
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    for cmd in (["run", str(bundle_copy), "--prompt", "hi"], ["verify", str(bundle_copy)]):
        code, _, err = run_cli(capsys, *cmd)
        assert_one_line_error(code, err, "leaves the bundle folder")


def test_manifest_against_the_schema(capsys, bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["max_seq_len"] = -5
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    code, _, err = run_cli(capsys, "run", str(bundle_copy), "--prompt", "hi")
    assert_one_line_error(code, err, "does not match the bundle schema at max_seq_len")


# ---------------------------------------------------------------------------- prompt beyond the context


def test_prompt_longer_than_the_context(capsys, onnx_bundle, tiny_hf):
    """Refused with one line naming --max-seq-len, by the ONNX runner and the reference (the
    ExecuTorch runner: tests/targets/executorch)."""
    long = "the lazy dog sleeps in the sun " * 40
    code, _, err = run_cli(capsys, "run", str(onnx_bundle), "--prompt", long)
    assert_one_line_error(code, err, "holds 64 positions", "--max-seq-len")
    code, _, err = run_cli(capsys, "run", str(tiny_hf), "--prompt", long * 3)
    assert_one_line_error(code, err, "positions", "--max-seq-len")
