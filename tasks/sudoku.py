"""Sudoku on the canvas: the puzzle is the prompt, the 81-cell solution is the canvas.

Prompt: BOS + 81 cells ('1'-'9', '.' for blank). Canvas: 81 digits. Clues are pinned on the canvas as well,
so the model only ever has to fill blanks -- training supervises blank cells only, to match. Rows, columns
and boxes are `all_different` groups: they mask digits settled in a peer, re-noise clashes, and verify.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..constraints import CompiledConstraints, ConstraintModel
from ..core import DiffusionGemma, ModelConfig, Pins, child_generator, word_level_tokenizer
from ..core.training import Batch, cached_training_set
from .sudoku_data import UNITS, generate_examples, generate_examples_parallel
from .text import plural

CELLS = 81
DIGITS = "123456789"
TOKENIZER = word_level_tokenizer([".", *DIGITS])
BOS = TOKENIZER.token_to_id("<bos>")
BLANK = TOKENIZER.token_to_id(".")
DIGIT_IDS = [TOKENIZER.token_to_id(d) for d in DIGITS]
# value (0 = blank, 1-9) -> token id, and back
VALUE_TO_ID = torch.tensor([BLANK, *DIGIT_IDS])
ID_TO_VALUE = torch.full((TOKENIZER.get_vocab_size(),), -1, dtype=torch.long)
ID_TO_VALUE[VALUE_TO_ID] = torch.arange(10)


# The stock sampler's settings a trained model ships with (its generation_config.json), warmer than the released
# 0.8 -> 0.4: the stock sampler re-decides every cell each pass, and a warmer draw lets it leave a wrong
# configuration. Model only, puzzles generated here (48 with 36 givens / 48 unique minimal ones of 21-27
# givens), 128 passes: 0.8 -> 0.4 solved 41 and 3, 1.2 -> 0.8 47 and 13, 1.5 -> 1.0 46 and 10, a constant 2.0
# 11 and 0 (benchmarks/sudoku_sampler.py); another such set at 256 passes: 39 and 4, 47 and 9, 47 and 10.
SAMPLER = {"t_max": 1.2, "t_min": 0.8}


def model_config() -> ModelConfig:
    """About 3.4M parameters; every layer sees the whole prompt + canvas (163 tokens < window)."""
    return ModelConfig(
        vocab_size=TOKENIZER.get_vocab_size(), hidden_size=128, intermediate_size=256, num_layers=6, num_heads=4,
        num_kv_heads=2, head_dim=32, num_experts=8, top_k_experts=2, moe_intermediate_size=128,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2, sliding_window=256,
        per_layer_overrides={i: {"head_dim": 64, "num_key_value_heads": 1} for i in (2, 5)},
        canvas_length=CELLS,
    )


def values(puzzles: Sequence[str]) -> Tensor:
    """81-char strings ('0' or '.' blanks) -> [B, 81] values 0-9."""
    return torch.tensor([[0 if ch in ".0" else int(ch) for ch in p] for p in puzzles], dtype=torch.long)


def encode_prompt(puzzle_values: Tensor) -> Tensor:
    """[B, 81] values -> prompt ids [B, 82]."""
    ids = VALUE_TO_ID.to(puzzle_values.device)[puzzle_values]
    return torch.cat((torch.full_like(ids[:, :1], BOS), ids), dim=1)


def decode(canvas: Tensor) -> list[str]:
    """Canvas ids -> 81-char strings ('0' where a cell holds no digit)."""
    v = ID_TO_VALUE.to(canvas.device)[canvas].clamp(min=0)
    return ["".join(map(str, row)) for row in v.tolist()]


def constraints(puzzle_values: Tensor, device: str | torch.device = "cpu", dead_end: str = "restart"
                ) -> CompiledConstraints:
    """Clues pinned, cells restricted to digits, rows/columns/boxes each a permutation of the digits.

    Every pass the masks carry what the settled cells force (single candidates, single places); when the
    settled cells lead to a cell or unit with no option left, everything settled since the first guess is
    re-noised (`restart`): a wrong guess poisons everything forced after it, and the next attempt samples fresh
    guesses. What the clues alone force (depth 0) is kept."""
    b = puzzle_values.shape[0]
    cm = ConstraintModel(CELLS, TOKENIZER.get_vocab_size(), batch_size=b)
    cm.allow(range(CELLS), DIGIT_IDS)
    value_to_id = VALUE_TO_ID.to(puzzle_values.device)
    for row in range(b):
        cells = torch.nonzero(puzzle_values[row]).squeeze(1)
        cm.pin(cells.tolist(), value_to_id[puzzle_values[row, cells]].tolist(), row=row)
    for unit in UNITS:
        cm.all_different(unit, DIGIT_IDS, exact=True)
    return cm.compile(device, dead_end=dead_end)


def pins_only(puzzle_values: Tensor, device: str | torch.device = "cpu") -> Pins:
    """Only the clues, pinned: the 'model only' baseline (no masks, no re-noising, no verifier)."""
    return Pins((puzzle_values > 0).to(device), VALUE_TO_ID.to(puzzle_values.device)[puzzle_values].to(device))


# ------------------------------------------------------------------------------------------ training data
def random_symmetry(puzzles: Tensor, solutions: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The same random Sudoku symmetry applied to each (puzzle, solution) pair: digit relabelling, row and
    column permutations within bands/stacks, band/stack permutations, transpose. All batched gathers."""
    b, device = puzzles.shape[0], puzzles.device

    def perm(*shape: int) -> Tensor:
        return torch.argsort(torch.rand(*shape, generator=generator, device=device), dim=-1)

    relabel = torch.cat((torch.zeros(b, 1, dtype=torch.long, device=device), perm(b, 9) + 1), dim=1)
    rows = (3 * perm(b, 3)[:, :, None] + perm(b, 3, 3)).reshape(b, 9)
    cols = (3 * perm(b, 3)[:, :, None] + perm(b, 3, 3)).reshape(b, 9)
    cells = rows[:, :, None] * 9 + cols[:, None, :]
    transpose = torch.rand(b, generator=generator, device=device) < 0.5
    cells = torch.where(transpose[:, None, None], cells.transpose(1, 2), cells).reshape(b, CELLS)

    def apply(grid: Tensor) -> Tensor:
        return relabel.gather(1, grid.gather(1, cells))

    return apply(puzzles), apply(solutions)


class SudokuStream:
    """Training batches: a base set of generated (puzzle, solution) pairs, each drawn with a fresh random
    symmetry, so every batch holds puzzles never seen before (the group has 2 x 9! x 6^8 elements)."""

    def __init__(self, puzzles: np.ndarray, solutions: np.ndarray, device: str | torch.device = "cpu"):
        self.puzzles = torch.as_tensor(puzzles, dtype=torch.long, device=device)
        self.solutions = torch.as_tensor(solutions, dtype=torch.long, device=device)
        self.device = torch.device(device)

    def batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        index = torch.randint(0, len(self.puzzles), (batch_size,), generator=generator).to(self.device)
        puzzles, solutions = random_symmetry(self.puzzles[index], self.solutions[index],
                                             child_generator(generator, self.device))
        return Batch(encode_prompt(puzzles), VALUE_TO_ID.to(self.device)[solutions], target_mask=puzzles == 0)


def base_set(path: Path, examples: int, seed: int, workers: int = 2, check: bool = True
             ) -> tuple[np.ndarray, np.ndarray]:
    """Generated (puzzle, solution) value arrays, cached as .npz (never the shared evaluation sets)."""
    def build() -> dict[str, np.ndarray]:
        # about 1,000 puzzles per second and worker here: say what the silent minute is
        print(f"generating {examples:,} training puzzles ({plural(workers, 'worker')}) into {path}",
              file=sys.stderr, flush=True)
        pairs = generate_examples_parallel(examples, seed, workers)
        return {"puzzles": np.array([[int(c) for c in p] for p, _ in pairs], dtype=np.uint8),
                "solutions": np.array([[int(c) for c in s] for _, s in pairs], dtype=np.uint8)}

    data = cached_training_set(path, build, {"examples": examples, "seed": seed, "workers": workers},
                               {"puzzles": (CELLS,), "solutions": (CELLS,)}, check)
    puzzles, solutions = data["puzzles"], data["solutions"]
    for name, values in data.items():
        if values.dtype.kind not in "iu":  # 1.5 would train as 1
            raise ValueError(f"{path}: '{name}' holds {values.dtype} values, not digits (whole numbers)")
    if not (((puzzles >= 0) & (puzzles <= 9)).all() and ((solutions >= 1) & (solutions <= 9)).all()
            and ((puzzles == 0) | (puzzles == solutions)).all()):
        raise ValueError(f"{path}: puzzles must hold 0-9 (0 blank), solutions 1-9, and every clue must equal its "
                         "solution's digit")
    _check_rules(path, solutions)
    return puzzles, solutions


