"""Prompt text <-> token ids with the bundle's or model's tokenizer.json (the `tokenizers` library),
and the text of a generation as it grows (streaming)."""

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

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids as the tokenizer's own post-processor makes them (it decides about BOS); a rendered
        chat template already holds its special tokens (add_special_tokens=False, as transformers
        encodes it)."""
        ids = self.tok.encode(text, add_special_tokens=add_special_tokens).ids
        if not ids:
            raise InputError("the prompt encodes to no tokens; pass a non-empty --prompt")
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


# what a byte-level decoder gives for a multi-byte character whose bytes are not all there yet
REPLACEMENT = "\ufffd"


class TextStream:
    """The text of a growing list of token ids, handed out in pieces that are safe to print.

    Each piece is the difference between the decoded text of all ids so far and what was handed
    out before, so the pieces join to exactly `codec.decode(ids)`. A BPE token can end inside a
    multi-byte UTF-8 character: the decoder then ends in U+FFFD, which is held back until a later
    token completes the character (or `finish` hands out what is left)."""

    def __init__(self, codec: TextCodec, ids: list[int] | tuple[int, ...] = ()) -> None:
        self.codec = codec
        self.ids = list(ids)
        self.shown = ""

    def push(self, *ids: int) -> str:
        """Add tokens; return the text that is now complete (may be empty)."""
        self.ids.extend(ids)
        return self._take(self.codec.decode(self.ids).rstrip(REPLACEMENT))

    def finish(self) -> str:
        """Everything not handed out yet, incomplete characters included."""
        return self._take(self.codec.decode(self.ids))

    def _take(self, text: str) -> str:
        # a decoder that rewrites earlier text (none of the usual ones does) gets nothing out
        # until the text grows past what was shown again
        if not text.startswith(self.shown):
            return ""
        piece, self.shown = text[len(self.shown):], text
        return piece
