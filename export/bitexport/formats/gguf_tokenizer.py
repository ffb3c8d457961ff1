"""A GGUF file's tokenizer as a tokenizer.json (and tokenizer_config.json for its chat template).

A GGUF stores its vocabulary, merges and special ids as metadata (tokenizer.ggml.*). transformers
converts that metadata into a fast tokenizer (integrations/gguf: get_gguf_tokenizer,
convert_gguf_tokenizer); we only write the result where the rest of bitexport expects a model's
tokenizer files: a temporary folder that lives as long as the process (the export copies the
tokenizer into its bundle), one per GGUF file, so that a model loaded twice converts once.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from bitexport.errors import EnvironmentProblem, InputError

TRANSFORMERS_SPEC = "transformers>=5.24,<6"


def tokenizer_folder(gguf_path: Path) -> Path:
    """The folder holding tokenizer.json (and tokenizer_config.json when the GGUF has a chat
    template or BOS/EOS flags) converted from `gguf_path`'s metadata."""
    st = gguf_path.stat()
    key = (str(gguf_path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CONVERTED:
        tokenizer, config = _convert(gguf_path)
        folder = Path(tempfile.mkdtemp(prefix="bitexport-gguf-tokenizer-"))
        atexit.register(shutil.rmtree, folder, True)
        tokenizer.save(str(folder / "tokenizer.json"))
        if config:
            (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        _CONVERTED[key] = folder
    return _CONVERTED[key]


_CONVERTED: dict[tuple, Path] = {}


def _convert(gguf_path: Path):
    try:
        from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer
    except ImportError as e:
        raise EnvironmentProblem(
            f"converting a GGUF tokenizer needs transformers' GGUF support ({e}); pip install '{TRANSFORMERS_SPEC}'"
        ) from None
    try:
        architecture, tokenizer_dict, tokenizer_config = get_gguf_tokenizer(str(gguf_path))
    except (KeyError, ValueError, OSError) as e:
        raise InputError(f"{gguf_path}: its tokenizer metadata cannot be read ({e}); the file is damaged, download it again") from None
    if not tokenizer_dict.get("tokens"):
        raise InputError(
            f"{gguf_path}: holds no tokenizer (no tokenizer.ggml.tokens); use a GGUF written by llama.cpp's converter, "
            "which stores the tokenizer"
        )
    try:
        tokenizer, _ = convert_gguf_tokenizer(architecture, tokenizer_dict)
    except ValueError as e:
        raise InputError(f"{gguf_path}: its tokenizer cannot be converted ({e}); convert the model from its Hugging Face folder instead") from None
    # the keys chat_fields and tokenizers read; None values (tokens the file does not name) dropped
    config = {k: v for k, v in tokenizer_config.items() if v is not None}
    return tokenizer, config
