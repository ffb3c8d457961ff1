"""Corpus, tokenizer and batches for the training recipe.

The corpus is one plain-text file (Tiny Shakespeare by default). Its last `val_fraction` of
characters is held out; the byte-level BPE is trained on the training part only, so validation
text is unseen by the tokenizer too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from bitexport.errors import InputError

EOS_TOKEN = "<|endoftext|>"


def default_data_path() -> Path:
    """../shared/data/tinyshakespeare.txt beside the repository that holds this package."""
    repo = Path(__file__).resolve().parents[3]
    return (repo / ".." / "shared" / "data" / "tinyshakespeare.txt").resolve()


def read_corpus(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: training text not found; pass --data with the path of a UTF-8 text file")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise InputError(f"{p}: the training text is empty; pass --data with a non-empty text file")
    return text


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val): val is the last `val_fraction` of the text, cut at a line start."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
    cut = int(len(text) * (1.0 - val_fraction))
    nl = text.find("\n", cut)
    cut = nl + 1 if 0 <= nl < len(text) - 1 else cut
    return text[:cut], text[cut:]


def train_tokenizer(train_text: str, vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenization) with <|endoftext|> as id 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # line by line, newlines kept, so merges such as ":\n" and "\n\n" are learned
    tok.train_from_iterator(train_text.splitlines(keepends=True), trainer)
    return tok


def encode(tok: Tokenizer, text: str) -> torch.Tensor:
    """Token ids of `text` as int64 [n]. Encoded in line batches: one 1 MB string is slow."""
    lines = text.splitlines(keepends=True)
    ids: list[int] = []
    for enc in tok.encode_batch(lines):
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.int64)


@dataclass
class TokenData:
    train: torch.Tensor  # int64 [n_train], on the training device
    val: torch.Tensor  # int64 [n_val]
    seq_len: int

    def __post_init__(self) -> None:
        for name, t in (("training", self.train), ("validation", self.val)):
            if t.numel() < self.seq_len + 2:
                raise InputError(
                    f"the {name} split has {t.numel()} tokens, fewer than --seq-len {self.seq_len} + 2; "
                    "use a longer text, a larger --val-fraction or a smaller --seq-len"
                )

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Random windows [batch, seq_len + 1] of the training split (input and shifted target)."""
        starts = torch.randint(0, self.train.numel() - self.seq_len - 1, (batch_size,), generator=generator)
        idx = starts[:, None] + torch.arange(self.seq_len + 1)
        return self.train[idx.to(self.train.device)]

    def val_windows(self) -> torch.Tensor:
        """Consecutive, non-overlapping windows [m, seq_len + 1] covering the validation split."""
        m = (self.val.numel() - 1) // self.seq_len
        idx = torch.arange(m)[:, None] * self.seq_len + torch.arange(self.seq_len + 1)
        return self.val[idx.to(self.val.device)]
