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
    cfg["model_type"] = "llama"
    cfg["architectures"] = ["LlamaForCausalLM"]
    (m / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "inspect", str(m))
    assert_one_line_error(code, err, "LlamaForCausalLM", "BitnetForCausalLM")


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
