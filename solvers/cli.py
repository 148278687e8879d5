"""The `solve` command line."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import secrets
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch
import typer
from rich.console import Console

from ..core import (CheckpointError, ConfigError, CtrlC, DiffusionGemma, SamplingConfig, StepInfo, check_device,
                    generate, load_model, one_canvas, resolve_checkpoint, write_atomically)
from ..core.arguments import MAX_CANVASES, MAX_STEPS
from ..tasks.text import bad_byte, plural, read_text, split_lines
from .base import DiffusionSolver
from .checkpoints import check_task_model, default_checkpoint

if TYPE_CHECKING:
    from rich.progress import Progress

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="diffsolve: constraint-guided diffusion solvers that return only verified answers.\n\n"
                       "Besides each command's own exit statuses: 130 after Ctrl-C or SIGTERM (what was done is "
                       "kept), 141 when a reader of the output stops early (`| head`).")
console = Console()
TASKS = ("sorting", "sudoku", "molecules", "graphs")
PREPARED_SETS = ("sudoku", "molecules")  # the tasks solve train trains on a prepared set; the others draw afresh
DEFAULT_EXAMPLES, DEFAULT_WORKERS = 50_000, 2  # the prepared sets' size and the processes that build them
# Peak learning rates: from scratch, and from --init weights (the shipped models' warm-start stages used 3e-4 to
# 5e-4; the scratch rate's first steps under a fresh optimizer wipe out what a small trained model knows).
SCRATCH_LR, WARM_START_LR = 2e-3, 5e-4
WARM_START_WARMUP = 10  # at least these warmup steps from --init, however short the run


def _error(message: str) -> None:
    """Errors go to stderr unwrapped, so that `file:line: message` stays on one line for tools."""
    print(f"error: {message}", file=sys.stderr)


def choice(value: str, option: str, choices: tuple[str, ...]) -> str:
    """`value` in lower case (JSON or json alike) when it is one of `choices`; anything else exits 2."""
    if value.lower() not in choices:
        _error(f"{option} must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}")
        raise typer.Exit(2)
    return value.lower()


INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


def interrupted(what: str) -> NoReturn:
    """After Ctrl-C: say on stderr what was kept (`what`) and exit 130."""
    print(f"interrupted: {what}", file=sys.stderr)
    raise typer.Exit(INTERRUPTED)


def input_name(file: str | Path) -> str:
    """How messages name an input: '-' is stdin."""
    return "<stdin>" if str(file) == "-" else str(file)


def read_input(file: str | Path) -> tuple[str, str]:
    """(name for messages, text) of an input file or, for '-', of stdin, decoded as `tasks.text` says; an
    unreadable one exits 2."""
    try:
        return input_name(file), read_text(file)
    except OSError as exc:
        _error(f"{input_name(file)}: {unreadable(exc)}")
        raise typer.Exit(2) from None


def unreadable(exc: OSError) -> str:
    """Why a file could not be read, without the path the message would repeat."""
    return exc.strerror or str(exc)


def _check_writable(path: Path | None, option: str) -> None:
    """Refuse an output path whose folder is missing or read-only before any work is done."""
    if path is None:
        return
    if path.exists() and not path.is_file() and not path.is_dir():  # /dev/stdout, a pipe: written directly
        problem = None if os.access(path, os.W_OK) else "is not writable"
    else:
        target = Path(os.path.realpath(path))  # a symbolic link's target is what gets replaced
        folder = target.parent
        problem = ("is a folder" if path.is_dir() else f"folder {folder} does not exist" if not folder.is_dir()
                   else _unwritable(folder))
    if problem:
        _error(f"{option} {path}: {problem}")
        raise typer.Exit(2)


def _unwritable(folder: Path) -> str | None:
    """Why no file can be made in `folder`, found by making one, as the atomic write will (os.access tells root
    yes even where every write fails, as in /proc)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".diffsolve-probe-"):
            return None
    except OSError:  # its reason can mislead: /proc says 'No such file or directory'
        return f"folder {folder} is not writable"


