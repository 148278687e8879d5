"""Tokenizers in `tokenizer.json` form, via the `tokenizers` library.

The same loader serves the real Gemma tokenizer and our small task vocabularies; task vocabularies are
built here as word-level tokenizers whose tokens are split on whitespace.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers

# Ids 0/1/2 match Gemma's pad/eos/bos so generation defaults carry over unchanged.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    try:
        return Tokenizer.from_file(path)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable tokenizer.json ({exc})") from None


def word_level_tokenizer(tokens: Sequence[str]) -> Tokenizer:
    """A whitespace-split word-level tokenizer: special tokens first, then `tokens` in order."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *tokens):
        if token in vocab:
            raise ValueError(f"duplicate token {token!r} in vocabulary")
        vocab[token] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok
