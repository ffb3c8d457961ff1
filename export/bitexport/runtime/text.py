"""Prompt text <-> token ids with the bundle's or model's tokenizer.json (the `tokenizers` library)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from bitexport.errors import InputError


class TextCodec:
    def __init__(self, tokenizer_json: str | Path) -> None:
        try:
            self.tok = Tokenizer.from_file(str(tokenizer_json))
        except Exception as e:  # tokenizers raises a bare Exception on a bad file
            raise InputError(f"{tokenizer_json}: not a valid tokenizer.json ({e}); copy the model's tokenizer.json") from None

    def encode(self, text: str) -> list[int]:
        """Ids as the tokenizer's own post-processor makes them (it decides about BOS)."""
        ids = self.tok.encode(text).ids
        if not ids:
            raise InputError("the prompt encodes to no tokens; pass a non-empty --prompt")
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)