# What each drawing path writes: RDKit's molecule grids are PIL images, graphs are matplotlib figures.
IMAGE_TYPES = {"molecules": (".png", ".svg", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"),
               "graphs": (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".eps", ".ps")}


def _check_image(path: Path | None, kind: str, reads: Path | None = None) -> None:
    """--image: a writable path of a type the drawing can be saved as, and not the input file `reads` (which the
    picture would replace), checked before any work."""
    same = path is not None and reads is not None and str(reads) != "-"
    if same and os.path.realpath(path) == os.path.realpath(reads):
        _error(f"--image {path} is the input file: the picture would replace the graph")
        raise typer.Exit(2)
    _check_writable(path, "--image")
    if path is not None and path.suffix.lower() not in IMAGE_TYPES[kind]:
        _error(f"--image {path}: cannot write {path.suffix or 'a file without a suffix'}; "
               f"use {', '.join(IMAGE_TYPES[kind])}")
        raise typer.Exit(2)


def _finite(value: float | None) -> float | None:
    """A float option's callback: typer's min/max let NaN through (every comparison with it is false)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _above_zero(value: float | None) -> float | None:
    """`_finite`, and above 0 (a learning rate of 0 trains nothing; typer's min is inclusive)."""
    if _finite(value) is not None and value <= 0:
        raise typer.BadParameter(f"{value:g} is not above 0")
    return value


_OPTIONS = {"compile": False, "dtype": "auto"}
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SEED_RANGE = dict(min=0, max=2**63 - 1)  # what torch generators take
STEPS_RANGE = dict(min=1, max=MAX_STEPS)  # what the sampler's int32 pass count takes
# Options every solving command shares (typer reads them as defaults).
DEVICE = typer.Option("cpu", help="cpu or cuda.")
THREADS = typer.Option(None, min=1, show_default=False, help="CPU threads for torch [default: torch's choice, "
                       "about one per core]. On a machine busy with other work, 1 can be many times faster.")


def _version(show: bool) -> None:
    if show:
        from .. import __version__

        print(f"diffsolve {__version__} (torch {torch.__version__})")
        raise typer.Exit(0)


@app.callback()
def _options(compile: bool = typer.Option(
        False, "--compile", help="Compile the model with torch.compile: the decoder pass before solving (several "
        "times faster per pass on small models), both passes for train (up to 1.3x per step on CPU, for the "
        "molecule model). The one-off compilation takes one to three minutes per new shape, so it is worth it "
        "for long runs (many puzzles, benchmarks, training); needs a C++ compiler on CPU. Goes before the "
        "command: solve --compile sudoku FILE."),
        dtype: str = typer.Option(
            "auto", "--dtype",
            help="auto, float32, bfloat16 or float16: the dtype solving commands run the model in. auto is the "
            "one the checkpoint's config.json names (float32 for the shipped models, bfloat16 for the released "
            "26B model, which needs about 50 GB in it and twice that in float32). solve train always trains in "
            "float32."),
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Print the version and exit.")) -> None:
    """Options for every command (they go before the command's name)."""
    _OPTIONS["compile"] = compile
    if dtype.lower() not in DTYPES:
        _error(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
        raise typer.Exit(2)
    _OPTIONS["dtype"] = DTYPES[dtype.lower()]
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, timeout, a batch scheduler's time limit) stops as Ctrl-C does: what was done is kept
        # (Typer turns a KeyboardInterrupt no command handles into exit 130)
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def working(label: str) -> Progress:
    """A transient spinner with the time elapsed on stderr, for work with no count to show; only on a terminal."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn(label), TimeElapsedColumn(), console=Console(stderr=True),
                   transient=True, disable=not sys.stderr.isatty())
    bar.add_task(label, total=None)
    return bar


def rich_progress(label: str, *fields: str, show: bool = True) -> Progress:
    """A transient rich progress bar on stderr (label, bar, done/total, `fields` as text columns, time), shown only
    when stderr is a terminal: logs and pipes get no bar and no stray blank line. Results printed meanwhile stay on
    stdout; only when stdout is the terminal too are they drawn above the bar (else a redirected file gets none)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), *map(TextColumn, fields),
                    TimeElapsedColumn(), console=Console(stderr=True, soft_wrap=True), transient=True,
                    disable=not (show and sys.stderr.isatty()), redirect_stdout=sys.stdout.isatty())


class InOrder:
    """One record per input entry, in input order, although results arrive out of order: `emit(k, result)` for
    readable entry k, `emit_unreadable(k)` for one that could not be read (in its place)."""

    def __init__(self, readable: list[bool], emit: Callable[[int, object], None],
                 emit_unreadable: Callable[[int], None]):
        self.readable, self.emit, self.emit_unreadable = readable, emit, emit_unreadable
        self.instance_of = {k: i for i, k in enumerate(k for k, ok in enumerate(readable) if ok)}
        self.results: dict[int, object] = {}  # by instance: the position among the readable entries
        self.printed = 0

    def untold(self) -> str:
        """What was not printed, for an interrupt: results waiting for an earlier one, and the unfinished."""
        waiting = sum(1 for k, i in self.instance_of.items() if k >= self.printed and i in self.results)
        unfinished = len(self.instance_of) - len(self.results)
        return (f"{waiting} solved {'one' if waiting == 1 else 'ones'} held back behind an unfinished earlier one "
                "(output keeps input order); " if waiting else "") + f"{unfinished} unfinished"

    def add(self, instance: int, result: object) -> None:
        self.results[instance] = result
        self.flush()

    def flush(self) -> None:
        while self.printed < len(self.readable):
            k = self.printed
            if not self.readable[k]:
                self.emit_unreadable(k)
            elif self.instance_of[k] in self.results:
                self.emit(k, self.results[self.instance_of[k]])
            else:
                return
            self.printed += 1


def _check_search(model_only: bool, backtrack: bool, tabu: bool = False) -> None:
    chosen = [name for name, on in (("--model-only", model_only), ("--backtrack", backtrack), ("--tabu", tabu)) if on]
    if len(chosen) > 1:
        _error(f"{', '.join(chosen[:-1])} and {chosen[-1]} exclude each other")
        raise typer.Exit(2)


def _check_canvases(canvases: int | None, model_only: bool) -> None:
    """--model-only samples one canvas (as `arguments.canvases` has it), checked before a model is loaded."""
    if model_only and canvases not in (None, 1):
        _error(f"--canvases {canvases}: --model-only samples one canvas (--canvases is for the guided search)")
        raise typer.Exit(2)


def _check_device(device: str) -> None:
    """Refuse a device torch cannot use here before anything is loaded."""
    try:
        check_device(device)
    except ValueError as exc:
        _error(f"--{exc}")
        raise typer.Exit(2) from None


def _load(checkpoint: str | None, task: str, device: str, threads: int | None,
          build: Callable = lambda model: model):
    """The task's model (compiled with --compile) wrapped by `build` (a solver, which refuses a checkpoint made
    for another task), run on `threads` CPU threads when given; unusable devices and checkpoints exit 2 with one
    line."""
    _check_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model = load_model(default_checkpoint(task) if checkpoint is None else checkpoint, dtype=_OPTIONS["dtype"],
                           device=device)
        if _OPTIONS["compile"]:
            model.compile_denoiser()
        return build(model)
    except (CheckpointError, ConfigError) as exc:
        _error(f"{exc}" if checkpoint is None else _naming("--checkpoint", checkpoint, exc))
        raise typer.Exit(2) from None


def _check_checkpoint_found(checkpoint: str | None) -> None:
    """--checkpoint names a folder, or a hub id in the cache (or on the Hub), before any input is read; exit 2."""
    if checkpoint is None:
        return
    try:
        resolve_checkpoint(checkpoint)
    except CheckpointError as exc:
        _error(_naming("--checkpoint", checkpoint, exc))
        raise typer.Exit(2) from None


def _naming(option: str, value: str | Path, exc: Exception) -> str:
    """`OPTION VALUE: what is wrong`, without the message's own copy of the path when it starts with one."""
    head, colon, rest = f"{exc}".partition(": ")
    same = colon and (head == str(value) or Path(head).resolve() == Path(value).resolve())
    return f"{option} {value}: {rest if same else exc}"


@app.command()
def demo(
    digits: str = typer.Option(None, help="16 digits to sort, e.g. 3141592653589793 (default: random)."),
    seed: int = typer.Option(0, **SEED_RANGE, help="Seed for the random input and the sampler."),
    checkpoint: str = typer.Option(None, help="Checkpoint directory or hub id (default: the shipped demo)."),
    guided: bool = typer.Option(True, help="Apply the task's constraints every pass (off: the model alone)."),
    device: str = DEVICE,
    threads: int = THREADS,
) -> None:
    """Load the shipped tiny checkpoint and watch a canvas denoise: 16 digits sorted by diffusion.

    Exit status: 0 done (the last line says whether the answer is verified), 2 bad input."""
    from ..tasks import sorting

    if digits is None:
        values = torch.randint(0, 10, (1, sorting.LENGTH), generator=torch.Generator().manual_seed(seed))
    else:
        if len(digits) != sorting.LENGTH or not all(c in "0123456789" for c in digits):
            _error(f"--digits needs exactly {sorting.LENGTH} digits, got {digits!r}")
            raise typer.Exit(2)
        values = torch.tensor([[int(c) for c in digits]])
    model = _load(checkpoint, "sorting", device, threads, lambda model: check_task_model(
        model, "sorting", sorting.TOKENIZER, sorting.LENGTH, exact=True) or model)
    prompt = sorting.encode_prompt(values).to(device)
    console.print(f"input     {''.join(map(str, values[0].tolist()))}")

    def show(info: StepInfo) -> None:
        text = sorting.decode(info.argmax)[0]
        marks = "".join("[green]" + c + "[/green]" if ok else "[dim]" + c + "[/dim]"
                        for c, ok in zip(text, info.accepted[0].tolist()))
        console.print(f"pass {info.step:>3}  {marks}  accepted {int(info.accepted[0].sum()):>2}/{sorting.LENGTH}"
                      + ("  [yellow]re-noised[/yellow] " + str(int(info.renoised_by_constraint[0].sum()))
                         if info.renoised_by_constraint[0].any() else ""))

    config = SamplingConfig(keep_accepted=guided, **one_canvas(sorting.LENGTH))
    guidance = sorting.constraints(values, device) if guided else None
    started = time.perf_counter()
    out = generate(model, prompt, config, guidance=guidance, callback=show,
                   generator=torch.Generator(device).manual_seed(seed))
    seconds = time.perf_counter() - started
    answer = sorting.decode(out.canvas)[0]
    correct = answer == "".join(sorted(map(str, values[0].tolist())))
    if guided:
        verdict = "[green]verified[/green]" if bool(out.solved[0]) else "[red]no verified answer[/red]"
    else:
        verdict = "[green]correct[/green]" if correct else "[red]wrong[/red]"
    passes = int(out.forward_passes[0])
    console.print(f"output    {answer}  {verdict}  ({plural(passes, 'pass', 'passes')}, {seconds:.2f} s)")


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
    temperature: float = typer.Option(2.0, min=0.01, max=100.0, callback=_finite,
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
    from ..tasks.sudoku_data import PuzzleFormatError, format_grid
    from .sudoku import SudokuSolver

    format = choice(format, "--format", ("text", "line", "json"))
    _check_search(model_only, backtrack)
    _check_canvases(canvases, model_only)
    _check_device(device)
    _check_checkpoint_found(checkpoint)  # before a large file is parsed (a 49 MB CSV takes 20 s)

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
                              "forward_passes": 0, "seconds": 0.0, "expected": None, "matches_expected": None}),
                  flush=True)
        elif format == "line":
            print(f"# {where(k)}: unreadable: {entry.message}", flush=True)

    good = [e for e in entries if not isinstance(e, PuzzleFormatError)]
    if not good:
        for k in range(len(entries)):
            emit_unreadable(k)
        _error(f"{', '.join(map(input_name, files))}: no usable puzzle")
        raise typer.Exit(2)
    solver = _load(checkpoint, "sudoku", device, threads, lambda model: SudokuSolver(
        model, guided=not model_only, canvases=canvases, max_steps=max_steps, seed=seed, backtrack=backtrack,
        temperature=temperature))

    def emit(k: int, result) -> None:
        entry = entries[k]
        # A puzzle with several solutions may be solved otherwise than the file's solution column says.
        matches = None if entry.solution is None or not result.verified else result.solution == entry.solution
        if format == "json":
            print(json.dumps({"file": names[k], "line": entry.line, **result.to_dict(), "expected": entry.solution,
                              "matches_expected": matches}), flush=True)
        elif format == "line":
            print(result.solution if result.verified else f"# {where(k)}: {result.reason}", flush=True)
        else:
            head = (f"{where(k)}: verified in {plural(result.steps, 'pass', 'passes')} "
                    f"({result.seconds:.2f} s)" + (", another solution than the file's (the puzzle has several)"
                                                   if matches is False else "")
                    if result.verified else f"{where(k)}: no verified solution -- {result.reason}")
            print(head + "\n" + format_grid(result.solution or result.puzzle) + "\n", flush=True)

    order = InOrder([not isinstance(e, PuzzleFormatError) for e in entries], emit, emit_unreadable)
    try:
        with CtrlC() as ctrl_c:  # stops between passes, never in the middle of a printed record
            _solve_sudokus(solver, good, order, trace, ctrl_c.stop_if_asked)
    except KeyboardInterrupt:
        interrupted(f"{order.printed} of {len(entries)} puzzles printed; {order.untold()}")
    unsolved = sum(not r.verified for r in order.results.values())
    raise typer.Exit(0 if unsolved == 0 and len(good) == len(entries) else 1)


