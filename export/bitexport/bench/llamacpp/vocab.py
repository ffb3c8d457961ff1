"""Give a converted GGUF the model's own byte-level BPE tokenizer, so llama.cpp's text tools
(llama-perplexity, llama-tokenize) cut text into the token ids our tokenizer gives.

llama.cpp's converter reads a SentencePiece `tokenizer.model` for the BitNet architecture, and the
bench writes a small stand-in (convert.write_sentencepiece): enough for llama-bench, which feeds
token ids, but text through it becomes other tokens. This rewrites the GGUF's tokenizer keys as
llama.cpp's "gpt2" tokenizer model (byte-level BPE: the tokens and merges of our tokenizer.json,
pre-tokenizer "gpt-2", whose regex is the one a ByteLevel pre-tokenizer with use_regex applies),
copying every other key and every tensor byte for byte.

It runs in a child process with the gguf-py of the llama.cpp source tree on PYTHONPATH (the
version the converter and the binaries use): `python -m bitexport.bench.llamacpp.vocab SRC DST
TOKENIZER_JSON`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bitexport.errors import EnvironmentProblem, InputError

TOKENIZER_PREFIX = "tokenizer."


def bpe_vocab(tokenizer_json: str | Path) -> dict:
    """tokens, token types and merges of a byte-level BPE tokenizer.json, in llama.cpp's terms.
    Refuses tokenizers llama.cpp's "gpt2" model would cut differently."""
    tj = json.loads(Path(tokenizer_json).read_text())
    model, pre = tj.get("model") or {}, tj.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) \
            or pre.get("add_prefix_space") or tj.get("normalizer"):
        raise InputError(
            f"{tokenizer_json}: llama.cpp's perplexity needs a GPT-2-style byte-level BPE tokenizer "
            "(ByteLevel pre-tokenizer with its regex, no normalizer); drop --quality or --with-llama-cpp"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    special = set()
    for added in tj.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]  # ids no entry names (llama.cpp needs a dense list)
    types = [5] * n  # UNUSED
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = 3 if i in special else 1  # CONTROL, NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "token_types": types, "merges": merges}


def _rewrite(src: Path, dst: Path, tokenizer_json: Path, eos: int | None) -> None:
    import gguf  # the llama.cpp tree's gguf-py (PYTHONPATH set by `retokenize`)

    vocab = bpe_vocab(tokenizer_json)
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    # ggml order: shape (hidden, vocab)
    n_rows = next(int(t.shape[1]) for t in reader.tensors if t.name == "token_embd.weight")
    if len(vocab["tokens"]) > n_rows:
        raise InputError(f"{tokenizer_json} has {len(vocab['tokens'])} tokens, the GGUF's embedding {n_rows} rows")
    while len(vocab["tokens"]) < n_rows:  # the converter padded the table to config.vocab_size
        vocab["tokens"].append(f"[PAD{len(vocab['tokens'])}]")
        vocab["token_types"].append(5)
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF.") \
                or field.name.startswith(TOKENIZER_PREFIX):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["token_types"])
    writer.add_token_merges(vocab["merges"])
    writer.add_add_bos_token(False)  # our tokenizer adds nothing; neither may llama.cpp
    if eos is not None:
        writer.add_eos_token_id(eos)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()


def retokenize(gguf_source: Path, src: Path, dst: Path, tokenizer_json: Path, eos: int | None) -> Path:
    """Write `dst`: the GGUF `src` with the tokenizer of `tokenizer_json` (see the module doc).
    `gguf_source` is the llama.cpp tree's gguf-py folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(gguf_source), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    tmp = dst.with_suffix(".partial")
    cmd = [sys.executable, "-m", "bitexport.bench.llamacpp.vocab", str(src), str(tmp), str(tokenizer_json),
           "" if eos is None else str(eos)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise EnvironmentProblem(f"could not give {src.name} the model's tokenizer:\n{tail}")
    tmp.replace(dst)
    return dst


if __name__ == "__main__":
    a = sys.argv[1:]
    _rewrite(Path(a[0]), Path(a[1]), Path(a[2]), int(a[3]) if len(a) > 3 and a[3] else None)
