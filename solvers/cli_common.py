"""What the `solve` commands share: the typer app and its global options, reading inputs and writing outputs,
progress displays, and the checks made before a model is loaded."""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch
import typer
from rich.console import Console

from ..core import (CheckpointError, CheckpointHeader, check_device, load_model, read_header, resolve_checkpoint,
                    write_atomically)
from ..core.arguments import MAX_STEPS
from ..core.checkpoint import DTYPE_NAMES
from ..core.ctrl_c import SIGNALS, watched
from ..tasks.text import plural, read_text
from .base import UNFINISHED  # noqa: F401 (the CLIs' too)
from .checkpoints import default_checkpoint

if TYPE_CHECKING:
    from rich.progress import Progress


app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="diffsolve: constraint-guided diffusion solvers that return only verified answers.\n\n"
                       "Besides each command's own exit statuses: 130 after Ctrl-C, SIGTERM or SIGHUP (what was "
                       "done is kept), 141 when a reader of the output stops early (`| head`), 74 when stdout "
                       "cannot be written (a full disk).")
console = Console()


def error(message: str) -> None:
    """Errors go to stderr unwrapped, so that `file:line: message` stays on one line for tools."""
    print(f"error: {message}", file=sys.stderr)


def usage_error(message: str) -> NoReturn:
    """A command line or an input the command cannot use: say why (`error`) and exit 2, before any work."""
    error(message)
    raise typer.Exit(2)


def choice(value: str, option: str, choices: tuple[str, ...]) -> str:
    """`value` in lower case (JSON or json alike) when it is one of `choices`; anything else exits 2. jsonl
    names json, which is one object per line already."""
    name = "json" if value.lower() == "jsonl" and "json" in choices else value.lower()
    if name not in choices:
        usage_error(f"{option} must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}")
    return name


INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)
CANNOT_WRITE = 74  # sysexits.h EX_IOERR: an output (or a training checkpoint) could not be written


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
        usage_error(f"{input_name(file)}: {unreadable(exc)}")


def unreadable(exc: OSError) -> str:
    """Why a file could not be read, without the path the message would repeat."""
    return exc.strerror or str(exc)


def check_writable(path: Path | None, option: str) -> None:
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
        usage_error(f"{option} {path}: {problem}")


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


def check_image(path: Path | None, kind: str, reads: Path | None = None) -> None:
    """--image: a writable path of a type the drawing can be saved as, and not the input file `reads` (which the
    picture would replace), checked before any work."""
    same = path is not None and reads is not None and str(reads) != "-"
    if same and os.path.realpath(path) == os.path.realpath(reads):
        usage_error(f"--image {path} is the input file: the picture would replace the graph")
    check_writable(path, "--image")
    if path is not None and path.suffix.lower() not in IMAGE_TYPES[kind]:
        usage_error(f"--image {path}: cannot write {path.suffix or 'a file without a suffix'}; "
                    f"use {', '.join(IMAGE_TYPES[kind])}")