def _read_puzzle_files(files: list[str]) -> tuple[list, list[str]]:
    """Every entry of every file, in order (a puzzle, or a PuzzleFormatError in the place of one that cannot be
    used), and the file each came from. Errors and warnings are said on stderr as they are read."""
    from ..tasks.sudoku_data import PuzzleFormatError, parse_puzzles

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
            _error(f"{entry}")
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
        tracer = _sudoku_tracer(solver.canvases)
        # on_result hands the puzzle over before its last pass reaches the callback: a Ctrl-C then keeps it
        solver.solve_many([good[0].puzzle], on_result=lambda _, result: order.add(0, result),
                          callback=lambda info: (tracer(info), stop_if_asked()))
        traced = 1
    order.flush()  # unreadable entries before the first puzzle
    rest = good[traced:]
    with rich_progress("solving", show=len(rest) > 1) as bar:
        task = bar.add_task("puzzles", total=len(rest))

        def done(i: int, result) -> None:  # as soon as the puzzle's canvases have stopped
            bar.advance(task)
            order.add(traced + i, result)

        solver.solve_many([e.puzzle for e in rest], on_result=done, callback=lambda info: stop_if_asked())


PROPERTY_OPTION_HELP = "window LO:HI (a side may be left open: 2: or :3; a count may be one number V, meaning V:V)."
MOLECULE_FORMATS = ("smi", "csv", "sdf", "json")


@app.command()
def molecules(
    num: int = typer.Option(10, "--num", "-n", min=1, help="How many distinct verified molecules to return."),
    contains: str = typer.Option(None, help="SMARTS substructure every molecule must contain."),
    scaffold: str = typer.Option(None, help="SMILES scaffold to decorate (kept as a substructure)."),
    logp: str = typer.Option(None, help="Crippen logP " + PROPERTY_OPTION_HELP),
    mw: str = typer.Option(None, help="Molecular weight (Da) " + PROPERTY_OPTION_HELP),
    qed: str = typer.Option(None, help="QED drug-likeness (0-1) " + PROPERTY_OPTION_HELP),
    tpsa: str = typer.Option(None, help="Topological polar surface area " + PROPERTY_OPTION_HELP),
    hbd: str = typer.Option(None, help="Hydrogen-bond donors (RDKit's Lipinski.NumHDonors, not the rule-of-5 NH + OH "
                            "count) " + PROPERTY_OPTION_HELP),
    hba: str = typer.Option(None, help="Hydrogen-bond acceptors (RDKit's Lipinski.NumHAcceptors, not the rule-of-5 "
                            "N + O count) " + PROPERTY_OPTION_HELP),
    rings: str = typer.Option(None, help="Ring count " + PROPERTY_OPTION_HELP),
    heavy_atoms: str = typer.Option(None, help="Heavy-atom count " + PROPERTY_OPTION_HELP),
    max_ring_size: int = typer.Option(7, min=0, help="Largest ring allowed, in atoms (at least 3); the default "
                                                     "keeps to the training data (no macrocycles); 0 allows any size."),
    avoid: str = typer.Option(None, help="Structural-alert catalogs no molecule may match, comma-separated, from "
                                         "RDKit's FilterCatalog: PAINS (or PAINS_A/B/C), BRENK, NIH, ZINC, CHEMBL "
                                         "(or one ChEMBL set, e.g. CHEMBL_Glaxo), ALL; any case; e.g. --avoid "
                                         "pains,brenk."),
    budget: int = typer.Option(None, min=1, help="Most canvases to try (default 200 x num + 256)."),
    format: str = typer.Option(None, "--format", "-f", show_default=False,
                               help="smi, csv, sdf or json (one object per line); default: the --out suffix's "
                                    "(.smi, .csv, .sdf, .json/.jsonl), else smi."),
    out: Path = typer.Option(None, "--out", "-o", help="Write here instead of stdout (written whole at the end; "
                                                       "'-' is stdout)."),
    image: Path = typer.Option(None, help="Also draw the molecules as a grid with RDKit; the suffix picks the "
                                          "type (.png, .jpg, .webp, ...)."),
    model_only: bool = typer.Option(False, "--model-only", help="Stock sampler without chemistry guidance "
                                                                "(molecules are still verified)."),
    training_prior: bool = typer.Option(
        True, "--training-prior/--no-training-prior",
        help="Without windows or a fragment to pin: prompt each canvas with the property bins and the scaffold of "
             "a random MOSES training molecule and give it that molecule's length, so that the molecules follow "
             "the training distribution. --no-training-prior leaves both to the model: more verified molecules "
             "per canvas, but shorter and less varied ones."),
    match_training: bool = typer.Option(
        True, "--match-training/--no-match-training",
        help="With the training prior: keep each verified molecule with a probability that pulls the output toward "
             "the MOSES distribution (a classifier fitted to the checkpoint's own molecules; about half are kept)."),
    novel: bool = typer.Option(
        True, "--novel/--allow-known",
        help="Leave out molecules of the MOSES training set (a filter shipped with diffsolve that also drops "
             "about 1 % of novel ones). --allow-known returns them too."),
    checkpoint: str = typer.Option(None, help="Checkpoint directory or hub id (default: the shipped model)."),
    seed: int = typer.Option(None, **SEED_RANGE, help="Seed (default: random; the summary on stderr says which)."),
    device: str = DEVICE,
    threads: int = THREADS,
) -> None:
    """Design molecules that RDKit verifies against every requested condition.

    Property windows are inclusive LO:HI; either side may be left open (--mw 250: or --logp :3.5).
    The model writes C, N, O, S, F, Cl and Br, without charges, isotopes or stereo: a --contains or --scaffold
    that needs anything else is refused before any work.

    Exit status: 0 all NUM found, 1 the budget ran out first (what was found is still written) or an output
    could not be written (the molecules then go to stdout), 2 bad request."""
    from .molecules import MoleculeDesigner, default_budget

    format = _molecule_format(format, out)
    texts = {"logp": logp, "mw": mw, "qed": qed, "tpsa": tpsa, "hbd": hbd, "hba": hba, "rings": rings,
             "heavy_atoms": heavy_atoms}
    request = _molecule_request(texts, contains, scaffold, max_ring_size, avoid)
    out = None if out is not None and str(out) == "-" else out
    _check_writable(out, "--out")
    _check_image(image, "molecules")
    if out is not None and image is not None and os.path.realpath(out) == os.path.realpath(image):
        _error(f"--out and --image both name {out}: the picture would replace the molecules")
        raise typer.Exit(2)
    designer = _load(checkpoint, "molecules", device, threads,
                     lambda model: MoleculeDesigner(model, guided=not model_only, training_prior=training_prior,
                                                                   match_training=match_training, novel=novel))
    budget = budget if budget is not None else default_budget(num)
    drawn_seed = seed if seed is not None else secrets.randbelow(2**31)
    result, stopped = _run_design(designer, num, request, drawn_seed, budget)
    names = sorted(set(request.windows) | {"logp", "mw", "qed"}, key=list(texts).index)
    written = True  # every output went where it was asked to
    if result.molecules or out is None:
        written = _write_molecules(result.molecules, names, format, out)
    else:  # an empty result does not replace what the file held
        print(f"no molecule found: {out} not written", file=sys.stderr)
    if image is not None and result.molecules:
        written &= _draw_molecules(result, list(dict.fromkeys([*request.windows, "logp", "mw", "qed"]))[:3], image)
    elif image is not None:
        print(f"no molecule to draw: {image} not written", file=sys.stderr)
    summary = _design_summary(result, request, num, seed_given=seed is not None)
    if stopped:  # the molecules found are written all the same
        interrupted(summary + (f"; written to {out}" if out is not None and result.molecules and written else ""))
    print(summary, file=sys.stderr)
    raise typer.Exit(1 if result.exhausted or not written else 0)


def _run_design(designer, num: int, request, seed: int, budget: int):
    """(result, stopped): the design under a progress bar. Ctrl-C finishes the round of canvases under way and
    keeps its molecules (stopped=True); before any molecule exists it ends the command (exit 130)."""
    from ..tasks.molecules import UnlikelyRequestWarning
    from .molecules import DesignInterrupted

    result = None

    def on_round(canvases: int, count: int) -> None:
        bar.update(task, completed=count, tried=f"{canvases}/{budget} canvases")
        if count < num and canvases < budget:  # a finished design is not an interrupted one
            ctrl_c.stop_if_asked()  # a round's molecules are kept only once its canvases have settled

    try:
        with (rich_progress("designing", "{task.fields[tried]}") as bar, warnings.catch_warnings(),
              CtrlC("finishing the round of canvases under way") as ctrl_c):
            warnings.simplefilter("ignore", UnlikelyRequestWarning)  # said before, in the CLI's words
            task = bar.add_task("molecules", total=num, tried="")
            result = designer.design(num, request, seed=seed, budget=budget, on_round=on_round)
    except DesignInterrupted as stop:  # the molecules found are kept
        return stop.result, True
    except KeyboardInterrupt:  # before the search began, or once it had ended (then its result is kept)
        if result is None:
            interrupted("no molecule designed yet")
        return result, True
    return result, False


