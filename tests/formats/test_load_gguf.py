"""GGUF import against the safetensors checkpoint the GGUF was written from.

The GGUF files are written by llama.cpp's own `gguf` package (GGUFWriter, gguf.quants.quantize;
tests/gguf_files.py) the way llama.cpp's converter lays them out. The import must give back the
same ternary codes and scales, the same norms and embeddings, the same greedy tokens, and a
tokenizer.json that encodes text to the same ids as the source's. The block decoders are checked
against gguf's own dequantize.

Sources: a `bitnet` GGUF comes from a tiny transformers BitNet checkpoint (autobitlinear, so the
stored weight_scale is the scale itself) with SiLU and fp16-exact scales (a TQ block stores its
scale in fp16); a `llama` GGUF from a tiny 1bitLLM checkpoint without sub-norms, untied head, its
attn_q/attn_k rows permuted as llama.cpp's converter permutes them. Rows are 256 or 512 wide: TQ
blocks hold 256 weights of one row.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize, quantize
from tokenizers import Tokenizer

from bitexport.formats import load_model
from bitexport.formats import gguf_blocks
from bitexport.formats.save_hf import save_hf_bitnet
from bitexport.formats.tiny import make_tiny_checkpoint, random_decoder, tiny_config, tiny_tokenizer
from bitexport.runtime.reference import ReferenceRunner
from gguf_files import write_gguf

SHAPE = {"hidden_size": 256, "intermediate_size": 512, "num_heads": 4, "num_kv_heads": 2, "head_dim": 64}
PROMPT = [0, 17, 42, 99, 5, 230]
NEW_TOKENS = 24
TEXT = "To be, or not to be: the quick brown fox 0123!"


@pytest.fixture(scope="module")
def bitnet_source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf-src") / "hf-silu"
    folder.mkdir()
    tok = tiny_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    cfg = tiny_config("hf-bitnet", vocab_size=tok.get_vocab_size(), hidden_act="silu", rope_theta=12345.0,
                      rms_norm_eps=1e-4, **SHAPE)
    model = random_decoder(cfg, seed=3)
    for _, lin in model.bitlinears():  # a TQ block stores its scale in fp16
        lin.scale.copy_(lin.scale.half().float())
    save_hf_bitnet(model, folder, folder / "tokenizer.json", linear_class="autobitlinear")
    return folder


@pytest.fixture(scope="module")
def llama_source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf-src") / "1bitllm"
    return make_tiny_checkpoint(folder, "1bitllm", seed=4, rope_theta=77777.0, rms_norm_eps=1e-2, **SHAPE)


@pytest.mark.parametrize("kind", ["TQ2_0", "TQ1_0"])
def test_block_decoder_matches_gguf_dequantize(kind):
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 2, size=(6, 768)).astype(np.float32)
    codes[1, 256:512] = 0  # an all-zero block: its scale is 0
    raw = quantize(codes * np.float32(0.0371), GGMLQuantizationType[kind])
    dec = gguf_blocks.decode(kind, raw)
    assert dec.bad is None
    assert np.array_equal(dec.codes, codes.astype(np.int8))
    ours = dec.codes.astype(np.float32) * np.repeat(dec.d.astype(np.float32), 256, axis=1)
    assert np.array_equal(ours, dequantize(raw, GGMLQuantizationType[kind]))


def _same_weights(a, b, *, scale_of=lambda s: s):
    for (name, x), (_, y) in zip(a.model.bitlinears(), b.model.bitlinears(), strict=True):
        assert torch.equal(x.codes, y.codes), name
        assert torch.equal(scale_of(x.scale), y.scale), (name, x.scale, y.scale)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for key in sa:
        if not key.endswith((".codes", ".scale")):
            assert torch.equal(sa[key], sb[key]), key


def _tokens(loaded):
    return ReferenceRunner(loaded).generate(PROMPT, NEW_TOKENS).tokens


@pytest.mark.parametrize("kind,separate", [("TQ2_0", False), ("TQ1_0", False), ("TQ2_0", True), ("TQ1_0", True)])
def test_bitnet_gguf_matches_safetensors(bitnet_source, tmp_path, kind, separate):
    src = load_model(bitnet_source)
    gguf = load_model(write_gguf(src, tmp_path / "m.gguf", kind=kind, separate_scales=separate))
    assert gguf.source_format == "gguf-bitnet"
    assert gguf.config == src.config
    _same_weights(src, gguf)
    assert gguf.stored["ternary"].format == kind
    assert _tokens(gguf) == _tokens(src)
    converted, original = Tokenizer.from_file(str(gguf.tokenizer_path)), Tokenizer.from_file(str(src.tokenizer_path))
    assert converted.encode(TEXT).ids == original.encode(TEXT).ids
    assert converted.decode(converted.encode(TEXT).ids) == TEXT


@pytest.mark.parametrize("kind", ["TQ2_0", "TQ1_0"])
def test_llama_gguf_matches_safetensors(llama_source, tmp_path, kind):
    """attn_q/attn_k are written permuted (llama.cpp's adjacent-pair RoPE layout) and must come back
    unpermuted; the 1bitLLM scales are float32, the file's fp16."""
    src = load_model(llama_source)
    assert not src.config.tie_word_embeddings and not src.config.attn_sub_norm
    gguf = load_model(write_gguf(src, tmp_path / "m.gguf", arch="llama", kind=kind))
    assert gguf.source_format == "gguf-llama"
    assert gguf.config == src.config
    _same_weights(src, gguf, scale_of=lambda s: s.half().float())
    for _, lin in src.model.bitlinears():  # the source with the scales the file can hold
        lin.scale.copy_(lin.scale.half().float())
    assert _tokens(gguf) == _tokens(src)


def test_llama_gguf_without_unpermuting_differs(llama_source, tmp_path, monkeypatch):
    """The permutation matters: skipping it changes the tokens (so the test above can fail)."""
    import bitexport.formats.gguf_model as gm

    src = load_model(llama_source)
    path = write_gguf(src, tmp_path / "m.gguf", arch="llama")
    good = _tokens(load_model(path))
    monkeypatch.setattr(gm, "_unpermute_rope_rows", lambda codes, heads: codes)
    assert _tokens(load_model(path)) != good


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_half_precision_embedding_and_head(llama_source, tmp_path, dtype):
    """llama.cpp's converter writes embeddings in F16 (or BF16): read as stored, widened exactly."""
    src = load_model(llama_source)
    gguf = load_model(write_gguf(src, tmp_path / "m.gguf", arch="llama", embedding_type=dtype))
    torch_dtype = torch.float16 if dtype == "F16" else torch.bfloat16
    for name in ("embed_tokens.weight", "lm_head.weight"):
        want = src.model.state_dict()[name].to(torch_dtype).float()
        assert torch.equal(gguf.model.state_dict()[name], want), name
    assert gguf.stored["embedding"].format == str(torch_dtype).removeprefix("torch.")


def test_block_scales_that_disagree_are_refused(bitnet_source, tmp_path):
    from bitexport.errors import InputError

    src = load_model(bitnet_source)
    path = write_gguf(src, tmp_path / "m.gguf")
    _patch(path, "blk.1.ffn_up.weight", lambda raw: _set_block_scale(raw, row=3, block=0, value=0.5))
    with pytest.raises(InputError, match=r"'blk\.1\.ffn_up\.weight' has 2 different block scales"):
        load_model(path)


def _patch(path, tensor: str, edit) -> None:
    """Rewrite one tensor's bytes in place (GGUFReader maps the file; 'r+' writes through)."""
    reader = GGUFReader(str(path), "r+")
    t = next(t for t in reader.tensors if t.name == tensor)
    edit(t.data)
    t.data.flush() if hasattr(t.data, "flush") else None
    del reader


def _set_block_scale(raw: np.ndarray, row: int, block: int, value: float) -> None:
    nbytes = 66
    end = (block + 1) * nbytes
    raw[row, end - 2 : end] = np.array([value], dtype=np.float16).view(np.uint8)


# --- one-line refusals through the CLI -------------------------------------------------------------

def _invalid_tq1_byte() -> int:
    """A byte value no five trits encode to (TQ1_0 uses 243 of the 256)."""
    valid = {(v * 256 + 242) // 243 for v in range(243)}
    return min(set(range(256)) - valid)


def _set_tq2_field_3(raw):
    raw[2, 5] |= 0b11  # the 2-bit field 3 is no trit


def _set_tq1_invalid(raw):
    raw[1, 7] = _invalid_tq1_byte()


REFUSALS = {
    "unknown-tensor": (dict(extra_tensors={"blk.0.attn_q.bias": np.zeros(256, dtype=np.float32)}), None,
                       ["'blk.0.attn_q.bias'", "the GGUF metadata's architecture does not use"]),
    "corrupt-tq2-block": (dict(kind="TQ2_0"), ("blk.0.attn_k.weight", _set_tq2_field_3),
                          ["'blk.0.attn_k.weight'", "TQ2_0", "corrupt block (row 2, block 0"]),
    "corrupt-tq1-block": (dict(kind="TQ1_0"), ("blk.1.ffn_down.weight", _set_tq1_invalid),
                          ["'blk.1.ffn_down.weight'", "TQ1_0", "corrupt block (row 1, block 0"]),
    "block-scales-disagree": (dict(kind="TQ2_0"), ("blk.0.ffn_gate.weight", lambda r: _set_block_scale(r, 4, 0, 0.25)),
                              ["'blk.0.ffn_gate.weight'", "different block scales", "will not average"]),
    "unsupported-architecture": (dict(arch="qwen2"), None, ["GGUF architecture 'qwen2' is not supported", "'bitnet' and 'llama'"]),
    "not-ternary-type": (dict(kind="Q8_0"), None, ["'blk.0.attn_q.weight' is Q8_0", "TQ2_0, TQ1_0"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_in_one_line(bitnet_source, tmp_path, capsys, case):
    from test_cli_errors import assert_one_line_error, run_cli

    kwargs, patch, needles = REFUSALS[case]
    path = write_gguf(load_model(bitnet_source), tmp_path / "m.gguf", **kwargs)
    if patch:
        _patch(path, *patch)
    code, _, err = run_cli(capsys, "inspect", str(path))
    assert_one_line_error(code, err, str(path), *needles)


# --- the GGUF as MODEL of every command --------------------------------------------------------------

def test_gguf_through_the_commands(bitnet_source, tmp_path, capsys):
    import json

    from test_cli_errors import run_cli

    src = load_model(bitnet_source)
    path = write_gguf(src, tmp_path / "tiny-tq2.gguf", chat_template="{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}")
    code, out, _ = run_cli(capsys, "inspect", str(path))
    assert code == 0 and "gguf-bitnet" in out and "TQ2_0" in out
    code, out, _ = run_cli(capsys, "run", str(path), "--prompt", "To be", "-n", "8", "--json")
    ran = json.loads(out)
    code, out, _ = run_cli(capsys, "run", str(bitnet_source), "--prompt", "To be", "-n", "8", "--json")
    assert ran["tokens"] == json.loads(out)["tokens"]
    bundle = tmp_path / "bundle"
    code, out, _ = run_cli(capsys, "export", "--target", "desktop", str(path), "-o", str(bundle))
    assert code == 0, out
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["source"]["format"] == "gguf-bitnet" and manifest["source"]["path"] == str(path.resolve())
    assert manifest["chat_template"].startswith("{% for m in messages %}")
    code, out, _ = run_cli(capsys, "verify", str(bundle), "-n", "8")
    assert code == 0, out
