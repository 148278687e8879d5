"""`SudokuSolver`: constraint-guided diffusion with parallel canvases; only verified grids come back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from ..core import (DiffusionGemma, FinishClock, StepInfo, arguments, generate, guided_config, load_model,
                    released_config)
from ..tasks import sudoku
from ..tasks.sudoku_data import PuzzleFormatError, is_valid_solution, parse_puzzles
from .checkpoints import check_task_model, default_checkpoint


@dataclass
class SudokuResult:
    puzzle: str  # 81 chars, '0' for blanks (an unreadable puzzle: the text as given, stripped)
    solution: str | None  # set only when verified
    verified: bool
    reason: str | None  # why there is no solution
    steps: int  # denoising passes until the answer (or the budget)
    forward_passes: int  # decoder row-passes spent on this puzzle, all its canvases together
    seconds: float  # from the start of its batch's sampling until all its canvases stopped

    def to_dict(self) -> dict:
        return asdict(self)


class SudokuSolver:
    """Solve Sudoku with a DiffusionGemma task model.

    `guided=True` (the full system): clues pinned; rows, columns and boxes as permutations of the digits,
    whose consequences (single candidates, single places, Hall sets) are propagated into the masks every pass;
    clash re-noising; at most one guess (a cell that had several candidates) per pass; a canvas whose settled
    cells reach a dead end restarts, and a guess that fails on its own is ruled out (for its sibling canvases
    too); `canvases` parallel canvases per puzzle, first verified wins. `backtrack=True` is an exact search
    on top: at a dead end a canvas undoes only its last guess and rules that value out while the earlier
    guesses stand (depth-first, the model picks every value). `guided=False` (model only): the stock sampler
    with clues pinned on one canvas. Either way the answer is checked by an independent verifier.

    `temperature` (guided only; the model-only sampler keeps the checkpoint's own settings): the constraints settle
    every forced cell whatever the temperature, so the model's logits matter only where it guesses, and
    there a sharp model makes the same confident wrong guess after every restart. Guessing at T = 2 keeps
    the restarts diverse (magictour, 50 puzzles at 128 passes: 46 solved at the released schedule, 50 at 2).
    """

    def __init__(self, model: DiffusionGemma, *, guided: bool = True, canvases: int = 8, max_steps: int = 256,
                 rows_per_batch: int = 256, seed: int = 0, backtrack: bool = False, temperature: float = 2.0):
        check_task_model(model, "sudoku", sudoku.TOKENIZER, sudoku.CELLS)
        self.model = model
        self.guided = guided
        self.backtrack = backtrack
        self.canvases = arguments.whole(canvases, "canvases", 1) if guided else 1
        max_steps = arguments.whole(max_steps, "max_steps", 1)
        if guided:
            temperature = arguments.positive(temperature, "temperature")
            self.config = guided_config(max_denoising_steps=max_steps, t_min=temperature, t_max=temperature)
        else:  # the stock sampler at the checkpoint's own settings (its generation_config.json)
            self.config = released_config(model, max_denoising_steps=max_steps, drop_finished=True)
        self.rows_per_batch = arguments.whole(rows_per_batch, "rows_per_batch", 1)
        self.seed = arguments.seed(seed)

    def __repr__(self) -> str:
        mode = ("guided, backtracking" if self.backtrack else "guided") if self.guided else "model only"
        return (f"SudokuSolver({self.model.source or 'model'}, {mode}, canvases={self.canvases}, "
                f"max_steps={self.config.max_denoising_steps}, seed={self.seed})")

    @classmethod
    def from_pretrained(cls, path: str | None = None, *, device: str = "cpu", **kwargs) -> "SudokuSolver":
        """A solver on the shipped checkpoint, or on `path` (a checkpoint directory or a cached hub id);
        `kwargs` go to the constructor."""
        return cls(load_model(default_checkpoint("sudoku") if path is None else path, device=device), **kwargs)

    def solve(self, puzzle: str, callback: Callable[[StepInfo], None] | None = None) -> SudokuResult:
        """One puzzle, read as `solve sudoku` reads one entry of a file: 81 cells in reading order on one line,
        digits for clues and '.', '0' or '-' for blanks (spaces and `|` are ignored), or a 9-line grid with or
        without `|`, `+` and `-` separators, as `format_grid` writes it; '#' starts a comment.
        `callback(StepInfo)` sees every denoising pass. The result's `solution` is set only when the grid is
        verified; otherwise `reason` says why not."""
        return self.solve_many([puzzle], callback=callback)[0]

    def solve_many(self, puzzles: Sequence[str], *, callback: Callable[[StepInfo], None] | None = None,
                   on_result: Callable[[int, SudokuResult], None] | None = None) -> list[SudokuResult]:
        """Solve puzzles in batches; `on_result(index, result)` fires as each batch finishes."""
        if isinstance(puzzles, str):
            raise TypeError("solve_many takes a sequence of puzzle strings; for one puzzle use solve(puzzle)")
        puzzles = list(puzzles)
        for p in puzzles:
            if not isinstance(p, str):
                raise TypeError(f"a puzzle is an 81-character string ('.', '0' or '-' for blanks), got {p!r}")
        arguments.callback(callback, "callback")
        arguments.callback(on_result, "on_result")
        results: list[SudokuResult | None] = [None] * len(puzzles)
        canonical, problems = zip(*map(_read_one, puzzles)) if puzzles else ((), ())
        todo = []
        for i, (p, problem) in enumerate(zip(canonical, problems)):
            if problem:
                results[i] = SudokuResult(p, None, False, problem, 0, 0, 0.0)
                if on_result:
                    on_result(i, results[i])
            else:
                todo.append(i)
        per_batch = max(1, self.rows_per_batch // self.canvases)
        for start in range(0, len(todo), per_batch):
            chunk = todo[start:start + per_batch]
            for i, result in zip(chunk, self._solve_batch([canonical[i] for i in chunk], callback)):
                results[i] = result
                if on_result:
                    on_result(i, result)
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _solve_batch(self, puzzles: list[str], callback) -> list[SudokuResult]:
        device = self.model.device
        values = sudoku.values(puzzles)
        if self.guided:
            guidance = sudoku.constraints(values, device, dead_end="backtrack" if self.backtrack else "restart")
        else:  # model only: nothing but the clues
            guidance = sudoku.pins_only(values, device)
        guidance = guidance.repeat(self.canvases)
        cache = self.model.encode(sudoku.encode_prompt(values).to(device)).select(
            torch.arange(len(puzzles)).repeat_interleave(self.canvases))
        clock = FinishClock(len(puzzles) * self.canvases, callback)
        out = generate(self.model, None, self.config, cache=cache, guidance=guidance, callback=clock,
                       generator=torch.Generator(device).manual_seed(self.seed))
        latency = clock.latency(self.canvases)
        grids = sudoku.decode(out.canvas)
        passes = out.forward_passes.view(len(puzzles), self.canvases)
        results = []
        for k, puzzle in enumerate(puzzles):
            rows = range(k * self.canvases, (k + 1) * self.canvases)
            found = next((grids[r] for r in rows if is_valid_solution(puzzle, grids[r])), None)
            if found:
                reason = None
            elif self.guided and bool(guidance.refuted[k]):
                reason = "the puzzle has no solution (the search ruled out every digit of some cell)"
            else:
                reason = f"no verified grid within {self.config.max_denoising_steps} passes" + (
                    "" if self.backtrack or not self.guided else " (the backtracking search goes further)")
            results.append(SudokuResult(puzzle, found, found is not None, reason, int(passes[k].max()),
                                        int(passes[k].sum()), float(latency[k])))
        return results


def _read_one(text: str) -> tuple[str, str | None]:
    """(the puzzle: 81 characters, '0' for blanks, problem None) or (the text stripped, what is wrong with it)."""
    entries = parse_puzzles(text)
    bad = next((entry for entry in entries if isinstance(entry, PuzzleFormatError)), None)
    if bad is not None:
        where = "" if len(text.strip().splitlines()) == 1 else f"line {bad.line}: "
        return text.strip(), where + bad.message
    if len(entries) != 1:
        return text.strip(), ("no puzzle in the text (a line of words with few digits reads as a title)"
                              if not entries else f"one puzzle expected, found {len(entries)}")
    return entries[0].puzzle, None