def _molecule_request(windows: dict[str, str | None], contains: str | None, scaffold: str | None,
                      max_ring_size: int, avoid: str | None):
    """The request the options make, refused with exit 2 in the options' own names; warnings for unlikely ones."""
    from ..tasks.molecules import MoleculeRequest, RequestError, parse_window

    if 0 < max_ring_size < 3:
        _error(f"--max-ring-size must be 0 (rings of any size) or at least 3 (the smallest ring), got {max_ring_size}")
        raise typer.Exit(2)
    try:
        parsed = {name: parse_window(text, name) for name, text in windows.items() if text is not None}
        request = MoleculeRequest.parse(parsed, contains=contains, scaffold=scaffold,
                                        max_ring_size=max_ring_size or None, avoid=avoid)
    except RequestError as exc:
        # The request's messages start with the Python argument ('heavy_atoms: ...'); name the option typed.
        head, colon, rest = f"{exc}".partition(": ")
        known = head in windows or head in ("contains", "scaffold", "avoid")
        _error(f"--{head.replace('_', '-')}: {rest}" if colon and known else f"{exc}")
        raise typer.Exit(2) from None
    for message in request.unlikely():
        name, rest = message.split(":", 1)
        print(f"warning: --{name.replace('_', '-')}:{rest}", file=sys.stderr)
    return request


def _design_summary(result, request, num: int, seed_given: bool) -> str:
    """One line for stderr: how many were found, from how many canvases, what was left out, and the seed."""
    canvases = plural(result.canvases, "canvas", "canvases")
    return (f"{len(result)}/{num} verified molecules"
            + (f" (no {', '.join(request.avoid)} alert)" if request.avoid else "")
            + f" from {canvases} in {result.seconds:.1f} s"
            + (f"; left out {result.known} known and {result.atypical} atypical" if result.known or result.atypical
               else "")
            + (f"; budget exhausted ({canvases})" if result.exhausted else "")
            + ("" if seed_given else f" (seed {result.seed}: --seed {result.seed} repeats this run)"))


def _molecule_format(format: str | None, out: Path | None) -> str:
    """--format, or the one --out's suffix names; a format that contradicts the suffix exits 2."""
    suffix = out.suffix.lower().lstrip(".") if out is not None and str(out) != "-" else ""
    implied = {"jsonl": "json"}.get(suffix, suffix) if suffix in (*MOLECULE_FORMATS, "jsonl") else None
    format = choice(format, "--format", MOLECULE_FORMATS) if format is not None else None
    if format is None and suffix and implied is None:
        _error(f"--out {out}: the suffix .{suffix} names no format; use .smi, .csv, .sdf or .json, or name one with "
               "--format (the file is plain text either way, never compressed)")
        raise typer.Exit(2)
    if format is not None and implied is not None and format != implied:
        _error(f"--out {out}: the suffix says {implied} but --format is {format}")
        raise typer.Exit(2)
    return format or implied or "smi"


def _write_molecules(found, names: list[str], format: str, out: Path | None) -> bool:
    """All molecules in one go; a file is written to a temporary name and renamed, so it is never partial. If
    `out` cannot be written, they go to stdout; returns whether they went where they were asked to."""
    import io

    buffer = io.StringIO()
    if format == "smi":
        buffer.writelines(f"{m.smiles}\n" for m in found)
    elif format == "json":
        buffer.writelines(json.dumps(m.to_dict(names)) + "\n" for m in found)
    elif format == "csv":
        import csv

        writer = csv.DictWriter(buffer, fieldnames=["smiles", "verified", *names], lineterminator="\n")
        writer.writeheader()
        writer.writerows(m.to_dict(names) for m in found)
    else:
        from rdkit import Chem

        writer = Chem.SDWriter(buffer)
        for m in found:
            mol = Chem.Mol(m.mol)
            mol.SetProp("_Name", m.smiles)
            for key, value in m.to_dict(names).items():
                mol.SetProp(key, str(value))
            writer.write(mol)
        writer.close()
    if out is not None and _write_atomically(out, lambda tmp: tmp.write_text(buffer.getvalue()), fatal=False):
        return True
    if out is not None:  # the work is done: the molecules go to stdout rather than nowhere
        _error(f"{'the molecule is' if len(found) == 1 else f'the {len(found)} molecules are'} printed on stdout "
               "instead")
    sys.stdout.write(buffer.getvalue())
    return out is None


def _write_atomically(path: Path, write: Callable[[Path], object], fatal: bool = True) -> bool:
    """`core.write_atomically` for output files: a failure (a full disk, a suffix the image writer does not
    know) names `path` and exits 2, or with `fatal=False` returns False."""
    try:
        write_atomically(path, write, follow_links=True)
        return True
    except (OSError, ValueError, KeyError) as exc:  # PIL: KeyError/ValueError for an unknown suffix
        return _write_failed(path, exc, fatal)


def _write_failed(path: Path, exc: Exception, fatal: bool) -> bool:
    _error(f"{path}: {getattr(exc, 'strerror', None) or exc}")
    if fatal:
        raise typer.Exit(2) from None
    return False


def _draw_molecules(result, names: list[str], path: Path) -> bool:
    """A grid of the first molecules (at most MAX_DRAWN), each labelled with the properties `names`; .svg is
    drawn as vector graphics, other suffixes by PIL. Returns whether the file was written (a failure is said on
    stderr)."""
    from .molecules import MAX_DRAWN

    svg = path.suffix.lower() == ".svg"
    grid = result.draw(names, svg=svg)
    if not _write_atomically(path, (lambda tmp: tmp.write_text(grid)) if svg else grid.save, fatal=False):
        return False
    if len(result) > MAX_DRAWN:
        print(f"{path}: drew the first {MAX_DRAWN} of {len(result)} molecules", file=sys.stderr)
    return True


def _sudoku_tracer(canvases: int):
    """Prints to stderr, so that stdout holds only the results (one JSON object per line with -f json)."""
    from ..tasks import sudoku as task

    console = Console(stderr=True)

    def show(info: StepInfo) -> None:
        row = int(info.solved.nonzero()[0, 0]) if info.solved.any() else 0  # the verified canvas once there is one
        grid = task.decode(info.argmax[row:row + 1])[0]
        settled, renoised = info.accepted[row].tolist(), info.renoised_by_constraint[row].tolist()
        console.print(f"pass {info.step}: {sum(settled)} settled, {sum(renoised)} re-noised by a constraint"
                      + (", [green]verified[/green]" if bool(info.solved[:canvases].any()) else ""))
        for r in range(9):
            cells = []
            for c in range(9):
                i = 9 * r + c
                style = "red" if renoised[i] else "green" if settled[i] else "dim"
                cells.append(f"[{style}]{grid[i]}[/{style}]" + (" |" if c in (2, 5) else ""))
            console.print(" ".join(cells))
            if r in (2, 5):
                console.print("------+-------+------")

    return show


