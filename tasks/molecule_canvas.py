"""The molecule task's vocabulary and its prompt and canvas encodings.

Prompt: BOS, one bin token per conditioned property (`<logp=3>`, or `<logp=?>` when the request leaves it
open), then optionally `<scaffold>` and the scaffold's SMILES tokens, padded to PROMPT_WIDTH. Canvas: the
molecule's canonical SMILES tokens, EOS, then padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..core import word_level_tokenizer
from .molecule_data import (CONDITION_BINS, SMILES_TOKENS, SmilesError, bin_index, bin_ranges, condition_tokens,
                            tokenize_known)


CANVAS = 64


TOKENIZER = word_level_tokenizer([*SMILES_TOKENS, *condition_tokens()])


PAD, EOS, BOS = (TOKENIZER.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>"))


SCAFFOLD = TOKENIZER.token_to_id("<scaffold>")


SMILES_IDS = torch.tensor([TOKENIZER.token_to_id(t) for t in SMILES_TOKENS])


ID_TO_TOKEN = [TOKENIZER.id_to_token(i) for i in range(TOKENIZER.get_vocab_size())]


CONDITIONED = tuple(CONDITION_BINS)


MAX_SCAFFOLD_TOKENS = 47  # the longest scaffold of the first model's training subset; training skips longer ones


# Prompts always have this width (padded after their content): canvas positions then sit at a fixed distance
# from BOS, as in training. (A model trained on batch-dependent widths lost track of canvas positions when
# sampled with short prompts.)
PROMPT_WIDTH = 1 + len(CONDITIONED) + 1 + MAX_SCAFFOLD_TOKENS


# First bin token id of each conditioned property; its "unspecified" token follows the last bin.
BIN_BASE = {name: TOKENIZER.token_to_id(f"<{name}=0>") for name in CONDITIONED}


UNSPECIFIED = {name: TOKENIZER.token_to_id(f"<{name}=?>") for name in CONDITIONED}


TOKEN_IDS = TOKENIZER.get_vocab()


def encode_tokens(tokens: Sequence[str]) -> list[int]:
    return [TOKEN_IDS[t] for t in tokens]


IS_SMILES = torch.zeros(TOKENIZER.get_vocab_size(), dtype=torch.bool)


IS_SMILES[SMILES_IDS] = True


def molecule_ends(canvas: Tensor) -> Tensor:
    """[B] index of the first EOS or PAD of each row, -1 when there is none. Training puts EOS then padding
    after the molecule; the model sometimes writes the padding first, which ends the molecule too."""
    is_end = (canvas == EOS) | (canvas == PAD)
    return torch.where(is_end.any(1), is_end.int().argmax(1), -1)


def decode(canvas: Tensor) -> list[str | None]:
    """SMILES up to the end of each molecule, or None when a canvas has no end, nothing before it, or a
    non-SMILES token before it (such canvases are never valid answers)."""
    ends = molecule_ends(canvas)
    inside = torch.arange(canvas.shape[1], device=canvas.device) < ends[:, None]
    ok = ((ends > 0) & (IS_SMILES.to(canvas.device)[canvas] | ~inside).all(1)).tolist()
    return ["".join(ID_TO_TOKEN[t] for t in row[:end]) if good else None
            for row, end, good in zip(canvas.tolist(), ends.tolist(), ok)]


def bin_token(name: str, value: float) -> int:
    return BIN_BASE[name] + int(bin_index(name, value))


def window_bins(name: str, window: tuple[float, float]) -> list[int]:
    """Bin tokens of `name` whose range overlaps `window`: each is a legitimate condition for a molecule
    inside the window."""
    lo, hi = window
    return [BIN_BASE[name] + k for k, (a, b) in enumerate(bin_ranges(name))
            if min(b, hi) > max(a, lo) or a <= lo == hi < b]


def encode_prompts(conditions: Sequence[dict[str, int]], scaffolds: Sequence[list[int] | None]) -> Tensor:
    """[B, PROMPT_WIDTH] prompts: BOS, a token per conditioned property, `<scaffold>` + ids when given, padding."""
    prompts = np.full((len(conditions), PROMPT_WIDTH), PAD, dtype=np.int64)
    for prompt, cond, scaffold in zip(prompts, conditions, scaffolds):
        row = [BOS] + [cond.get(name, UNSPECIFIED[name]) for name in CONDITIONED]
        if scaffold:
            row += [SCAFFOLD, *scaffold]
        prompt[:len(row)] = row
    return torch.from_numpy(prompts)


def scaffold_ids(scaffold: str | None) -> list[int] | None:
    if not scaffold:
        return None
    try:
        ids = encode_tokens(tokenize_known(scaffold))
    except SmilesError as exc:
        raise SmilesError(f"scaffold: {exc}") from None
    if len(ids) > MAX_SCAFFOLD_TOKENS:
        raise SmilesError(f"scaffold: {scaffold!r} has {len(ids)} tokens; the prompt holds {MAX_SCAFFOLD_TOKENS}")
    return ids
