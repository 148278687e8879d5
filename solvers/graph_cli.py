"""The graph commands of `solve`: coloring, hamiltonian and path (registered on `cli_common.app`), and the options
and solver loading they share with `countdown` (countdown_cli.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import typer

from ..core.arguments import MAX_CANVASES
from ..tasks.text import plural
from .base import DiffusionSolver
from .cli_common import (DEVICE, SEED_RANGE, STEPS_RANGE, THREADS, app, check_canvases, check_image, check_search,
                         choice, input_name, interrupted, load_task_model, rich_progress, usage_error, working,
                         write_output)
from .countdown import CountdownSolver
from .graphs import GraphSolver, check_hamiltonian_input, json_label, path_search_graph

FORMATS = ("text", "json")
# Options every graph command shares (typer reads them as defaults).
CANVASES = typer.Option(None, min=1, max=MAX_CANVASES, show_default=False,
                        help="Parallel canvases per instance; the first verified one wins. [default: "
                        f"{DiffusionSolver.DEFAULT_CANVASES}; --model-only: 1]")
MODEL_ONLY = typer.Option(False, "--model-only", help="Stock sampler on one canvas, no constraint guidance "
                                                      "(answers are still verified).")
CHECKPOINT = typer.Option(None, help="Checkpoint directory or hub id (default: the shipped graphs model).")
SEED = typer.Option(0, **SEED_RANGE, help="Sampler seed.")
IMAGE_HELP = " (the suffix picks the type: .png, .svg, .pdf, ...)."


def _graph(file: Path, command: str, weights_used: bool = False):
    """The graph in `file` (exit 2 if it cannot be read); edge weights that `command` ignores are warned about (a
    third column may also be an adjacency list's third node misread as a weight)."""
    from ..tasks.graph_files import read_graph
    from ..tasks.graphs import GraphError

    try:
        graph = read_graph(file, nonnegative_weights=weights_used)
    except GraphError as exc:
        usage_error(f"{exc}")
    if not weights_used and _weighted(graph):
        print(f"{input_name(file)}: warning: {command} ignores edge weights (the third column of 'U V WEIGHT'"
              f"{'' if command != 'path' else '; --shortest uses them'})", file=sys.stderr)
    return graph


def _weighted(graph) -> bool:
    return any("weight" in data for _, _, data in graph.edges(data=True))


def _node(graph, text: str | None, option: str, file: Path):
    """A node given on the command line, as the graph's own label (integers stay integers)."""
    if text is None:
        return None
    for label in graph.nodes:
        if str(label) == text:
            return label
    usage_error(f"{option} {text}: no such node in {input_name(file)}")


def load_solver(cls: type[GraphSolver | CountdownSolver], checkpoint, device, threads, model_only, canvases,
                max_steps, seed) -> GraphSolver | CountdownSolver:
    """A solver of class `cls` on the graphs checkpoint (Countdown shares it), as the command's options say."""
    check_canvases(canvases, model_only)
    return load_task_model(checkpoint, "graphs", device, threads, lambda model: cls(
        model, guided=not model_only, canvases=canvases, max_steps=max_steps, seed=seed),
        check_header=cls.check_checkpoint)


def _emit(result, format: str, text: str, asked: dict) -> None:
    """The answer as `text`, or as one JSON object that also says what was `asked` (the file, the nodes named)."""
    if format == "json":
        print(json.dumps({**asked, **result.to_dict()}), flush=True)
    else:
        print(text, flush=True)


def _json_nodes(**nodes) -> dict:
    """Nodes named on the command line as a JSON record writes the answer's nodes (None: not named)."""
    return {key: None if node is None else json_label(node) for key, node in nodes.items()}


def _label(node) -> str:
    """A node as text output writes it: quoted as the input's CSV-style fields are ('"New York"') when it holds
    a space, a quote or a comma or is empty, so that text output can be read back field by field."""
    text = str(node)
    if text and not any(c.isspace() or c in '",' for c in text):
        return text
    return '"' + text.replace('"', '""') + '"'


def _draw(result, graph, path: Path) -> bool:
    """The verified `result` drawn on `graph` (written whole, then renamed); whether it was written (a failure is
    said on stderr)."""
    figure = result.draw(graph)
    return write_output(path, lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight"), fatal=False)


def _fits(file: Path, check: Callable[[], object]) -> None:
    """`check()` the input against the model's limits before a model is loaded; a GraphError is exit 2."""
    from ..tasks.graphs import GraphError

    try:
        check()
    except GraphError as exc:
        usage_error(f"{input_name(file)}: {exc}")


def _search(file: Path, label: str, max_steps: int, run: Callable, tabu: bool = False,
            kept: Callable[[], str | None] = lambda: None):
    """`run(callback)` under a progress bar of passes, or (`tabu`) `run(callback, moves_callback)` with a second
    bar of tabu moves; a GraphError (the input does not fit) is exit 2. On Ctrl-C, `kept()` prints the answer
    verified so far, if any, and says what it is (exit 130 all the same)."""
    from ..tasks.graphs import GraphError

    try:
        with rich_progress("{task.description}") as bar:
            task = bar.add_task(f"{label} (passes)", total=max_steps)

            def passes(info):
                bar.update(task, completed=info.step)
            if not tabu:
                return run(passes)
            moves = bar.add_task("tabu moves", total=None)
            return run(passes, lambda made, budget: bar.update(moves, completed=made, total=budget))
    except GraphError as exc:
        usage_error(f"{input_name(file)}: {exc}")
    except KeyboardInterrupt:
        interrupted(kept() or "no answer printed")


def _finish(result, format: str, text: str, asked: dict, image: Path | None,
            draw: Callable[[Path], bool]) -> NoReturn:
    """Print the answer, `draw(image)` when it is verified and an image was asked for; exit 0 when it is verified
    (and drawn if asked), 1 when not (or the picture could not be written: the answer is printed all the same)."""
    _emit(result, format, text, asked)
    drawn = True
    if image is not None and result.verified:
        with working(f"drawing {image}"):  # a large graph's layout takes seconds to minutes
            drawn = draw(image)
    elif image is not None:
        print(f"no verified answer to draw: {image} not written", file=sys.stderr)
    raise typer.Exit(0 if result.verified and drawn else 1)


@app.command()
def coloring(
    file: Path = typer.Argument(..., metavar="FILE",
                                help="DIMACS .col file ('p edge N M', 'e U V', 1-based) or an edge list ('U V' per "
                                     "line, '#' comments); '-' reads stdin."),
    k: int = typer.Option(None, "--k", "-k", min=1, help="Colours to use. Default: the fewest the search verifies, "
                                                   "counting down from networkx's DSATUR count (smallest-last "
                                                   "above 2,000 nodes or 100,000 edges), or, where that count's "
                                                   "core is too large for the canvas, from the fewest colours "
                                                   "whose core fits, if it does as well there as networkx."),
    format: str = typer.Option("text", "--format", "-f", help="text, or json (one object: file, k, coloring, "
                                                              "num_colors, verified, reason, optimal, attempts, "
                                                              "forward_passes, seconds, ...)."),
    image: Path = typer.Option(None, help="Also draw the coloured graph" + IMAGE_HELP),
    canvases: int = CANVASES,
    max_steps: int = typer.Option(256, **STEPS_RANGE, help="Denoising passes per attempt before it counts as failed."),
    backtrack: bool = typer.Option(False, "--backtrack", help="Exact search on top of the model: at a dead end "
                                   "a canvas undoes its last guess and rules that colour out, instead of releasing "
                                   "the nodes around it. Reported separately in the benchmark."),
    tabu: bool = typer.Option(False, "--tabu", help="Local search on top of the model: when no canvas of an "
                              "attempt verifies, TabuCol continues from all of them (per attempt 100 moves per "
                              "sampled node and colour, at most 200,000). In the benchmark it reached the best "
                              "known count on every DIMACS instance the canvas holds; it cannot prove "
                              "optimality. Reported separately in the benchmark."),
    model_only: bool = MODEL_ONLY,
    checkpoint: str = CHECKPOINT,
    seed: int = SEED,
    device: str = DEVICE,
    threads: int = THREADS,
) -> None:
    """Colour a graph so that no edge joins two nodes of one colour.

    Nodes with fewer than k neighbours are set aside repeatedly and coloured last; what remains (the k-core)
    must fit the 128-node canvas.

    Colours are numbered from 0; DIMACS nodes keep their 1-based numbers. Exit status: 0 verified colouring,
    1 none found (or --image could not be written), 2 bad input."""
    format = choice(format, "--format", FORMATS)
    check_search(model_only, backtrack, tabu)
    check_image(image, "graphs", reads=file)
    graph = _graph(file, "coloring")
    solver = load_solver(GraphSolver, checkpoint, device, threads, model_only, canvases, max_steps, seed)
    asked, best = {"file": input_name(file), "k": k}, []

    def verified(result) -> None:
        best.append(result)
        if k is None:  # counting down: say how far it has come
            print(f"{input_name(file)}: {result.num_colors}-colouring verified ({result.seconds:.1f} s)",
                  file=sys.stderr, flush=True)

    def kept() -> str | None:
        if not best:
            return None
        _emit(best[-1], format, _coloring_text(best[-1], graph), asked)
        return f"the {best[-1].num_colors}-colouring printed was verified; the search for fewer colours was stopped"

    result = _search(file, "colouring", max_steps, lambda passes, moves=None: solver.color(
        graph, k, backtrack=backtrack, tabu=tabu, callback=passes, tabu_callback=moves, on_verified=verified),
        tabu=tabu, kept=kept)
    _finish(result, format, _coloring_text(result, graph), asked, image, lambda path: _draw(result, graph, path))


def _coloring_text(result, graph) -> str:
    n = graph.number_of_nodes()
    tried = ", ".join(f"k={a['k']} not tried: its core of {a['core_nodes']} nodes exceeds the canvas" if "skipped" in a
                      else f"k={a['k']} {'ok' if a['found'] else 'impossible' if a['refuted'] else 'failed'}"
                      + (f" after {a['tabu_moves']:,} tabu moves" if a.get("tabu_moves") else "")
                      + (" (every node set aside and coloured in turn, none sampled)" if a.get("core_nodes") == 0
                         else f" ({a['core_nodes']} nodes sampled)" if a.get("core_nodes", n) < n else "")
                      for a in result.attempts)
    if result.verified:
        lines = [f"verified {result.num_colors}-colouring of {plural(n, 'node')}"
                 f"{f', proved optimal: {result.proof()}' if result.optimal else ''} "
                 f"({result.greedy_strategy} {result.greedy_colors}, "
                 f"clique bound {result.clique_bound}; {tried}; {result.seconds:.1f} s)"]
        lines += [f"{_label(node)} {color}" for node, color in result.coloring.items()]
    else:
        lines = [f"no verified colouring: {result.reason}" + (f" ({tried})" if tried else "")]
    return "\n".join(lines)


@app.command()
def hamiltonian(
    file: Path = typer.Argument(..., metavar="FILE",
                                help="Edge list ('U V' per line) or DIMACS .col file ('-' reads stdin); up to 31 nodes "
                                     "and 136 edges."),
    cycle: bool = typer.Option(False, "--cycle", help="Find a Hamiltonian cycle instead of a path."),
    start: str = typer.Option(None, help="Node the path must start at (default: any)."),
    end: str = typer.Option(None, help="Node the path must end at (paths only; default: any)."),
    format: str = typer.Option("text", "--format", "-f", help="text, or json (one object: file, start, end, path, "
                                                              "verified, reason, length, forward_passes, seconds, "
                                                              "cycle, impossible: proved that none exists)."),
    image: Path = typer.Option(None, help="Also draw the graph with the path" + IMAGE_HELP),
    canvases: int = CANVASES,
    max_steps: int = typer.Option(128, **STEPS_RANGE, help="Denoising passes before giving up."),
    model_only: bool = MODEL_ONLY,
    checkpoint: str = CHECKPOINT,
    seed: int = SEED,
    device: str = DEVICE,
    threads: int = THREADS,
) -> None:
    """Visit every node exactly once along the graph's edges.

    Exit status: 0 verified, 1 none found (or --image could not be written), 2 bad input."""
    format = choice(format, "--format", FORMATS)
    if cycle and end is not None:
        usage_error("--end applies to paths; a cycle ends where it starts")
    check_image(image, "graphs", reads=file)
    graph = _graph(file, "hamiltonian")
    start, end = _node(graph, start, "--start", file), _node(graph, end, "--end", file)
    if start is not None and start == end and graph.number_of_nodes() > 1:
        usage_error("--start and --end name the same node: a path visits it once (use --cycle for a closed route)")
    _fits(file, lambda: check_hamiltonian_input(graph, start, end))
    solver = load_solver(GraphSolver, checkpoint, device, threads, model_only, canvases, max_steps, seed)
    result = _search(file, "searching", max_steps,
                     lambda callback: solver.hamiltonian_path(graph, cycle, start=start, end=end, callback=callback))
    text = (f"verified Hamiltonian {'cycle' if cycle else 'path'}: {' '.join(map(_label, result.path))} "
            f"({result.seconds:.1f} s)" if result.verified else f"no verified answer: {result.reason}")
    asked = {"file": input_name(file), **_json_nodes(start=start, end=end)}
    _finish(result, format, text, asked, image, lambda path: _draw(result, graph, path))


@app.command()
def path(
    file: Path = typer.Argument(..., metavar="FILE",
                                help="Edge list ('U V' or 'U V WEIGHT' per line) or DIMACS .col file ('-' reads "
                                     "stdin); up to 31 nodes and 24 edges (with --shortest: counting only the edges "
                                     "on shortest paths)."),
    source: str = typer.Option(..., help="Start node."),
    target: str = typer.Option(..., help="Goal node."),
    shortest: bool = typer.Option(False, "--shortest", help="Only accept a shortest path (by weight when the "
                                                            "edge list has weights, else by hops)."),
    format: str = typer.Option("text", "--format", "-f", help="text, or json (one object: file, source, target, "
                                                              "shortest, path, verified, reason, length, "
                                                              "forward_passes, seconds, cycle (false here), "
                                                              "impossible; length counts edges, or sums weights with "
                                                              "--shortest on a weighted graph)."),
    image: Path = typer.Option(None, help="Also draw the graph with the path" + IMAGE_HELP),
    canvases: int = CANVASES,
    max_steps: int = typer.Option(64, **STEPS_RANGE, help="Denoising passes before giving up."),
    model_only: bool = MODEL_ONLY,
    checkpoint: str = CHECKPOINT,
    seed: int = SEED,
    device: str = DEVICE,
    threads: int = THREADS,
) -> None:
    """Find a path from --source to --target (shortest ones are checked against networkx).

    Exit status: 0 verified, 1 none found (or --image could not be written), 2 bad input."""
    format = choice(format, "--format", FORMATS)
    check_image(image, "graphs", reads=file)
    graph = _graph(file, "path", weights_used=shortest)
    weight = "weight" if shortest and _weighted(graph) else None
    source, target = _node(graph, source, "--source", file), _node(graph, target, "--target", file)
    _fits(file, lambda: path_search_graph(graph, source, target, shortest=shortest, weight=weight))
    solver = load_solver(GraphSolver, checkpoint, device, threads, model_only, canvases, max_steps, seed)
    result = _search(file, "searching", max_steps, lambda callback: solver.path(
        graph, source, target, weight=weight, shortest=shortest, callback=callback))
    length = "" if not result.verified else f"total weight {result.length}" if weight else \
        plural(result.length, "edge")
    text = (f"verified path: {' '.join(map(_label, result.path))} ({length}; {result.seconds:.1f} s)"
            if result.verified else f"no verified answer: {result.reason}")
    asked = {"file": input_name(file), **_json_nodes(source=source, target=target), "shortest": shortest}
    _finish(result, format, text, asked, image, lambda path: _draw(result, graph, path))
