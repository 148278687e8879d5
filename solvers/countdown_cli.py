"""The `countdown` command of `solve` (registered on `cli_common.app`): instances inline or from JSONL, solved on
the graphs checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ..core import CtrlC
from ..core.arguments import MAX_CANVASES
from ..tasks.text import bad_byte, split_lines
from .cli_common import (DEVICE, STEPS_RANGE, THREADS, UNFINISHED, InOrder, app, choice, error, input_name,
                         interrupted, read_input, rich_progress, usage_error)
from .countdown import CountdownResult, CountdownSolver
from .graph_cli import CHECKPOINT, FORMATS, MODEL_ONLY, SEED, load_solver


@app.command()
def countdown(
    instance: list[str] = typer.Argument(..., metavar="NUMBERS|FILE",
                                         help="Numbers (86 28 13 31 with --target, quoted or not), or a .jsonl file "
                                         "in the public format: one object a line, \"input\": \"n1,n2,...,target\" "
                                         "(or \"input\" the numbers and \"target\" the target; '-' reads it from "
                                         "stdin)."),
    target: int = typer.Option(None, min=1, help="The number to reach (for numbers given inline)."),
    format: str = typer.Option("text", "--format", "-f", help="text, or json (one object per instance per line, "
                                                              "in input order; impossible: proved unsolvable)."),
    steps_format: bool = typer.Option(False, "--steps", help="Text output as steps 'a+b=c,...' instead of an "
                                                             "infix expression."),
    canvases: int = typer.Option(None, min=1, max=MAX_CANVASES, show_default=False,
                                 help="Parallel canvases per instance; they share the dead ends they find, and the "
                                 f"first verified one wins. [default: {CountdownSolver.DEFAULT_CANVASES}; "
                                 "--model-only: 1]"),
    max_steps: int = typer.Option(256, **STEPS_RANGE, help="Denoising passes before giving up on an instance."),
    model_only: bool = MODEL_ONLY,
    checkpoint: str = CHECKPOINT,
    seed: int = SEED,
    device: str = DEVICE,
    threads: int = THREADS,
) -> None:
    """Reach the target from the numbers with + - * /, every number exactly once (unlike the TV game, which may
    leave some out), every step a whole number >= 0 (checked by sympy).

    2 to 6 numbers, each and the target a whole number from 1 to 999 (the model's prompt). Without --target,
    inline numbers are read in the public format: the last one is the target.
    Exit status: 0 all verified, 1 some not, 2 bad input."""
    from ..tasks.countdown import CountdownError, parse_instance

    format = choice(format, "--format", FORMATS)
    if steps_format and format == "json":
        usage_error("--steps shapes the text output; JSON records carry both 'steps' and 'expression'")
    if len(instance) > 1 and any(Path(part).is_file() or part == "-" for part in instance):
        usage_error(f"{' '.join(instance)}: one FILE at a time (or numbers inline: '4 7 8 8 --target 24')")
    entries = _countdown_instances(" ".join(instance), target, CountdownError, parse_instance)
    good = [parsed for _, parsed in entries if not isinstance(parsed, str)]

    def show(line: int | None, record: dict, text: str) -> None:
        if format == "json":
            print(json.dumps({"line": line, **record} if line is not None else record), flush=True)
        else:
            print(text if line is None else f"line {line}: {text}", flush=True)

    def emit_unreadable(k: int) -> None:  # text: stderr named it already, as for Sudoku
        if format == "json":
            show(entries[k][0], {"numbers": None, "target": None, "steps": None, "expression": None,
                                 "verified": False, "reason": f"unreadable: {entries[k][1]}", "forward_passes": 0,
                                 "seconds": 0.0, "impossible": False}, "")

    if not good:  # JSON keeps a record per line even then, as for Sudoku
        for k in range(len(entries)):
            emit_unreadable(k)
        usage_error(f"{input_name(' '.join(instance))}: no usable instance")
    solver = load_solver(CountdownSolver, checkpoint, device, threads, model_only, canvases, max_steps, seed)

    def emit(k: int, r) -> None:
        answer = (r.steps if steps_format else f"{r.expression} = {r.target}") if r.verified else \
            f"no verified answer: {r.reason}"
        show(entries[k][0], r.to_dict(), f"{','.join(map(str, r.numbers))} -> {r.target}: {answer}")

    order = InOrder([not isinstance(parsed, str) for _, parsed in entries], emit, emit_unreadable)
    order.flush()  # unreadable lines before the first instance
    try:
        with rich_progress("countdown", show=len(good) > 1) as bar, CtrlC() as ctrl_c:  # stops between records
            task = bar.add_task("instances", total=len(good))

            def done(i: int, result) -> None:  # as soon as the instance's canvases have stopped
                bar.advance(task)
                order.add(i, result)

            solver.solve_many(good, on_result=done, callback=lambda info: ctrl_c.stop_if_asked())
    except KeyboardInterrupt:
        interrupted(order.interrupt(lambda k: emit(k, CountdownResult(
            list(entries[k][1][0]), entries[k][1][1], None, None, False, UNFINISHED)), "instance"))
    raise typer.Exit(0 if len(good) == len(entries) and all(r.verified for r in order.results.values()) else 1)


def _countdown_instances(instance: str, target, error_type, parse) -> list[tuple[int | None, tuple | str]]:
    """(line, (numbers, target)) per instance, or (line, what is wrong) for a line that cannot be read (reported
    on stderr at once; the others are still solved). Inline numbers have line None; '-' reads JSONL from stdin."""
    if not instance.strip():
        usage_error("no numbers given (e.g. solve countdown '4 7 8 8' --target 24, or a .jsonl file)")
    file = Path(instance)
    stdin = instance == "-"
    named_file = stdin or file.exists() or file.suffix in (".jsonl", ".json", ".txt") or "/" in instance \
        or "\\" in instance
    inline_only = (f"--target applies to numbers given inline; in {input_name(instance)} each line carries its own "
                   "target")
    stream = stdin or (file.exists() and not file.is_file() and not file.is_dir())  # a pipe such as /dev/stdin
    if stream and target is not None:  # at once: reading it first would wait for its end
        usage_error(inline_only)
    if named_file and not stdin and not file.exists():
        usage_error(f"{file}: no such file (numbers inline look like '4 7 8 8 --target 24')")
    if not named_file:
        try:
            numbers, goal = parse(instance, target)
            if target is None:
                print(f"no --target: reading the last number, {goal}, as the target", file=sys.stderr)
            return [(None, (numbers, goal))]
        except error_type as exc:
            usage_error(f"{exc}")
    name, text = read_input(instance)  # first: a file that cannot be read is the problem to name
    if target is not None:
        usage_error(inline_only)
    lines = split_lines(text)
    entries: list[tuple[int | None, tuple | str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        problem = bad_byte(line)
        try:
            if problem is None:
                record = json.loads(line)
                given = record["input"]  # "3,4,12"; a list of numbers is read alike
                text = ",".join(map(str, given)) if isinstance(given, list) else str(given)
                entries.append((number, parse(text, record.get("target"))))
                continue
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: [[[[...
            problem = f"expected a JSON object with an \"input\" field ({exc.__class__.__name__})"
        except error_type as exc:
            problem = f"{exc}"
        except ValueError as exc:  # json's own: a number literal of over 4,300 digits
            problem = f"cannot be read ({exc})"
        error(f"{name}:{number}: {problem}")
        entries.append((number, problem))
    if not entries:
        usage_error(f"{name}: no instances")
    return entries