@app.command()
def train(
    context: typer.Context,
    task: str = typer.Argument(..., help=f"Task to train: {', '.join(TASKS)}."),
    out: Path = typer.Option(..., help="Run directory: checkpoints, log, and the final model in out/model."),
    steps: int = typer.Option(3000, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(64, min=1, help="Examples per step."),
    lr: float = typer.Option(None, callback=_above_zero, show_default=False,
                             help="Peak learning rate (warmup then cosine) "
                             f"[default: {SCRATCH_LR:g}; with --init {WARM_START_LR:g}, gentle enough to keep what "
                             "the model knows]."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Seed for initialisation and data."),
    device: str = DEVICE,
    threads: int = typer.Option(2, min=1, help="CPU threads for torch."),
    time_budget: float = typer.Option(None, min=1, callback=_finite,
                                      help="Stop after this many seconds; the learning-rate schedule then follows "
                                      "the clock (default: no limit, the schedule follows --steps)."),
    data: Path = typer.Option(None, help="Sudoku/molecules: training set .npz (made in the run directory if absent)."),
    examples: int = typer.Option(None, min=1, show_default=False,
                                 help="Sudoku/molecules: size of the generated base set / MOSES subset [default: "
                                      f"{DEFAULT_EXAMPLES}]."),
    workers: int = typer.Option(None, min=1, show_default=False,
                                help="Sudoku/molecules: processes preparing the training set (Sudoku: each generates "
                                     "its share from its own seed, so the count is part of the data) [default: "
                                     f"{DEFAULT_WORKERS}]."),
    init: Path = typer.Option(None, help="Start from this model (its weights and size; fresh optimizer and "
                              "schedule) instead of a seeded initialisation; any model of the task (the same "
                              "vocabulary and canvas)."),
    deepen: int = typer.Option(1, min=1, help="With --init: train a model this many times deeper, each layer of "
                               "--init followed by copies of itself that start as the identity (so training starts "
                               "from what --init computes)."),
) -> None:
    """Train a task model with the DiffusionGemma objective (from scratch or --init weights); resumes a run.

    What each task trains on: sudoku, puzzles it generates (a cached base set under random symmetries);
    molecules, a subset of the MOSES training split (read from the molsets==0.3.1 wheel: `make moses`);
    graphs and sorting, instances drawn afresh for every batch. The shipped models' cards
    (models/TASK/README.md in the repository) give the commands that made them.

    Running the same command again continues from the run's last checkpoint (with more --steps, a longer run);
    the recipe (batch size, learning rate, seed) must stay the same. The summary JSON goes to stdout, log lines
    to stderr and out/train_log.jsonl. Exit status: 0 trained, 1 the loss diverged (inf or NaN; the last
    checkpoint is kept), 2 bad input, 130 interrupted (checkpointed)."""
    from ..core import files_digest
    from ..core.training import STATE_JSON, TrainConfig, TrainingDiverged, TrainingInterrupted
    from ..core.training import train as run_training

    _check_train_options(task, device, out, data, examples, workers, init, deepen)
    lr = (SCRATCH_LR if init is None else WARM_START_LR) if lr is None else lr
    examples = DEFAULT_EXAMPLES if examples is None else examples
    workers = DEFAULT_WORKERS if workers is None else workers
    torch.set_num_threads(threads)
    module = _task_modules()[task]
    model = _initial_model(task, module, seed, init, deepen)  # before the run directory: a refused --init
    created = not out.exists()
    lock = _lock_run_dir(out)  # before the training set is built: that can take minutes
    context.call_on_close(lock.release)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                      warmup_steps=min(200, max(steps // 10, 0 if init is None else WARM_START_WARMUP)),
                      checkpoint_every=max(1, min(500, steps // 4)),
                      bf16=device.startswith("cuda"), time_budget_s=time_budget,
                      ar_weight=getattr(module, "AR_WEIGHT", 1.0), compile=_OPTIONS["compile"],
                      init=None if init is None else str(init.resolve() if init.exists() else init)  # or a hub id
                      + f", {deepen}x deeper" * (deepen > 1),
                      data=None if data is None else files_digest([data]))
    previous = _previous_checkpoint(out, task, model, cfg)  # checked before the training set is built
    make_batch = _training_batches(task, module, out, seed, batch_size, device, data, examples, workers,
                                   lock if created else None)
    # read now (the file was just read whole): the file may be gone or replaced when the card is written
    data_card = None if data is None else _data_file_card(data, cfg.data, getattr(module, "DATA_CARD", ""))
    if previous is not None:
        step = json.loads((previous / STATE_JSON).read_text())["step"]
        print(f"{out}: resuming from the checkpoint at step {step} of {steps}", file=sys.stderr, flush=True)
    try:
        summary = run_training(model, make_batch, cfg, out, progress=sys.stderr.isatty())
    except TrainingInterrupted as stop:
        interrupted(f"{stop}; the same command resumes the run")
    except TrainingDiverged as exc:
        _error(f"{out}: {exc}")
        raise typer.Exit(1) from None
    if previous is not None and summary["steps"] <= summary["resumed_from"]:  # no step ran
        print(f"{out}: the run already ended at step {summary['resumed_from']} (more --steps or a longer "
              f"--time-budget goes on); evaluating and writing {out / 'model'} again", file=sys.stderr, flush=True)
    metrics = _evaluate_trained(model, module, out, summary["steps"])
    final = out / "model"
    command = _train_command(task, out, steps, batch_size, lr, seed, device, time_budget, examples, workers,
                             threads, data, init, deepen, cfg.compile)
    try:
        _save_trained_model(final, task, model, lambda: _write_model_card(
            final, task, module, command, cfg, summary, metrics, model, init, deepen, data_card))
    except KeyboardInterrupt:
        interrupted(f"training finished and is checkpointed in {out / 'checkpoint'}, but {out / 'model'} was not "
                    "completely written: the same command evaluates the model and writes it")
    if task == "molecules":  # the acceptance is fitted to a model's own molecules: a new model has none yet
        print(f"note: {final} has no acceptance.safetensors, so free generation from it runs without the "
              "training-likeness acceptance; to fit one (about 17 minutes on 2 cores): python -c \"from "
              f"diffsolve.solvers.molecules import fit_acceptance; fit_acceptance('{final}')\"", file=sys.stderr)
    console.print_json(json.dumps({**summary, **metrics}))


def _initial_model(task: str, module, seed: int, init: Path | None, deepen: int) -> DiffusionGemma:
    """A seeded new model of the task, or --init's (grown --deepen times), with what it will ship with."""
    from ..core import new_model, released_config
    from ..core.training import deepen as deepen_model

    model = new_model(module.model_config(), seed=seed) if init is None else \
        deepen_model(_warm_start(init, task, module), deepen)
    model.tokenizer = module.TOKENIZER
    model.generation_config = released_config(model, **getattr(module, "SAMPLER", {}))
    return model


def _evaluate_trained(model: DiffusionGemma, module, out: Path, steps: int) -> dict[str, float]:
    """The task's metrics of the trained model on inputs training never used (for its model card)."""
    print(f"{steps} steps done; evaluating the model on inputs training never used (for its model card)",
          file=sys.stderr, flush=True)
    try:
        with working("evaluating"):
            return module.evaluate(model)
    except KeyboardInterrupt:
        interrupted(f"training finished and is checkpointed in {out / 'checkpoint'}, but {out / 'model'} was not "
                    "written: the same command evaluates the model and writes it")


def _training_batches(task: str, module, out: Path, seed: int, batch_size: int, device: str, data: Path | None,
                      examples: int, workers: int, made_lock=None):
    """The task's batch maker, its training set built or read first (exit 2 when that fails; with `made_lock`,
    the lock of a run folder this command made, that folder goes too if still empty: nothing half-made is left)."""
    try:
        return module.batches(out, seed, batch_size, device, data=data, examples=examples, workers=workers)
    except (OSError, ValueError, KeyError, KeyboardInterrupt) as exc:
        if made_lock is not None:
            made_lock.release()
            with contextlib.suppress(OSError):
                (out / ".train.lock").unlink()
                out.rmdir()
        if isinstance(exc, KeyboardInterrupt):
            interrupted("stopped while building the training set; nothing was trained or cached")
        if isinstance(exc, FileNotFoundError):  # e.g. the MOSES data wheel is not installed
            _error(f"{exc}")
        else:  # numpy: not an .npz, missing or malformed arrays
            _error(f"--data {data}: not a {task} training set ({exc})" if data is not None
                   else f"--out {out}: cannot build or read the training set there ({exc})")
        raise typer.Exit(2) from None


def _save_trained_model(final: Path, task: str, model: DiffusionGemma, write_card: Callable[[], None]) -> None:
    """The weights, then their card. The card and the acceptance describe the weights they sit beside: they go
    before the new weights come, so a stop in between leaves weights without a card, never a card (or an
    acceptance) of other weights."""
    stale = ["README.md"]
    if task == "molecules":
        from ..tasks.molecule_acceptance import FILE as ACCEPTANCE_FILE

        stale.append(ACCEPTANCE_FILE)
    for name in stale:
        (final / name).unlink(missing_ok=True)
    model.save_pretrained(final)
    write_card()


def _check_train_options(task: str, device: str, out: Path, data: Path | None, examples: int | None,
                         workers: int | None, init: Path | None, deepen: int) -> None:
    """Refuse options that cannot go together before anything is loaded or made (exit 2)."""
    if task not in TASKS:
        _error(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        raise typer.Exit(2)
    _check_device(device)
    if out.exists() and not out.is_dir():
        _error(f"--out {out}: not a folder (the run directory holds checkpoints, the log and the model)")
        raise typer.Exit(2)
    if (out / "config.json").exists():  # a run's checkpoint/ or model/, or a shipped model: a run would nest in it
        _error(f"--out {out}: holds a model (config.json); the run directory is the folder above a run's "
               "checkpoint/ and model/ (the same --out resumes a run), or a new folder")
        raise typer.Exit(2)
    if task not in PREPARED_SETS:
        given = [name for name, value in (("--data", data), ("--examples", examples), ("--workers", workers))
                 if value is not None]
        if given:
            _error(f"{', '.join(given)}: only sudoku and molecules train on a prepared set; {task} draws fresh "
                   "instances for every batch")
            raise typer.Exit(2)
    if data is not None and not data.is_file():
        _error(f"--data {data}: no such file (leave --data out to build the training set in the run directory)")
        raise typer.Exit(2)
    if deepen > 1 and init is None:
        _error("--deepen grows the model given by --init; name one")
        raise typer.Exit(2)


def _lock_run_dir(out: Path):
    """The run directory made and locked: one process per run directory, until the model is written."""
    from ..core.training import ResumeError, RunLock

    try:
        out.mkdir(parents=True, exist_ok=True)
        return RunLock(out).acquire()
    except OSError as exc:
        _error(_naming("--out", out, exc))
        raise typer.Exit(2) from None
    except ResumeError as exc:
        _error(f"--out {out}: {exc}")
        raise typer.Exit(2) from None


def _previous_checkpoint(out: Path, task: str, model: DiffusionGemma, cfg) -> Path | None:
    """The run's last checkpoint, when it can be resumed with this model and recipe (else exit 2)."""
    from ..core.training import ResumeError, check_resumable, find_checkpoint

    previous = find_checkpoint(out / "checkpoint")
    if previous is None:
        return None
    if (other := _run_task(previous)) not in (None, task):  # None: check_resumable says
        _error(f"--out {out}: {previous} continues a run of the {other} task, not {task}; train {task} into a new "
               "directory")
        raise typer.Exit(2)
    try:
        check_resumable(previous, model, cfg)
    except ResumeError as exc:
        hint = " (a run begun with --init/--deepen resumes with the same ones)" if "another model" in str(exc) else ""
        _error(f"--out {out}: {exc}{hint}")
        raise typer.Exit(2) from None
    return previous


def _train_command(task: str, out: Path, steps: int, batch_size: int, lr: float, seed: int, device: str,
                   time_budget: float | None, examples: int, workers: int, threads: int, data: Path | None,
                   init: Path | None, deepen: int, compiled: bool) -> str:
    """The command that reproduces a run, for its model card."""
    return (("solve --compile" if compiled else "solve")
            + f" train {task} --out {out} --steps {steps} --batch-size {batch_size} --lr {lr} --seed {seed}"
            + f" --device {device}" + (f" --time-budget {time_budget:g}" if time_budget else "")
            + (f" --examples {examples}" if task in PREPARED_SETS and data is None else "")
            + (f" --workers {workers}" if task == "sudoku" and data is None else "")
            + (f" --threads {threads}" if device == "cpu" else "")
            + (f" --data {data}" if data else "") + (f" --init {init}" if init else "")
            + (f" --deepen {deepen}" if deepen > 1 else ""))


def _task_modules() -> dict:
    from ..tasks import graph_data, molecules, sorting, sudoku

    return {"sorting": sorting, "sudoku": sudoku, "molecules": molecules, "graphs": graph_data}


def _run_task(checkpoint: Path) -> str | None:
    """The task whose vocabulary a training checkpoint has (None when it is no task's, or it has no tokenizer)."""
    from tokenizers import Tokenizer

    try:
        vocab = Tokenizer.from_file(str(checkpoint / "tokenizer.json")).get_vocab()
    except Exception:  # no tokenizer.json, or not one tokenizers reads
        return None
    return next((name for name, module in _task_modules().items() if module.TOKENIZER.get_vocab() == vocab), None)


def _warm_start(init: Path, task: str, module) -> DiffusionGemma:
    """The model at `init`, refused (exit 2) unless it is a model of this task (its vocabulary and canvas); its
    depth and width may differ from the task's default."""
    try:
        source = load_model(init, dtype=torch.float32)  # trained in float32 whatever the source holds
        check_task_model(source, task, module.TOKENIZER, module.model_config().canvas_length, exact=True)
    except (CheckpointError, OSError) as exc:
        _error(_naming("--init", init, exc))
        raise typer.Exit(2) from None
    return source


def _data_file_card(data: Path, digest: str, generated: str) -> str:
    """The card's Data section for a run on a `--data` file: this command did not build that set, so the card
    can vouch only for what the file records of how it was made."""
    from ..core.training import made_with_record

    record = made_with_record(data)
    head = f"Read from the file given as `--data` (`{data.name}`, {digest}), which this command did not build. "
    if record is None:
        return head + ("It carries no record of how it was made, so where its examples come from is unknown; the "
                       "task's own generator is not vouched for here.")
    made = ", ".join(f"{k} {v}" for k, v in sorted(record.items()))
    return head + (f"Its record says diffsolve generated it ({made}) as follows, with the record's values for the "
                   f"options named (not this command's); the file itself is not checked against that. {generated}")


def _steps_run(cfg, summary: dict) -> str:
    """The card's step count: the steps asked for, or those a time budget allowed and where its schedule was."""
    from ..core.training import lr_at

    if summary["steps"] >= cfg.steps and cfg.steps < cfg.warmup_steps:  # a short run from --init
        return f"{cfg.steps} steps, all inside the warmup (the last at lr {lr_at(cfg.steps - 1, cfg):.3g})"
    if summary["steps"] >= cfg.steps or not cfg.time_budget_s:
        return f"{cfg.steps} steps"
    last = summary["steps"] - 1
    ended = f"{summary['steps']} of {cfg.steps} steps (the {cfg.time_budget_s:g} s budget ended the run"
    if last < cfg.warmup_steps - 1:
        return ended + f" inside the warmup, at lr {lr_at(last, cfg):.3g}: the peak was never reached)"
    return ended + "; the cosine followed the clock)"


def _write_model_card(path: Path, task: str, module, command: str, cfg, summary: dict, metrics: dict,
                      model, init: Path | None = None, deepen: int = 1, data_card: str | None = None) -> None:
    """`data_card`: the Data section of a run on a `--data` file (`_data_file_card`); else the task's own."""
    params = sum(p.numel() for p in model.parameters())
    data_card = data_card or getattr(module, "DATA_CARD", f"Generated on the fly by the task module "
                                     f"(`{module.__name__}`); each step's batch is drawn from a seeded generator. "
                                     "No external data.")
    hardware = torch.cuda.get_device_name() if cfg.device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU, {plural(torch.get_num_threads(), 'thread')}"
    lines = [
        f"# diffsolve {task} model", "",
        f"A {params / 1e6:.2f}M-parameter DiffusionGemma-architecture model (MoE, "
        f"{model.config.num_experts} experts top-{model.config.top_k_experts}) trained by diffsolve "
        + ("from scratch." if init is None else f"from the model at `{init}`"
           + (f", grown {deepen}x deeper (`--deepen`)." if deepen > 1 else ".")),
        "", "## Data", "", data_card, "",
        "## Recipe", "",
        "DiffusionGemma objective: t ~ U(1e-3, 1) per example, canvas tokens replaced by uniform-random tokens "
        "with probability t, cross-entropy over the canvas"
        + (f" + {cfg.ar_weight} x encoder next-token loss" if cfg.ar_weight else " (no encoder next-token loss)")
        + ", self-conditioning "
        f"two-pass with p = {cfg.self_conditioning_prob}. AdamW (betas 0.9/0.95, wd {cfg.weight_decay}), "
        f"lr {cfg.lr} with {cfg.warmup_steps} warmup steps and cosine decay, grad clip {cfg.grad_clip}, "
        f"batch {cfg.batch_size}, {_steps_run(cfg, summary)}, seed {cfg.seed}.", "",
        "## Command", "", "```", command, "```", "",
        "## Hardware and time", "", f"{hardware}; {summary['seconds']:.0f} s of training "
        f"(torch {torch.__version__}).", "",
        "## Metrics", "", "Measured after training on inputs drawn from a seed range training never used:", "",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in {**metrics, "final_loss": summary.get("loss", float("nan")),
                                             "final_noised_acc": summary.get("noised_acc", float("nan"))}.items()],
        "",
    ]
    write_atomically(path / "README.md", lambda tmp: tmp.write_text("\n".join(lines)))


from . import graph_cli  # noqa: E402,F401  (registers coloring, hamiltonian, path, countdown)


class _EndWhenReaderGoes:
    """An output stream that ends the command when its reader has gone (`solve ... | head`, also with `2>&1`), as
    `cat` ends: quietly, with the shell's SIGPIPE status 141, not the 1 of an unsolved instance. Unlike restoring
    SIGPIPE's default action (which Python's documentation warns against: a closed socket would kill the process
    too), cleanup still runs."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._end()

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._end()

    def _end(self) -> NoReturn:
        os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())  # Python's last flush must not fail
        raise SystemExit(128 + 13)  # 128 + SIGPIPE


def main() -> None:
    """The `solve` command."""
    if sys.stdout is not None and sys.stderr is not None:  # None: started with the stream closed (`>&-`)
        sys.stdout, sys.stderr = _EndWhenReaderGoes(sys.stdout), _EndWhenReaderGoes(sys.stderr)
    try:
        app()
    except FloatingPointError as exc:  # damaged weights: a line, not a traceback through the sampler
        _error(f"{exc}")
        raise SystemExit(1) from None
    finally:  # what is still buffered goes now, not at shutdown, where a gone reader could not end it with 141
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