def _check_rules(path: Path, solutions: np.ndarray) -> None:
    """ValueError for solutions that repeat a digit in a unit: a model trained on them learns to break the rules."""
    units = np.sort(solutions[:, np.asarray(UNITS)], axis=-1)  # [N, 27 units, 9 digits]
    if (wrong := np.flatnonzero(~(units == np.arange(1, 10)).all(axis=(1, 2)))).size:
        raise ValueError(f"{path}: {plural(wrong.size, 'solution')} repeat{'s' * (wrong.size == 1)} a digit in a "
                         f"row, column or box (the first at index {wrong[0]}, counting from 0)")


DATA_CARD = ("Generated by diffsolve (`diffsolve.tasks.sudoku_data`), never the public evaluation sets: a cached "
             "base set of `--examples` (puzzle, solution) pairs from random valid grids with 17-40 givens requested "
             "(30 % made unique-solution by clue removal, the rest by random removal, which may leave several "
             "solutions: the generating grid is the target), generated by `--workers` processes from seeds derived "
             "from `--seed` (so both decide the set). Every batch draws base pairs with a fresh random Sudoku symmetry "
             "(digit relabelling, row/column permutations within and of bands and stacks, transposition).")


def batches(out_dir: Path, seed: int, batch_size: int, device: str, data: Path | None = None,
            examples: int = 50_000, workers: int = 2) -> Callable[[int, torch.Generator], Batch]:
    puzzles, solutions = base_set(data or out_dir / "sudoku_base.npz", examples, seed, workers, check=data is None)
    stream = SudokuStream(puzzles, solutions, device)
    return lambda step, generator: stream.batch(generator, batch_size)


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def one_pass_accuracy(model: DiffusionGemma, puzzle_values: Tensor, solution_values: Tensor,
                      seed: int = 0) -> dict[str, float]:
    """Blank-cell accuracy of the argmax after one denoising pass from noise (clues pinned), and after a
    second, self-conditioned pass -- the model-quality numbers that guidance cannot inflate."""
    device = model.device
    puzzle_values, solution_values = puzzle_values.to(device), solution_values.to(device)
    g = torch.Generator(device).manual_seed(seed)
    clue_ids = VALUE_TO_ID.to(device)[puzzle_values]
    blanks = puzzle_values == 0
    noise = torch.randint(0, model.config.vocab_size, clue_ids.shape, generator=g, device=device)
    canvas = torch.where(blanks, noise, clue_ids)
    cache = model.encode(encode_prompt(puzzle_values))
    first = model.denoise(canvas, cache)
    second = model.denoise(canvas, cache, first)
    truth = VALUE_TO_ID.to(device)[solution_values]

    def acc(logits: Tensor) -> float:
        return ((logits.argmax(-1) == truth) & blanks).sum().item() / blanks.sum().item()

    return {"one_pass_blank_acc": acc(first), "two_pass_blank_acc": acc(second)}


def evaluate(model: DiffusionGemma, n: int = 256, seed: int = 10**6) -> dict[str, float]:
    """One-pass accuracy on fresh generated puzzles: 36 givens (easy) and unique minimal ones (hard)."""
    metrics = {}
    for name, lo, hi, unique in (("easy", 36, 36, 0.0), ("hard", 17, 17, 1.0)):
        pairs = generate_examples(n, seed, min_givens=lo, max_givens=hi, unique_fraction=unique)
        p, s = values([p for p, _ in pairs]), values([s for _, s in pairs])
        metrics.update({f"{name}_{k}": v for k, v in one_pass_accuracy(model, p, s).items()})
    return metrics