def finite(value: float | None) -> float | None:
    """A float option's callback: typer's min/max let NaN through (every comparison with it is false)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def above_zero(value: float | None) -> float | None:
    """`finite`, and above 0 (a learning rate of 0 trains nothing; typer's min is inclusive)."""
    if finite(value) is not None and value <= 0:
        raise typer.BadParameter(f"{value:g} is not above 0")
    return value


OPTIONS = {"compile": False, "dtype": "auto"}
DTYPES = {"auto": "auto", **DTYPE_NAMES}  # the names load_model takes
SEED_RANGE = dict(min=0, max=2**63 - 1)  # what torch generators take
STEPS_RANGE = dict(min=1, max=MAX_STEPS)  # what the sampler's int32 pass count takes
# Options every solving command shares (typer reads them as defaults).
DEVICE = typer.Option("cpu", help="cpu or cuda.")
THREADS = typer.Option(None, min=1, max=1024, show_default=False, help="CPU threads for torch [default: torch's "
                       "choice, about one per core]. On a machine busy with other work, 1 can be many times faster.")


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
            help="auto, float32, bfloat16, float16 or float64: the dtype solving commands run the model in. auto is "
            "the one the checkpoint's config.json names (float32 for the shipped models, bfloat16 for the released "
            "26B model, which needs about 50 GB in it and twice that in float32). solve train always trains in "
            "float32."),
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Print the version and exit.")) -> None:
    """Options for every command (they go before the command's name)."""
    OPTIONS["compile"] = compile
    if dtype.lower() not in DTYPES:
        usage_error(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    OPTIONS["dtype"] = DTYPES[dtype.lower()]
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, timeout, a batch scheduler's time limit) and SIGHUP (the terminal closed; not under
        # nohup) stop as Ctrl-C does: what was done is kept (Typer turns a KeyboardInterrupt no command handles
        # into exit 130)
        for sig in SIGNALS[1:]:
            if watched(sig):
                signal.signal(sig, signal.default_int_handler)


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

    def interrupt(self, emit_unfinished: Callable[[int], None], noun: str) -> str:
        """After an interrupt: every record not printed yet, in order, the unfinished ones by `emit_unfinished(k)`
        in their place (so results that came before an unfinished earlier entry are not lost), and what that was
        ('3 of 10 puzzles done; 7 unfinished, printed as interrupted')."""
        unfinished, unreadable = len(self.instance_of) - len(self.results), self.readable.count(False)
        self.flush(emit_unfinished)
        return (f"{len(self.results):,} of {plural(len(self.readable), noun)} done; {unfinished:,} unfinished"
                + ", printed as interrupted" * bool(unfinished) + f"; {unreadable:,} unreadable" * bool(unreadable))

    def add(self, instance: int, result: object) -> None:
        self.results[instance] = result
        self.flush()

    def flush(self, emit_unfinished: Callable[[int], None] | None = None) -> None:
        """Print what can be printed in order: up to the first unfinished entry, or with `emit_unfinished` all."""
        while self.printed < len(self.readable):
            k = self.printed
            if not self.readable[k]:
                self.emit_unreadable(k)
            elif self.instance_of[k] in self.results:
                self.emit(k, self.results[self.instance_of[k]])
            elif emit_unfinished is not None:
                emit_unfinished(k)
            else:
                return
            self.printed += 1


def check_search(model_only: bool, backtrack: bool, tabu: bool = False) -> None:
    chosen = [name for name, on in (("--model-only", model_only), ("--backtrack", backtrack), ("--tabu", tabu)) if on]
    if len(chosen) > 1:
        usage_error(f"{', '.join(chosen[:-1])} and {chosen[-1]} exclude each other")


def check_canvases(canvases: int | None, model_only: bool) -> None:
    """--model-only samples one canvas (as `arguments.canvases` has it), checked before a model is loaded."""
    if model_only and canvases not in (None, 1):
        usage_error(f"--canvases {canvases}: --model-only samples one canvas (--canvases is for the guided search)")


def check_device_option(device: str) -> None:
    """Refuse a device torch cannot use here before anything is loaded."""
    try:
        check_device(device)
    except ValueError as exc:
        usage_error(f"--{exc}")


def refuse_closed_stdout() -> None:
    """Exit 2 before any work when stdout was closed at start (`>&-`) and results would go there."""
    if getattr(sys.stdout, "closed_at_start", False):
        usage_error("stdout is closed: the results would be lost (redirect it to a file or /dev/null)")


def load_task_model(checkpoint: str | None, task: str, device: str, threads: int | None,
                    build: Callable = lambda model: model, results_on_stdout: bool = True,
                    check_header: Callable[[CheckpointHeader], None] | None = None):
    """The task's model (compiled with --compile) wrapped by `build` (a solver, which refuses a checkpoint made
    for another task), run on `threads` CPU threads when given; unusable devices and checkpoints exit 2 with one
    line, and so does a stdout closed at start (`>&-`) when the results go there, before any work.
    `check_header` refuses a checkpoint of another task from its config and tokenizer, before its weights."""
    if results_on_stdout:
        refuse_closed_stdout()
    check_device_option(device)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if check_header is not None and checkpoint is not None:
            check_header(read_header(checkpoint))
        model = load_model(default_checkpoint(task) if checkpoint is None else checkpoint, dtype=OPTIONS["dtype"],
                           device=device)
        if OPTIONS["compile"]:
            model.compile_denoiser()
        return build(model)
    except CheckpointError as exc:
        usage_error(f"{exc}" if checkpoint is None else naming("--checkpoint", checkpoint, exc))


def check_checkpoint_found(checkpoint: str | None) -> None:
    """--checkpoint names a folder, or a hub id in the cache (or on the Hub), before any input is read; exit 2."""
    if checkpoint is None:
        return
    try:
        resolve_checkpoint(checkpoint)
    except CheckpointError as exc:
        usage_error(naming("--checkpoint", checkpoint, exc))


def naming(option: str, value: str | Path, exc: Exception) -> str:
    """`OPTION VALUE: what is wrong`, without the message's own copy of the path when it starts with one."""
    head, colon, rest = f"{exc}".partition(": ")
    same = colon and (head == str(value) or Path(head).resolve() == Path(value).resolve())
    return f"{option} {value}: {rest if same else exc}"


def write_output(path: Path, write: Callable[[Path], object], fatal: bool = True) -> bool:
    """`core.write_atomically` for output files: a failure (a full disk, a suffix the image writer does not
    know) names `path` and exits 2, or with `fatal=False` returns False."""
    try:
        write_atomically(path, write, follow_links=True)
        return True
    except (OSError, ValueError, KeyError) as exc:  # PIL: KeyError/ValueError for an unknown suffix
        return _write_failed(path, exc, fatal)


def _write_failed(path: Path, exc: Exception, fatal: bool) -> bool:
    error(f"{path}: {getattr(exc, 'strerror', None) or exc}")
    if fatal:
        raise typer.Exit(2) from None
    return False
