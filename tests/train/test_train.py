"""The training recipe on the CPU: a few steps of a tiny shape, single process and 2-rank DDP.

The corpus is written at test time (public-domain verse, repeated with line numbers so the BPE
has something to learn); the recipe trains its own tokenizer on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from bitexport.formats import load_model
from bitexport.bundle.held_text import HELD_TEXT
from bitexport.model.bitlinear import BitLinear
from bitexport.train import main, register
from bitexport.train.data import split_text
from bitexport.train.models import build_model

# one sonnet of verify's held text (a second copy of it here would drift)
VERSE = HELD_TEXT.split("\n\n")[0] + "\n"

TINY = [
    "--vocab-size", "320", "--hidden-size", "64", "--intermediate-size", "128", "--layers", "2",
    "--heads", "4", "--kv-heads", "2", "--seq-len", "32", "--batch-size", "8", "--lr", "3e-3",
    "--warmup", "5", "--eval-every", "10", "--log-every", "10", "--sample-tokens", "8", "--device", "cpu",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "verse.txt"
    path.write_text("".join(f"SONNET {i}.\n{VERSE}\n" for i in range(40)))
    return path


@pytest.fixture(scope="module")
def compare_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    rc = main(["-o", str(out), "--data", str(corpus), "--compare", "--steps", "30", *TINY])
    assert rc == 0
    return out, json.loads((out / "training_metrics.json").read_text())


def test_both_variants_learn(compare_run):
    _, metrics = compare_run
    assert [r["variant"] for r in metrics["runs"]] == ["ternary", "full-precision"]
    for r in metrics["runs"]:
        values = [r["first_train_loss"], r["final_train_loss"], r["best_val_loss"]]
        values += [p["val_loss"] for p in r["curve"]]
        assert all(math.isfinite(v) for v in values)
        # 30 steps from ln(320) = 5.77 on very repetitive text: a clear drop, not noise
        assert r["final_train_loss"] < r["first_train_loss"] - 1.0
        assert r["curve"][-1]["val_loss"] < r["curve"][0]["val_loss"]
        assert r["tokens_seen"] == 30 * 8 * 32
        assert [p["step"] for p in r["curve"]] == [10, 20, 30]
        assert r["best_val_loss"] == min(p["val_loss"] for p in r["curve"])


def test_ternary_checkpoint_loads_and_scores_as_trained(compare_run):
    out, metrics = compare_run
    ternary = metrics["runs"][0]
    loaded = load_model(out / "ternary")
    cfg = loaded.config
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads) == (64, 2, 4, 2)
    assert cfg.vocab_size == metrics["model"]["config"]["vocab_size"]
    assert cfg.tie_word_embeddings and cfg.hidden_act == "relu2" and loaded.model.lm_head is None
    assert loaded.stored["ternary"].format == "uint8 packed 2-bit"
    assert all(lin.frozen for _, lin in loaded.model.bitlinears())
    # The saved model computes what training measured: the same ternary codes and int8
    # activations, differing only by bf16 storage of embeddings, norms and scales (relative
    # 2**-9), which moves the mean loss by far less than 0.02 nats.
    assert abs(ternary["checkpoint"]["val_loss"] - ternary["best_val_loss"]) < 0.02
    with torch.no_grad():
        logits = loaded.model(torch.tensor([[5, 6, 7]]), torch.tensor([0]))
    assert torch.isfinite(logits).all()
    assert len(ternary["sample"]["tokens"]) == 8
    assert (out / "full-precision" / "model.safetensors").is_file()


def test_full_precision_model_has_same_shape_and_no_quantization():
    from bitexport.formats.tiny import tiny_config

    cfg = tiny_config()
    tern = build_model(cfg, 32)
    fp = build_model(cfg, 32, full_precision=True)
    assert not any(isinstance(m, BitLinear) for m in fp.modules())
    assert {k: v.shape for k, v in fp.state_dict().items()} == {k: v.shape for k, v in tern.state_dict().items()}
    x = torch.randn(2, 5, cfg.hidden_size)
    lin = fp.layers[0].mlp.up_proj
    torch.testing.assert_close(lin(x), x @ lin.weight.T)


def test_two_rank_ddp_keeps_weights_identical(corpus, tmp_path):
    """torchrun, 2 processes, gloo: each rank draws different windows, yet the all-reduced
    gradients leave both ranks with bit-identical weights."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bitexport.train", "-o", str(out), "--data", str(corpus), "--steps", "3", *TINY]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "training_metrics.json").read_text())
    (run,) = metrics["runs"]
    assert metrics["hardware"]["world_size"] == 2
    assert run["tokens_seen"] == 3 * 8 * 32 * 2
    batches = run["rank_first_batch_sha256"]
    weights = run["rank_weight_sha256"]
    assert len(batches) == len(weights) == 2
    assert batches[0] != batches[1]
    assert weights[0] == weights[1]
    assert load_model(out / "ternary").config.num_layers == 2


def test_register_adds_train_subcommand():
    parser = argparse.ArgumentParser(prog="bitexport")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["train", "-o", "x", "--full-precision", "--steps", "7"])
    assert args.command == "train" and args.full_precision and args.steps == 7
    assert args.func.__name__ == "run"


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    rc = main(["-o", str(tmp_path / "o"), "--data", str(tmp_path / "nope.txt"), "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "nope.txt" in err and "--data" in err and "\n" not in err


def test_validation_split_is_the_tail_at_a_line_start():
    text = "".join(f"line {i}\n" for i in range(100))
    train, val = split_text(text, 0.1)
    assert train + val == text
    assert val.startswith("line ") and len(val) < 0.11 * len(text)
