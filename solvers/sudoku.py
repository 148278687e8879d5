"""`SudokuSolver`: constraint-guided diffusion with parallel canvases; only verified grids come back."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from torch import Tensor

from ..core import DiffusionGemma, SamplingConfig, StepCallback, arguments
from ..tasks import sudoku
from ..tasks.sudoku_data import conflicts, is_valid_solution
from ..tasks.sudoku_files import PuzzleFormatError, format_grid, parse_puzzles
from ..tasks.text import plural, split_lines
from .base import UNFINISHED, DiffusionSolver, unsolved

# text (or its 9 rows as strings), or 81 numbers (flat or 9 x 9)
Puzzle = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]] | np.ndarray
CANONICAL = re.compile("[0-9]{81}")  # a puzzle as SudokuResult.puzzle holds it


@dataclass
class SudokuResult:
    """One puzzle's answer. `solution` (81 digits) only when `verified`: every row, column and box complete and every
    clue kept, checked independently of the search; else `reason` says why not. `steps`: denoising passes until
    then; `forward_passes`: decoder row-passes of all its canvases together; `seconds`: from its batch's start.
    `to_dict()` for JSON or pandas, `to_array()` a 9 x 9 array, `summary()` one line; str() adds the grid."""

    puzzle: str  # 81 chars, '0' for blanks (unreadable: the text as given, stripped, or the numbers spaced)
    solution: str | None  # set only when verified
    verified: bool
    reason: str | None  # why there is no solution
    steps: int  # denoising passes until the answer (or the budget)
    forward_passes: int  # decoder row-passes spent on this puzzle, all its canvases together
    seconds: float  # from the start of its batch's sampling until all its canvases stopped

    def to_dict(self) -> dict:
        return asdict(self)

    def to_array(self) -> np.ndarray | None:
        """The solution as a 9 x 9 array of ints (as `solve` takes puzzles), or None when there is none."""
        return None if self.solution is None else np.array([int(ch) for ch in self.solution]).reshape(9, 9)

    def summary(self) -> str:
        """'verified in 8 passes (0.51 s)', or 'no verified solution -- ' and the reason."""
        if self.verified:
            return f"verified in {plural(self.steps, 'pass', 'passes')} ({self.seconds:.2f} s)"
        return f"no verified solution -- {self.reason}"

    def __str__(self) -> str:
        """The summary over the grid: the solution, or the puzzle ('.' for blanks) when there is none."""
        grid = self.solution or self.puzzle
        return self.summary() + "\n" + (format_grid(grid) if CANONICAL.fullmatch(grid) else grid)


GUESS_TEMPERATURE = 2.0  # see the class docstring: restarts stay diverse where the model guesses


class SudokuSolver(DiffusionSolver):
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

    CHECKPOINT, TOKENIZER, CANVAS = "sudoku", sudoku.TOKENIZER, sudoku.CELLS

    def __init__(self, model: DiffusionGemma, *, guided: bool = True, canvases: int | None = None,
                 max_steps: int = 256, rows_per_batch: int = 256, seed: int = 0, backtrack: bool = False,
                 temperature: float | None = GUESS_TEMPERATURE):
        self.backtrack = arguments.flag(backtrack, "backtrack")
        if self.backtrack and not arguments.flag(guided, "guided"):
            raise ValueError("backtrack is a guided search: the model alone (guided=False) does not backtrack")
        # None: the default, as in every solver; checked here, before the base's checks (the order they always had)
        temperature = GUESS_TEMPERATURE if temperature is None else arguments.positive(temperature, "temperature")
        super().__init__(model, guided=guided, canvases=canvases, max_steps=max_steps, seed=seed,
                         temperature=temperature)
        self.rows_per_batch = arguments.whole(rows_per_batch, "rows_per_batch", 1)
        self.config = super()._config(sudoku.CELLS)  # any checkpoint canvas of at least 81 is accepted

    def _config(self, length: int, max_steps: int | None = None, temperature: float | None = None) -> SamplingConfig:
        """`config`, the same for every batch and replaceable (benchmarks/sudoku_sampler.py tries others)."""
        if max_steps is not None or temperature is not None:
            raise ValueError("SudokuSolver samples every puzzle with its config: replace solver.config instead")
        return self.config

    def _mode(self) -> str:
        return "guided, backtracking" if self.backtrack else super()._mode()

    def _more_settings(self) -> dict:
        return {"rows_per_batch": self.rows_per_batch}

    def _temperature_shown(self) -> str | None:
        """The config's (replaceable, see `_config`), not the constructor's: what it samples with."""
        if not self.guided:
            return None
        t_min, t_max = self.config.t_min, self.config.t_max
        return f"{t_max}" if t_min == t_max else f"{t_max}->{t_min}"

    def solve(self, puzzle: Puzzle, callback: StepCallback | None = None) -> SudokuResult:
        """One puzzle, read as `solve sudoku` reads one entry of a file: 81 cells in reading order on one line,
        digits for clues and '.', '0' or '-' for blanks (spaces and `|` are ignored), or a 9-line grid with or
        without `|`, `+` and `-` separators, as `format_grid` writes it, or those 9 rows as a list of strings;
        '#' starts a comment. Or 81 whole numbers 0-9 (a list, tuple or numpy array, flat or 9 x 9), 0 for blanks.
        `callback(StepInfo)` sees every denoising pass. The result's `solution` is set only when the grid is
        verified; otherwise `reason` says why not."""
        return self.solve_many([puzzle], callback=callback)[0]

    def solve_many(self, puzzles: Sequence[Puzzle], *, callback: StepCallback | None = None,
                   on_result: Callable[[int, SudokuResult], None] | None = None,
                   progress: bool = False) -> list[SudokuResult]:
        """Solve puzzles in batches; `on_result(index, result)` fires as soon as a puzzle's canvases have stopped
        (unreadable puzzles first), so in any order; the list returned is in input order. `progress=True` shows
        a progress bar of puzzles done (on stderr, or a widget in a notebook with ipywidgets). Ctrl-C raises
        BatchInterrupted (a KeyboardInterrupt) whose `results` keep the puzzles solved until then."""
        if isinstance(puzzles, str):
            raise TypeError("solve_many takes a sequence of puzzle strings; for one puzzle use solve(puzzle)")
        puzzles, read = arguments.items(puzzles, "puzzles"), []
        if _one_grid(puzzles):  # its rows would read as nine puzzles of nine numbers
            raise TypeError("solve_many takes a sequence of puzzles, got one 9 x 9 grid; for one puzzle use "
                            "solve(puzzle)")
        for i, puzzle in enumerate(puzzles):  # a wrong type is a TypeError before any work
            with arguments.numbered("puzzle", i, len(puzzles)):
                read.append(_read_puzzle(puzzle))
        arguments.callback(callback, "callback")
        arguments.callback(on_result, "on_result")
        progress = arguments.flag(progress, "progress")
        canonical, problems = zip(*read) if read else ((), ())
        results = [None if problem is None else SudokuResult(p, None, False, problem, 0, 0, 0.0)
                   for p, problem in zip(canonical, problems)]
        return self._in_batches(
            results, [i for i, result in enumerate(results) if result is None],
            max(1, self.rows_per_batch // self.canvases),
            lambda chunk, report: self._solve_batch([canonical[i] for i in chunk], callback, report),
            lambda i: SudokuResult(canonical[i], None, False, UNFINISHED, 0, 0, 0.0), progress, "sudoku", "puzzle",
            on_result)

    def _solve_batch(self, puzzles: list[str], callback, report: Callable[[int, SudokuResult], None]) -> None:
        """Solve one batch, calling `report(k, result)` for puzzle k as soon as all its canvases have stopped."""
        values = sudoku.values(puzzles)
        if self.guided:
            guidance = sudoku.constraints(values, self.model.device, dead_end="backtrack" if self.backtrack
                                          else "restart")
        else:  # model only: nothing but the clues
            guidance = sudoku.pins_only(values, self.model.device)

        def result(k: int, canvas: Tensor, passes: Tensor, seconds: float) -> None:
            found = next((grid for grid in sudoku.decode(canvas) if is_valid_solution(puzzles[k], grid)), None)
            if found:
                reason = None
            elif self.guided and bool(guidance.refuted[k]):
                reason = "the puzzle has no solution (the search ruled out every digit of some cell)"
            else:
                reason = unsolved(passes, self.config.max_denoising_steps)
                if self.guided and not self.backtrack:
                    reason += " (another seed or more canvases may find one; the backtracking search goes further)"
            report(k, SudokuResult(puzzles[k], found, found is not None, reason, int(passes.max()), int(passes.sum()),
                                seconds))

        self._run(sudoku.encode_prompt(values), guidance, sudoku.CELLS, callback=callback, on_instance=result)


def _row_strings(puzzle: object) -> bool:
    """Whether `puzzle` is a grid as a list (or tuple) of 9 strings, one row of 9 cells each ('..43..2.9')."""
    return (isinstance(puzzle, (list, tuple)) and len(puzzle) == 9 and all(isinstance(row, str) for row in puzzle)
            and all(len(re.sub(r"[\s|]", "", row)) == 9 for row in puzzle))


def _one_grid(puzzles: list) -> bool:
    """Whether `puzzles` is one puzzle as 9 rows of 9 numbers, or as 9 strings of 9 cells."""
    if _row_strings(puzzles):
        return True
    try:
        cells = np.asarray(puzzles)
    except (TypeError, ValueError):  # ragged
        return False
    return cells.shape == (9, 9) and cells.dtype.kind in "iuf"


def _read_puzzle(puzzle) -> tuple[str, str | None]:
    """(the puzzle: 81 characters, '0' for blanks, problem None) or (its text, what is wrong with it), from a
    string or from whole numbers 0-9 (a list, tuple or numpy array, flat or 9 x 9, 0 for blanks); anything else
    is a TypeError."""
    if isinstance(puzzle, str):
        return _read_one(puzzle)
    if _row_strings(puzzle):
        return _read_one("\n".join(puzzle))
    try:
        cells = np.asarray(puzzle) if not isinstance(puzzle, (bytes, dict, set)) else None
    except (TypeError, ValueError):  # ragged nested lists
        cells = None
    if cells is None or cells.ndim == 0 or cells.dtype.kind not in "iuf":
        shape = f" of shape {cells.shape}" if cells is not None and cells.shape else ""
        raise TypeError("a puzzle is an 81-character string ('.', '0' or '-' for blanks), 9 strings of 9 cells, or "
                        "81 whole numbers 0-9 (flat or 9 x 9, 0 for blanks), got "
                        f"{type(puzzle).__name__}{shape}: {reprlib.repr(puzzle)}")
    numbers = " ".join(f"{v:g}" for v in cells.ravel())
    if cells.shape not in ((81,), (9, 9)):
        return numbers, f"expected 81 numbers (flat or 9 x 9), got shape {cells.shape}"
    usable = np.isin(cells, np.arange(10))  # NaN (an empty cell read by pandas) and inf are not
    if not usable.all():
        wrong = cells.ravel()[np.argmin(usable.ravel())]
        missing = " (a missing value, which may be a lost clue; where it means a blank, write 0: np.nan_to_num)"
        return numbers, f"a puzzle's numbers are whole numbers 0-9 (0 for blanks), got {wrong:g}" + (
            missing if np.isnan(wrong) else "")
    truth = next((v for v in np.asarray(puzzle, dtype=object).ravel() if isinstance(v, (bool, np.bool_))), None)
    if truth is not None:  # numpy reads [True, 0, ...] as numbers: True would become a clue 1
        return numbers, f"a puzzle's numbers are whole numbers 0-9 (0 for blanks), got {truth}"
    return _read_one("".join(str(int(v)) for v in cells.ravel()))


def _read_one(text: str) -> tuple[str, str | None]:
    """(the puzzle: 81 characters, '0' for blanks, problem None) or (the text stripped, what is wrong with it)."""
    if not text.strip():
        return text.strip(), "the puzzle text is empty"
    if CANONICAL.fullmatch(text) and not conflicts(text):  # what the CLI hands over: no need to parse it again
        return text, None
    entries = parse_puzzles(text)
    bad = next((entry for entry in entries if isinstance(entry, PuzzleFormatError)), None)
    if bad is not None:
        where = "" if len(split_lines(text.strip())) == 1 else f"line {bad.line}: "
        return text.strip(), where + bad.message
    if len(entries) != 1:
        return text.strip(), ("no puzzle in the text (a line of words with few digits reads as a title)"
                              if not entries else f"one puzzle expected, found {len(entries)}")
    return entries[0].puzzle, None
