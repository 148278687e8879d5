"""`solve sudoku`: puzzle files in, verified grids out, in input order."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import typer
from rich.console import Console

from ..core import CtrlC, StepInfo
from ..core.arguments import MAX_CANVASES
from ..tasks.text import bad_byte, read_text, split_lines
from .base import DiffusionSolver
from .cli_common import (DEVICE, SEED_RANGE, STEPS_RANGE, THREADS, UNFINISHED, InOrder, app, check_canvases,
                         check_checkpoint_found, check_device_option, check_search, choice, error, finite, input_name,
                         interrupted, load_task_model, rich_progress, unreadable, usage_error)


@app.command()
def sudoku(
    files: list[str] = typer.Argument(..., metavar="FILE...", help="Puzzle files ('-' for stdin), solved in "
                                      "order: one 81-char puzzle per line ('.', '0' or '-' for blanks), 9-line "
                                      "grids, or CSV with a puzzle/quizzes column."),
    format: str = typer.Option("text", "--format", "-f", help="text (grids), line (81 chars) or json (one object "
                                                              "per puzzle per line, in input order)."),
    checkpoint: str = typer.Option(None, help="Checkpoint directory or hub id (default: the shipped model)."),
    canvases: int = typer.Option(None, min=1, max=MAX_CANVASES, show_default=False,
                                 help="Parallel canvases per puzzle; the first verified one wins (default "
                                 f"{DiffusionSolver.DEFAULT_CANVASES}; --model-only samples one)."),
    max_steps: int = typer.Option(256, **STEPS_RANGE, help="Denoising passes before giving up on a puzzle. The guided "
                                  "search stops a puzzle once it is verified; --model-only stops only by the stock "
                                  "sampler's own rule (a stable, confident canvas), often at the last pass."),
    model_only: bool = typer.Option(False, "--model-only", help="Stock sampler, clues pinned, one canvas: "
                                                                "measures the model without guidance."),
    backtrack: bool = typer.Option(False, "--backtrack", help="Exact search on top of the model: at a dead end "
                                   "a canvas undoes only its last guess and rules it out, instead of restarting. "
                                   "Solves the hardest puzzles; reported separately in the benchmark."),
    temperature: float = typer.Option(2.0, min=0.01, max=100.0, callback=finite,
                                      help="Sampling temperature of the guided search (hot keeps restarts from "
                                      "repeating the model's confident wrong guesses; forced cells settle "
                                      "regardless). Ignored with --model-only (the checkpoint's own settings)."),
    trace: bool = typer.Option(False, help="Show the first puzzle's canvas pass by pass on stderr (settled cells "
                                           "green, cells re-noised by a constraint red); the others are then "
                                           "solved as usual."),
    seed: int = typer.Option(0, **SEED_RANGE, help="Sampler seed."),
    device: str = DEVICE,
    threads: int = THREADS,
) -> None:
    """Solve every Sudoku in the FILEs. Only verified grids are printed as solutions.

    Exit status: 0 all solved, 1 some unsolved or unreadable, 2 nothing usable."""
    from ..tasks.sudoku_files import PuzzleFormatError, format_grid
    from .sudoku import SudokuResult, SudokuSolver

    format = choice(format, "--format", ("text", "line", "json"))
    if files.count("-") > 1:  # the second would read an exhausted stdin
        usage_error("'-' (stdin) is given more than once; it can be read only once")
    check_search(model_only, backtrack)
    check_canvases(canvases, model_only)
    check_device_option(device)
    check_checkpoint_found(checkpoint)  # before a large file is parsed (a 49 MB CSV takes 20 s)

    entries, names = _read_puzzle_files(files)

    def where(k: int) -> str:  # 'line 3', or 'b.txt:3' when several files are read ('b.txt' for a whole file)
        if entries[k].line is None:
            return names[k]
        return f"line {entries[k].line}" if len(files) == 1 else f"{names[k]}:{entries[k].line}"

    def emit_unreadable(k: int) -> None:  # stdout keeps one record per entry, in input order
        entry = entries[k]
        if format == "json":
            print(json.dumps({"file": names[k], "line": entry.line, "puzzle": None, "solution": None,
                              "verified": False, "reason": f"unreadable: {entry.message}", "steps": 0,
                              "forward_passes": 0, "seconds": 0.0, "expected": None, "matches_expected": None,
                              "warning": None}),
                  flush=True)
        elif format == "line":
            print(f"# {where(k)}: unreadable: {entry.message}", flush=True)

    good = [e for e in entries if not isinstance(e, PuzzleFormatError)]
    if not good:
        for k in range(len(entries)):
            emit_unreadable(k)
        usage_error(f"{', '.join(map(input_name, files))}: no usable puzzle")
    solver = load_task_model(checkpoint, "sudoku", device, threads, lambda model: SudokuSolver(
        model, guided=not model_only, canvases=canvases, max_steps=max_steps, seed=seed, backtrack=backtrack,
        temperature=temperature), check_header=SudokuSolver.check_checkpoint)

    def emit(k: int, result) -> None:
        entry = entries[k]
        # A puzzle with several solutions may be solved otherwise than the file's solution column says.
        matches = None if entry.solution is None or not result.verified else result.solution == entry.solution
        if format == "json":
            print(json.dumps({"file": names[k], "line": entry.line, **result.to_dict(), "expected": entry.solution,
                              "matches_expected": matches, "warning": entry.warning}), flush=True)
        elif format == "line":
            print(result.solution if result.verified else f"# {where(k)}: {result.reason}", flush=True)
        else:
            other = ", another solution than the file's (the puzzle has several)" if matches is False else ""
            other += f" ({entry.warning})" if entry.warning else ""
            grid = format_grid(result.solution or result.puzzle)
            print(f"{where(k)}: {result.summary()}{other}\n{grid}\n", flush=True)

    order = InOrder([not isinstance(e, PuzzleFormatError) for e in entries], emit, emit_unreadable)
    try:
        with CtrlC() as ctrl_c:  # stops between passes, never in the middle of a printed record
            _solve_sudokus(solver, good, order, trace, ctrl_c.stop_if_asked)
    except KeyboardInterrupt:
        interrupted(order.interrupt(lambda k: emit(k, SudokuResult(entries[k].puzzle, None, False, UNFINISHED, 0, 0,
                                                                    0.0)), "puzzle"))
    unsolved = sum(not r.verified for r in order.results.values())
    raise typer.Exit(0 if unsolved == 0 and len(good) == len(entries) else 1)


def _read_puzzle_files(files: list[str]) -> tuple[list, list[str]]:
    """Every entry of every file, in order (a puzzle, or a PuzzleFormatError in the place of one that cannot be
    used), and the file each came from. Errors and warnings are said on stderr as they are read."""
    from ..tasks.sudoku_files import PuzzleFormatError, parse_puzzles

    entries, names = [], []
    for file in files:
        name = input_name(file)
        try:
            text = read_text(file)
            read = parse_puzzles(text, name)
        except OSError as exc:  # the other files are still solved; this one has a record in its place
            read = [PuzzleFormatError(name, None, f"cannot be read: {unreadable(exc)}")]
        if not read:  # told, never skipped: a second file that came out empty is a file the user lost
            read = [PuzzleFormatError(name, None, _no_puzzle(text))]
        entries += read
        names += [name] * len(read)
    for name, entry in zip(names, entries):
        if isinstance(entry, PuzzleFormatError):
            error(f"{entry}")
        elif entry.warning:
            print(f"{name}:{entry.line}: warning: {entry.warning}; the puzzle is solved without it", file=sys.stderr)
    return entries, names


def _no_puzzle(text: str) -> str:
    """Why a file gave no puzzle: empty, only comments and titles, or not text (its first bad byte; a title line
    with one is skipped like any title, since a Latin-1 'très difficile' above good puzzles is no reason to fail)."""
    for number, line in enumerate(split_lines(text), 1):
        if (problem := bad_byte(line)) is not None:
            return f"no puzzle in it; line {number}: {problem}"
    return "no puzzle in it (empty, or only comments and titles)"


def _solve_sudokus(solver, good: list, order: InOrder, trace: bool, stop_if_asked: Callable[[], None]) -> None:
    """Solve the readable entries `good`, handing results to `order`; the first alone under `trace`.
    `stop_if_asked()` is called after every pass, once the puzzles that pass finished are handed to `order`."""
    traced = 0
    if trace:  # the first puzzle alone, before the others, so that its passes are not mixed with a progress bar
        tracer, finished = _sudoku_tracer(solver.canvases), []

        def after_pass(info: StepInfo) -> None:
            tracer(info)
            while finished:  # on_result comes before its last pass reaches here: the result follows that pass
                order.add(0, finished.pop())
            stop_if_asked()  # a Ctrl-C keeps the result handed over

        solver.solve_many([good[0].puzzle], on_result=lambda _, result: finished.append(result), callback=after_pass)
        if finished:
            order.add(0, finished.pop())
        traced = 1
    order.flush()  # unreadable entries before the first puzzle
    rest = good[traced:]
    with rich_progress("solving", show=len(rest) > 1) as bar:
        task = bar.add_task("puzzles", total=len(rest))

        def done(i: int, result) -> None:  # as soon as the puzzle's canvases have stopped
            bar.advance(task)
            order.add(traced + i, result)

        solver.solve_many([e.puzzle for e in rest], on_result=done, callback=lambda info: stop_if_asked())


def _sudoku_tracer(canvases: int):
    """Prints to stderr, so that stdout holds only the results (one JSON object per line with -f json)."""
    from ..tasks import sudoku as task

    console = Console(stderr=True, soft_wrap=True)  # a line per pass header, however narrow the terminal
    coloured = console.color_system is not None and not console.no_color  # else unsettled cells show as '.'

    def show(info: StepInfo) -> None:
        row = int(info.solved.nonzero()[0, 0]) if info.solved.any() else 0  # the verified canvas once there is one
        grid = task.decode(info.argmax[row:row + 1])[0]
        settled, renoised = info.accepted[row].tolist(), info.renoised_by_constraint[row].tolist()
        console.print(f"pass {info.step}: {sum(settled)} settled, {sum(renoised)} re-noised by a constraint"
                      + (", [green]verified[/green]" if bool(info.solved[:canvases].any()) else "")
                      + ("" if coloured else " (. = not settled, * = re-noised)"))
        for r in range(9):
            cells = []
            for c in range(9):
                i = 9 * r + c
                style = "red" if renoised[i] else "green" if settled[i] else "dim"
                digit = grid[i] if coloured or settled[i] else "*" if renoised[i] else "."
                cells.append(f"[{style}]{digit}[/{style}]" + (" |" if c in (2, 5) else ""))
            console.print(" ".join(cells))
            if r in (2, 5):
                console.print("------+-------+------")

    return show
