"""`GraphSolver`: constraint-guided diffusion on graph problems; networkx graphs in, plain Python out, and every
answer checked by an independent verifier (networkx) before it is returned."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from numbers import Rational, Real
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from ..core import StepCallback, StepInfo, arguments, progress_bar
from ..tasks.graph_data import (CANVAS, COLOR0, MAX_NODES, MAX_PATH_EDGES, MAX_PROMPT_EDGES, MAX_ROUTE_NODES,
                                TOKENIZER, canonical_colors, color_prompt)
from ..tasks.graphs import (GraphError, RouteSpec, check_graph, coloring_constraints, decode_route, extend_coloring,
                            first_proper_coloring, is_proper_coloring, peel_low_degree, relabel, route_guidance,
                            tabu_coloring)
from ..tasks.text import plural
from .base import UNFINISHED, DiffusionSolver, unsolved

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def path_search_graph(graph: nx.Graph, source: Hashable, target: Hashable, *, shortest: bool = False,
                      weight: str | None = None) -> nx.Graph:
    """The graph a path search samples on, checked to fit the route canvas (GraphError otherwise; the CLI asks
    before it loads a model): `graph`, or for a shortest path (`shortest`, or a `weight`) only the edges that lie
    on some shortest path, walked one way (`shortest_path_edges`). On all edges, a 1-edge shortest path in a
    triangle was missed with 4 canvases (the training paths have 2-8 edges). The answer is still verified
    against networkx's length on the whole graph."""
    check_graph(graph, None, "path-finding")
    if weight is not None and not isinstance(weight, str):
        raise GraphError(f"weight must be the name of an edge attribute, got {weight!r} (a function of the edge is "
                         "not supported: store its values as an attribute, e.g. with nx.set_edge_attributes)")
    if weight is not None:
        for u, v, data in graph.edges(data=True):
            w = data.get(weight, 1)  # as networkx: an edge without the attribute weighs 1
            if isinstance(w, (bool, np.bool_)) or not isinstance(w, (Real, Decimal)) or not math.isfinite(w) or w < 0:
                raise GraphError(f"edge {u!r}-{v!r}: {weight} {w!r} is not a finite non-negative "
                                 "number (shortest paths need finite non-negative weights)")
    _check_nodes(graph, source=source, target=target)
    if source == target or not nx.has_path(graph, source, target):
        return graph  # answered without the model (`paths`), whatever the graph's size
    search = shortest_path_edges(graph, source, target, weight) if shortest or weight is not None else graph
    try:
        _route_input(search, MAX_PATH_EDGES, "path-finding", source=source, target=target)
    except GraphError as exc:
        if search is graph:
            raise
        raise GraphError(f"{exc}; a shortest path counts only the edges that lie on shortest paths: "
                         f"{search.number_of_edges()} of {graph.number_of_edges()} here") from None
    return search


def check_hamiltonian_input(graph: nx.Graph, start: Hashable = None, end: Hashable = None) -> None:
    """GraphError unless the graph fits the Hamiltonian canvas and prompt (the CLI asks before it loads a model)."""
    _route_input(graph, MAX_PROMPT_EDGES, "Hamiltonian", start=start, end=end)


def _exact_cost(weight: str | None) -> Callable[[Hashable, Hashable, dict], Rational]:
    """An edge's cost for networkx's path lengths: 1 (hops), or its `weight` as an exact fraction, a float as the
    decimal it prints as (0.1 is 1/10), so that lengths add and compare exactly, with no tolerance: 0.1 + 0.2 is
    0.3 as the user wrote it, and 10**12 + 10**12 + 1 is longer than 10**12 + 10**12."""
    if weight is None:
        return lambda u, v, data: 1
    return lambda u, v, data: _exact(data.get(weight, 1))


def _exact(number: Real | Decimal) -> Rational:
    if isinstance(number, Rational):
        return number
    if isinstance(number, Decimal):
        return Fraction(number)
    if float(number).is_integer():  # exactly (numpy prints a large float32 short: 123456792 as 1.2345679e+08)
        return Fraction(int(float(number)))
    if isinstance(number, (np.float16, np.float32)):  # the decimal it prints as at its own precision: 0.1 is 1/10
        return Fraction(str(number))
    return Fraction(repr(float(number)))


def _plain(length: Rational) -> int | float:
    """An exact length as results give it: a whole number as an int, else the nearest float."""
    return int(length) if length == int(length) else float(length)


SHORTEST_ARCS = "diffsolve_shortest_arcs"  # graph attribute: the (u, v) steps that keep a path shortest


def shortest_path_edges(graph: nx.Graph, source: Hashable, target: Hashable, weight: str | None) -> nx.Graph:
    """The subgraph of the edges that lie on some shortest source-target path (by `weight`, or by hops), with
    the directions that keep a path shortest in its SHORTEST_ARCS attribute (the path search walks edges only
    that way: then every route it can sample is a shortest path); the graph itself when there is no such path
    (or source is target), which the path search answers without it."""
    if source == target or source not in graph or target not in graph or not nx.has_path(graph, source, target):
        return graph
    cost = _exact_cost(weight)
    from_source = nx.single_source_dijkstra_path_length(graph, source, weight=cost)
    to_target = nx.single_source_dijkstra_path_length(graph, target, weight=cost)
    best = from_source[target]

    def tight(u, v) -> bool:
        return u in from_source and v in to_target and \
            from_source[u] + cost(u, v, graph.edges[u, v]) + to_target[v] <= best

    arcs = [(u, v) for a, b in graph.edges for u, v in ((a, b), (b, a)) if tight(u, v)]
    # Built in the graph's own node and edge order: networkx's edge_subgraph orders its nodes as a set does, which
    # for text labels changes with Python's hash seed, so every process would number the canvas differently.
    on_arcs = {node for arc in arcs for node in arc}
    search = nx.Graph(**graph.graph)
    search.add_nodes_from((node, graph.nodes[node]) for node in graph if node in on_arcs)
    tight_edges = set(arcs)
    search.add_edges_from((u, v, data) for u, v, data in graph.edges(data=True)
                          if (u, v) in tight_edges or (v, u) in tight_edges)
    search.graph[SHORTEST_ARCS] = arcs
    return search


# networkx's DSATUR takes quadratic time (a 5,000-node tree: 19 s; 1,500 nodes and 560,000 edges: over a minute);
# above this many nodes or edges the search starts from the smallest-last greedy colouring instead (linear: 0.04 s
# and 1.8 s there, and as good on sparse graphs).
DSATUR_NODES, DSATUR_EDGES = 2000, 100_000


@dataclass
class ColoringResult:
    """A colouring: `coloring` (node -> colour 0..num_colors-1) only when `verified` proper; `optimal` when proved
    the fewest (`proof()` says how); `greedy_colors` and `clique_bound` bracket the search; `attempts` records
    each k tried. `to_dict()` for JSON, `draw(graph)` a picture."""

    coloring: dict[Hashable, int] | None  # node -> colour 0..k-1, only when verified
    num_colors: int | None
    verified: bool
    reason: str | None
    greedy_colors: int  # a greedy colouring's count (`greedy_strategy`): the upper bound the search starts from
    clique_bound: int  # the size of a large clique found: no colouring uses fewer colours
    attempts: list[dict] = field(default_factory=list)  # per k: found, refuted, passes, seconds
    forward_passes: int = 0
    seconds: float = 0.0
    optimal: bool = False  # proved: it meets the clique bound, 3 colours and an odd cycle, or one colour fewer refuted
    greedy_strategy: str = "DSATUR"  # networkx's; "smallest_last" above DSATUR_NODES nodes or DSATUR_EDGES edges

    def to_dict(self) -> dict:
        """JSON-ready: node labels become their str(), or their repr() where two labels share a str()
        (e.g. 1 and '1')."""
        d = asdict(replace(self, coloring=None))  # asdict would turn dataclass labels into dicts, unusable as keys
        if self.coloring is not None:
            name = str if len({str(k) for k in self.coloring}) == len(self.coloring) else repr
            d["coloring"] = {name(k): v for k, v in self.coloring.items()}
        return d

    def __repr__(self) -> str:
        """One line however many nodes there are (the colouring itself: `coloring`, `to_dict()`)."""
        found = (f"{plural(self.num_colors, 'colour')} for {plural(len(self.coloring), 'node')}"
                 + (f", proved optimal: {self.proof()}" if self.optimal else "")) if self.verified \
            else f"not verified: {self.reason}"
        return (f"ColoringResult({found}; {plural(len(self.attempts), 'attempt')}, "
                f"{plural(self.forward_passes, 'pass', 'passes')}, {self.seconds:.2f} s)")

    def proof(self) -> str | None:
        """Why `num_colors` is the fewest possible, when `optimal`; else None."""
        if not self.optimal:
            return None
        if self.num_colors == self.clique_bound:
            return f"a clique of {plural(self.clique_bound, 'node')} needs as many colours"
        if self.num_colors == 3:
            return "an odd cycle rules out 2 colours"
        return f"{self.num_colors - 1} colours were refuted"

    def draw(self, graph: nx.Graph) -> Figure:
        """A matplotlib Figure of `graph` with its nodes in their colours (the graph this result is for)."""
        _check_drawable(self, graph, self.coloring)
        uncoloured = next((v for v in graph if v not in self.coloring), None)
        if uncoloured is not None:
            raise GraphError(f"node {uncoloured!r} of the graph has no colour: draw the graph the result is for")
        if not is_proper_coloring(graph, self.coloring):
            clash = next((u, v) for u, v in graph.edges if self.coloring[u] == self.coloring[v])
            raise GraphError(f"edge {clash} joins two nodes of one colour: draw the graph the result is for")
        title = f"{plural(self.num_colors, 'colour')}" + (f", proved optimal: {self.proof()}" if self.optimal else "")
        return _draw_graph(graph, coloring=self.coloring, title=title)


@dataclass
class RouteResult:
    """A path or Hamiltonian route: `path` (the graph's node labels in order) only when `verified`, edge by edge
    against the graph; else `reason`, and `impossible` when it was proved that none exists. `length`: edges, or
    the total weight of a weighted shortest path. `to_dict()` for JSON."""

    path: list[Hashable] | None  # node labels in order, only when verified
    verified: bool
    reason: str | None
    length: int | float | None = None  # edges, or total weight for weighted shortest paths
    forward_passes: int = 0
    seconds: float = 0.0
    candidates: list = field(default_factory=list, repr=False)  # every verified route the canvases held
    cycle: bool = False  # a Hamiltonian cycle was asked for: a verified route returns from its last node to its first
    impossible: bool = False  # proved that no such route exists (`reason` says how), not a search that gave up

    def to_dict(self) -> dict:
        """JSON-ready: labels that JSON holds (str, int, float; numpy's as Python's) stay, others become their
        str(), or their repr() where a str() is another label of the route (e.g. (0, 1) and '(0, 1)')."""
        d = asdict(replace(self, path=None, candidates=[]))  # labels are converted below, not by asdict
        del d["candidates"]
        if self.path is not None:
            d["path"] = [json_label(v) for v in self.path]
            if len(set(d["path"])) < len(self.path):
                d["path"] = [json_label(v, repr) for v in self.path]  # text too: '(0, 1)' beside (0, 1)
        d["length"] = None if self.length is None else json_label(self.length)
        return d

    def draw(self, graph: nx.Graph) -> Figure:
        """A matplotlib Figure of `graph` with the route drawn bold (the graph this result is for)."""
        _check_drawable(self, graph, self.path)
        links = _route_links(self.path, self.cycle)
        missing = next(((u, v) for u, v in links if not graph.has_edge(u, v)), None)
        if missing is not None:
            raise GraphError(f"edge {missing} of the route is not in the graph: draw the graph the result is for")
        kind = "Hamiltonian cycle" if self.cycle else "path"
        title = f"{kind} from {self.path[0]}" + ("" if self.cycle else f" to {self.path[-1]}") + \
            f", {plural(len(links), 'edge')}"
        return _draw_graph(graph, links=links, title=title)


def json_label(label: Hashable, name: Callable[[object], str] = str) -> Hashable:
    """Numbers stay (numpy's become Python's); with `name=str` text stays and other labels become their str(),
    with `name=repr` every label but a number becomes its repr()."""
    if isinstance(label, np.generic):  # numpy's numbers and text as Python's
        label = label.item()
    if isinstance(label, int) or isinstance(label, float) and math.isfinite(label) or \
            (isinstance(label, str) and name is str):
        return label
    return name(label)  # inf and nan too: JSON has no such numbers (json.dumps would write Infinity)


def _batch_arguments(batch, callback, progress) -> tuple[int, bool]:
    """A batched route call's own arguments, checked before any work."""
    with arguments.raised_as(GraphError):
        arguments.callback(callback, "callback")
        return arguments.whole(batch, "batch", 1), arguments.flag(progress, "progress")


def _check_drawable(result, graph: nx.Graph, answer) -> None:
    if not result.verified:
        raise GraphError(f"nothing to draw: the result is not verified ({result.reason})")
    check_graph(graph, None, "drawing")
    missing = next((v for v in answer if v not in graph), None)
    if missing is not None:
        raise GraphError(f"node {missing!r} of the result is not in the graph: draw the graph the result is for")


def _route_links(path: list, cycle: bool) -> list[tuple]:
    """The edges a route walks; a cycle's includes the one back to its start (a cycle has more than two nodes)."""
    return list(zip(path, path[1:])) + ([(path[-1], path[0])] if cycle and len(path) > 2 else [])


def _draw_graph(graph: nx.Graph, *, coloring: dict | None = None, links: list[tuple] = (), title: str = ""):
    """A matplotlib Figure of `graph`, built without pyplot (no global state; `savefig` writes it), its nodes
    coloured by `coloring` (node -> colour, with a key of the colour numbers) and the route `links` drawn as bold
    arrows, its first node green and (a path's) last red. Small graphs get networkx's Kamada-Kawai layout; above
    60 nodes a seeded spring layout (seconds to minutes for thousands)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 7))
    ax = figure.subplots()
    # by structure alone: edge weights need not be distances (a signed network's negative ones break the layout)
    layout = nx.kamada_kawai_layout(graph, weight=None) if graph.number_of_nodes() <= 60 else \
        nx.spring_layout(graph, seed=0, weight=None)
    palette = {}
    if coloring:
        used = sorted(set(coloring.values()))
        palette = dict(zip(used, _palette(len(used))))
        colors = [palette[coloring[v]] for v in graph.nodes]
    else:  # a route: a path's end red, its start green (a cycle's end is its start)
        ends = {links[-1][1]: "#d04040", links[0][0]: "#40a040"} if links else {}
        colors = [ends.get(v, "#d0d8e8") for v in graph.nodes]
    nx.draw_networkx_edges(graph, layout, ax=ax, alpha=0.25)
    nx.draw_networkx_nodes(graph, layout, node_color=colors, ax=ax, node_size=260, edgecolors="white")
    if links:  # arrows end at the node they enter, so a link passing behind another node is not read as two
        nx.draw_networkx_edges(graph, layout, edgelist=links, ax=ax, width=2.5, edge_color="#c03030", arrows=True,
                               arrowstyle="-|>", arrowsize=14, node_size=260)
    nx.draw_networkx_labels(graph, layout, ax=ax, font_size=7)
    if 0 < len(palette) <= 20:  # a key of the colour numbers the output prints
        from matplotlib.lines import Line2D

        ax.legend(handles=[Line2D([], [], marker="o", linestyle="none", markersize=8, color=c, label=str(k))
                           for k, c in palette.items()], title="colour", fontsize=7, title_fontsize=7,
                  loc="upper right", frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    return figure


def _palette(n: int) -> list:
    """`n` distinct colours: matplotlib's 60 categorical ones, or beyond that hues a golden angle apart."""
    from matplotlib import colormaps, colors

    tab20 = colormaps["tab20"].colors  # ten dark and light pairs: the ten dark ones first, then the light
    listed = [*tab20[0::2], *tab20[1::2], *colormaps["tab20b"].colors, *colormaps["tab20c"].colors]
    if n <= len(listed):
        return listed[:n]
    return [colors.hsv_to_rgb(((i * 0.618034) % 1.0, 0.55 + 0.4 * (i % 3) / 2, 0.95 - 0.3 * (i % 2)))
            for i in range(n)]


def _too_few_colors(graph: nx.Graph, colors: int, clique_bound: int) -> str | None:
    """Why no colouring with `colors` colours exists, where a clique or an odd cycle shows it; else None."""
    if colors < clique_bound:
        return f"the graph has a clique of {clique_bound} nodes, so {plural(colors, 'colour')} cannot work"
    if colors == 2 and not nx.is_bipartite(graph):
        return "the graph has a cycle of odd length, so 2 colours cannot work"
    return None


def _core_too_large(graph: nx.Graph, core_nodes: int, colors: int) -> str:
    return (f"{graph.number_of_nodes()} nodes, of which {core_nodes} have at least {colors} neighbours after "
            f"repeatedly setting aside those with fewer (they are coloured last): the colouring canvas holds at "
            f"most {MAX_NODES}")


def _record_coloring(result: ColoringResult, coloring: dict, graph: nx.Graph) -> int:
    """Make a verified colouring `result`'s answer, its colours numbered 0..used-1; returns how many it used."""
    coloring = dict(zip(coloring, canonical_colors(list(coloring.values()))))
    used = len(set(coloring.values()))
    result.coloring, result.num_colors, result.verified, result.reason = coloring, used, True, None
    result.optimal = used == result.clique_bound or used == 3 and not nx.is_bipartite(graph)  # 2: an odd cycle
    return used


def _record_failure(result: ColoringResult, attempt: dict, backtrack: bool) -> None:
    """An attempt at one colour fewer found nothing: the answer so far is optimal if that k was refuted."""
    colors, refuted = attempt["k"], attempt["refuted"]
    result.optimal = result.verified and refuted and result.num_colors == colors + 1
    if not result.verified:
        proof = ("the exact search exhausted every choice" if backtrack else "propagating the constraints from "
                 "the pinned clique leaves some node no colour")
        result.reason = (f"no {colors}-colouring exists ({proof})" if refuted
                         else f"no verified {colors}-colouring within the step budget")


# Routes guess at T = 2: their masks settle every forced node whatever the temperature, and at the released
# schedule a canvas retakes the same confident wrong branch after each restart (Ye et al. paths, 100 evenly
# spaced: 92 -> 100 solved; NLGraph Hamilton, 70: 64 -> 67). Colouring and Countdown gained nothing from it
# (queen7_7 with backtracking got worse: 7 -> 9 colours), so they keep the released schedule.
ROUTE_TEMPERATURE = 2.0

# The explicit local search's budget per colouring attempt (`color(tabu=True)`): 100 moves per node and colour,
# at most 200,000. On 8 rows, TabuCol found DSJC125.5 at 17 colours in 10,000-110,000 moves (12 seeds, 2,500-6,000
# moves a second on one core), about 23 per node and colour at the median; the other instances of the colouring
# benchmark needed fewer than 7. Local search cannot prove a k impossible, so the budget is spent in full one colour
# below the best, and scaling it to the problem keeps that short on small graphs (myciel3: 3,300 moves, not 200,000).
TABU_MOVES_PER_CHOICE = 100
TABU_MOVES = 200_000


class GraphSolver(DiffusionSolver):
    """Graph colouring, Hamiltonian paths/cycles and start-goal paths with the shipped graphs model.

    Node labels are the input graph's own. The canvas numbers nodes in `graph.nodes` order, except that
    colouring puts a large clique first (its colours are pinned to break the colours' symmetry)."""

    CHECKPOINT, TOKENIZER, CANVAS = "graphs", TOKENIZER, max(CANVAS.values())

    # ------------------------------------------------------------------ colouring
    def color(self, graph: nx.Graph, k: int | None = None, *, max_steps: int | None = None,
              backtrack: bool = False, tabu: bool = False, tabu_moves: int | None = None,
              callback: StepCallback | None = None, tabu_callback: Callable[[int, int], None] | None = None,
              on_verified: Callable[[ColoringResult], None] | None = None,
              progress: bool = False) -> ColoringResult:
        """A proper colouring with `k` colours, or (k=None) the fewest the search verifies, counting down from
        networkx's DSATUR count (smallest-last above DSATUR_NODES nodes or DSATUR_EDGES edges) until a k fails or
        reaches the clique bound; where that count's core is too large for the canvas, from the fewest colours whose
        core fits, if what it verifies there is no worse than networkx's count (GraphError otherwise).
        `backtrack=True` adds the explicit exact search: at a dead end a canvas undoes its last guess and rules that
        colour out there, instead of releasing the nodes around the dead end. `tabu=True` adds the explicit local
        search: when no canvas of an attempt verifies, TabuCol (see `tabu_coloring`) continues from all of them for
        up to `tabu_moves` moves (default: 100 per node and colour, at most 200,000); it cannot prove that a k is
        impossible. `tabu_callback(moves made, budget)` follows it. Each attempt samples only the graph's k-core
        (see `peel_low_degree`), which must fit the canvas; the nodes set aside are coloured after it.
        `on_verified(result)` sees the result each time a colouring is verified, before the search tries one colour
        fewer: what a caller keeps if it stops the search (Ctrl-C in a callback raises out of `color` as anywhere).
        `progress=True` shows a progress bar of each attempt's denoising passes."""
        began = time.perf_counter()
        check_graph(graph, None, "colouring")
        with arguments.raised_as(GraphError):
            k = None if k is None else arguments.whole(k, "k", 1)
            max_steps = None if max_steps is None else arguments.steps(max_steps)
            tabu_moves = None if tabu_moves is None else arguments.whole(tabu_moves, "tabu_moves", 1)
            backtrack, tabu = arguments.flag(backtrack, "backtrack"), arguments.flag(tabu, "tabu")
            for hook, name in ((callback, "callback"), (tabu_callback, "tabu_callback"), (on_verified, "on_verified")):
                arguments.callback(hook, name)
            progress = arguments.flag(progress, "progress")
        self._check_coloring_search(backtrack, tabu, tabu_moves)
        clique = _large_clique(graph)
        dsatur = graph.number_of_nodes() <= DSATUR_NODES and graph.number_of_edges() <= DSATUR_EDGES
        strategy = "DSATUR" if dsatur else "smallest_last"
        greedy = len(set(nx.greedy_color(graph, strategy=strategy).values()))
        result = ColoringResult(None, None, False, None, greedy, len(clique), greedy_strategy=strategy)
        colors = k if k is not None else max(greedy, self._fewest_fitting(graph))  # where the canvas holds the core
        while (impossible := _too_few_colors(graph, colors, result.clique_bound)) is None:
            attempt, coloring = self._attempt(graph, clique, colors, max_steps, backtrack, tabu, tabu_moves,
                                              callback, tabu_callback, progress)
            if "skipped" in attempt and not result.verified:
                raise GraphError(attempt["skipped"] + self._fitting_k(graph, colors, greedy, strategy))
            used_here = len(set(coloring.values())) if coloring else None
            if colors > greedy and k is None and (used_here is None or used_here > greedy):
                # networkx does better than the search can where the canvas holds the core: say so, as above
                found = f"verified a {used_here}-colouring" if used_here else "verified none"
                core, _ = peel_low_degree(graph, greedy)
                raise GraphError(_core_too_large(graph, len(core), greedy) + self._fitting_k(graph, greedy, greedy,
                                 strategy) + f" (at k={colors} the search {found})")
            result.attempts.append(attempt)
            result.forward_passes += attempt["forward_passes"]
            if coloring is None:
                if "skipped" not in attempt:
                    _record_failure(result, attempt, backtrack)
                break
            used = _record_coloring(result, coloring, graph)
            result.seconds = time.perf_counter() - began
            if on_verified is not None:
                # a copy of what the search goes on changing; the caller's nodes stay themselves
                on_verified(replace(result, coloring=dict(coloring), attempts=[dict(a) for a in result.attempts]))
            if k is not None:
                break
            colors = used - 1  # a colouring may use fewer colours than allowed: continue below what it used
        if impossible is not None and not result.verified:
            result.reason = impossible
        result.seconds = time.perf_counter() - began
        return result

    def _fitting_k(self, graph: nx.Graph, colors: int, greedy: int, strategy: str) -> str:
        """What a caller can do instead: the fewest colours whose core fits the canvas (the full system's; model
        only colours the whole graph, whatever k), and the greedy count the search would have started from."""
        said = f"; networkx's {strategy} colours it with {plural(greedy, 'colour')} (nx.greedy_color)"
        if not self.guided:
            return said
        fits = max(colors + 1, self._fewest_fitting(graph))
        return said + (f", and k={fits} is the fewest whose core fits" if fits < greedy
                       else f"; no k below {fits} has a core the canvas holds")

    def _fewest_fitting(self, graph: nx.Graph) -> int:
        """The fewest colours whose core (see `peel_low_degree`) the canvas holds: 0 for a graph it holds whole
        and for model only, which colours the whole graph whatever k."""
        core = sorted(nx.core_number(graph).values(), reverse=True)  # k's core: the nodes of core number >= k
        return core[MAX_NODES] + 1 if self.guided and len(core) > MAX_NODES else 0

    def _check_coloring_search(self, backtrack: bool, tabu: bool, tabu_moves: int | None) -> None:
        if backtrack and tabu:
            raise GraphError("backtrack and tabu exclude each other: choose one search")
        if tabu and not self.guided:
            raise GraphError("tabu needs the full system (guided=True): model only samples alone")
        if tabu_moves is not None and not tabu:
            raise GraphError("tabu_moves is the tabu search's budget: it needs tabu=True")

    def _attempt(self, graph: nx.Graph, clique: list, colors: int, max_steps: int | None, backtrack: bool, tabu: bool,
                 tabu_moves: int | None, callback: StepCallback | None,
                 tabu_callback: Callable[[int, int], None] | None, progress: bool) -> tuple[dict, dict | None]:
        """One try at `colors` colours: (its record for `attempts`, the verified colouring or None). A core too
        large for the canvas is not tried: its record says why under 'skipped'."""
        # The model-only baseline (guided=False) colours the whole graph: the reduction is part of the system.
        core, peeled = peel_low_degree(graph, colors) if self.guided else (list(graph.nodes), [])
        if len(core) > MAX_NODES:
            return {"k": colors, "found": False, "refuted": False, "forward_passes": 0, "seconds": 0.0,
                    "core_nodes": len(core), "skipped": _core_too_large(graph, len(core), colors)}, None
        began = time.perf_counter()
        with progress_bar(progress, max_steps or self.max_steps, f"{colors} colours", "pass") as bar:

            def seen(info: StepInfo) -> None:
                bar.update(info.step - bar.n)
                if callback is not None:
                    callback(info)
            found, passes, refuted, moves = self._color_core(graph.subgraph(core), clique, colors, max_steps,
                                                             backtrack, tabu, tabu_moves,
                                                             seen if progress else callback, tabu_callback)
        coloring = None if found is None else extend_coloring(graph, found, peeled, colors)
        ok = coloring is not None and is_proper_coloring(graph, coloring)
        attempt = {"k": colors, "found": ok, "refuted": refuted, "forward_passes": passes,
                   "seconds": round(time.perf_counter() - began, 3), "core_nodes": len(core)}
        return attempt | ({"tabu_moves": moves} if tabu else {}), coloring if ok else None

    def _color_core(self, core: nx.Graph, clique: list, k: int, max_steps, backtrack: bool, tabu: bool,
                    tabu_moves: int | None, callback, tabu_callback) -> tuple[dict | None, int, bool, int]:
        """(node -> colour or None, forward passes, whether the exact search proved that no k-colouring exists,
        tabu moves made). An empty core needs no sampling: every node is coloured afterwards."""
        if core.number_of_nodes() == 0:
            return {}, 0, False, 0
        pinned = [node for node in clique if node in core][:k]
        labels, edges = relabel(core, first=pinned)  # the clique's colours are pinned: symmetry broken
        n, fixed = len(labels), max(len(pinned), 1)
        guidance = coloring_constraints(n, edges, k, self.model.device,
                                        dead_end="backtrack" if backtrack else None, clique=fixed)
        canvas, passes, _ = self._run([color_prompt(n, edges, k)], guidance, CANVAS["color"], max_steps=max_steps,
                                   callback=callback, salt=k)
        found = first_proper_coloring(canvas[:, :n] - COLOR0, k, edges)
        moves = 0
        if found is None and tabu and not bool(guidance.refuted[0]):  # no local search for a k proved impossible
            budget = tabu_moves or min(TABU_MOVES, TABU_MOVES_PER_CHOICE * n * k)
            generator = torch.Generator().manual_seed(self.seed + k)
            start = canvas[:, :n] - COLOR0  # the canvases as they stopped; a node not on a colour starts anywhere
            anywhere = torch.randint(0, k, start.shape, generator=generator)
            start = torch.where((start >= 0) & (start < k), start, anywhere)
            progress = None if tabu_callback is None else (lambda made: tabu_callback(made, budget))
            searched, _, moves = tabu_coloring(n, edges, k, start, budget, generator, fixed=fixed, progress=progress)
            found = first_proper_coloring(searched, k, edges)
        coloring = None if found is None else dict(zip(labels, found))
        # the model alone samples with the pins only: it proves nothing, even where the constraints would
        return coloring, int(passes.sum()), found is None and self.guided and bool(guidance.refuted[0]), moves

    # ------------------------------------------------------------------ routes
    def hamiltonian_path(self, graph: nx.Graph, cycle: bool = False, *, start: Hashable | None = None,
                         end: Hashable | None = None, callback: StepCallback | None = None) -> RouteResult:
        """A path (or, `cycle=True`, a closed cycle) through every node exactly once, optionally from `start`
        and (paths only) to `end`. The result's `path` lists node labels; a cycle's returns to its first node
        without repeating it."""
        return self.hamiltonian_paths([graph], cycle, start=start, end=end, callback=callback)[0]

    def hamiltonian_paths(self, graphs: Sequence[nx.Graph], cycle: bool = False, *, start: Hashable | None = None,
                          end: Hashable | None = None, batch: int = 32, callback: StepCallback | None = None,
                          progress: bool = False) -> list[RouteResult]:
        """Many graphs at once (batches of `batch` instances, each with its parallel canvases); `progress=True`
        shows a progress bar of graphs done. Ctrl-C raises BatchInterrupted whose `results` keep the graphs
        answered (the others unsolved, 'interrupted before it was solved')."""
        if isinstance(graphs, nx.Graph):
            raise GraphError("hamiltonian_paths takes a list of graphs; for one graph use hamiltonian_path(graph)")
        with arguments.raised_as(GraphError):
            cycle = arguments.flag(cycle, "cycle")
        batch, progress = _batch_arguments(batch, callback, progress)
        if cycle and end is not None:
            raise GraphError("end applies to paths; a cycle ends where it starts (give start only)")
        with arguments.raised_as(GraphError):
            graphs, problems = arguments.items(graphs, "graphs"), []
        for i, graph in enumerate(graphs):
            with arguments.numbered("graph", i, len(graphs)):
                problems.append(_hamiltonian_problem(graph, cycle, start, end))
        return self._routes(problems, batch, callback, f"Hamiltonian {'cycle' if cycle else 'path'}",
                            progress=progress, cycle=cycle)

    def path(self, graph: nx.Graph, source: Hashable, target: Hashable, *, weight: str | None = None,
             shortest: bool = False, rounds: int = 4, callback: StepCallback | None = None) -> RouteResult:
        """A simple path source -> target. `shortest=True` (implied by `weight`) verifies it against networkx's
        shortest-path length (hops, or the sum of `weight`, an edge attribute's name; an edge without it weighs 1,
        as in networkx), sampling up to `rounds` rounds of canvases. Lengths add exactly, each weight as the
        decimal it prints as, so 0.1 + 0.2 ties with 0.3 where networkx's float sum makes it longer: between
        such paths the one returned may differ from nx.shortest_path's."""
        began = time.perf_counter()
        with arguments.raised_as(GraphError):
            rounds, shortest = arguments.whole(rounds, "rounds", 1), arguments.flag(shortest, "shortest")
            arguments.callback(callback, "callback")
        if not (shortest or weight is not None):
            return self.paths([(graph, source, target)], callback=callback)[0]
        search = path_search_graph(graph, source, target, shortest=shortest, weight=weight)
        best, passes, best_length, cost = None, 0, None, _exact_cost(weight)
        for r in range(rounds):
            found = self._routes([_path_problem((search, source, target))], 1, callback, "path", salt=r,
                                 all_canvases=True)[0]
            if found.forward_passes == 0:  # answered without sampling: same node, or no path at all
                return found
            best_length = nx.shortest_path_length(graph, source, target, weight=cost)
            passes += found.forward_passes
            for path in found.candidates:
                length = sum(cost(u, v, graph.edges[u, v]) for u, v in zip(path, path[1:]))
                if best is None or length < best[1]:
                    best = (path, length)
            if best is not None and best[1] <= best_length:
                return RouteResult(best[0], True, None, _plain(best[1]), passes, time.perf_counter() - began)
        reason = "no verified path within the step budget" if best is None else \
            f"best path found has length {_plain(best[1])!r}, the shortest is {_plain(best_length)!r}"
        return RouteResult(None, False, reason, None, passes, time.perf_counter() - began)

    def paths(self, queries: Sequence[tuple[nx.Graph, Hashable, Hashable]], *, batch: int = 32,
              callback: StepCallback | None = None, progress: bool = False) -> list[RouteResult]:
        """Many (graph, source, target) path queries at once; any simple path counts. `progress=True` shows a
        progress bar of queries done. Ctrl-C raises BatchInterrupted whose `results` keep the queries answered."""
        batch, progress = _batch_arguments(batch, callback, progress)
        with arguments.raised_as(GraphError):
            queries, problems = arguments.items(queries, "queries"), []
        for i, query in enumerate(queries):
            with arguments.numbered("query", i, len(queries)):
                problems.append(_path_problem(query))
        return self._routes(problems, batch, callback, "path", progress=progress)

    def _routes(self, problems, batch: int, callback, what: str, salt: int = 0,
                all_canvases: bool = False, progress: bool = False, cycle: bool = False) -> list[RouteResult]:
        """Solve (spec, labels, trivial result or None, verifier) problems in batches (arguments checked by
        `_batch_arguments`); first verified wins; every result says whether a `cycle` was asked for. Ctrl-C
        raises BatchInterrupted keeping the instances answered."""
        results = [p[2] and replace(p[2], impossible=not p[2].verified, cycle=cycle) for p in problems]
        return self._in_batches(
            results, [i for i, p in enumerate(problems) if p[2] is None], batch,
            lambda chunk, report: self._route_batch([problems[i] for i in chunk], callback, what, salt, all_canvases,
                                                    lambda k, result: report(k, replace(result, cycle=cycle))),
            lambda i: RouteResult(None, False, UNFINISHED, cycle=cycle), progress, what, "instance")

    def _route_batch(self, problems, callback, what: str, salt: int, all_canvases: bool,
                     report: Callable[[int, RouteResult], None]) -> None:
        """One batch of problems, calling `report(k, result)` for problem k as soon as its canvases have stopped."""
        specs = [problem[0] for problem in problems]

        def result(k: int, canvas: Tensor, passes: Tensor, seconds: float) -> None:
            spec, labels, _, verify = problems[k]
            found = []
            for row in canvas:
                route = decode_route(row, spec.n)
                path = None if route is None else [labels[v] for v in route]
                if path is not None and verify(path):
                    found.append(path)
            if found:
                report(k, RouteResult(found[0], True, None, len(found[0]) - (spec.kind != "hamcycle"),
                                      int(passes.sum()), seconds, candidates=found))
            else:
                report(k, RouteResult(None, False, f"no verified {what}: {unsolved(passes, self.max_steps)}", None,
                                      int(passes.sum()), seconds))

        self._run([s.prompt() for s in specs], route_guidance(specs, self.model.device), CANVAS["path"],
                  callback=callback, salt=salt, retire=not all_canvases, temperature=ROUTE_TEMPERATURE,
                  on_instance=result)


# Up to this many nodes an exhaustive check (2^n n^2 steps, a few milliseconds) answers an impossible Hamiltonian
# instance without sampling, as Countdown's does; it only refutes, the model still finds every route.
EXHAUSTIVE_NODES = 10


def _hamiltonian_route_exists(graph: nx.Graph, cycle: bool, start=None, end=None) -> bool:
    """Whether a Hamiltonian path (from `start`, to `end`, when given: nodes of the graph) or cycle (`start`
    and `end` unused) exists: dynamic programming over the sets of visited nodes (Bellman, Held and Karp), for
    small graphs."""
    nodes = list(graph.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    n, full = len(nodes), (1 << len(nodes)) - 1
    if n == 1:
        return not cycle  # a cycle needs three nodes: a simple graph has no loop, nor two edges between two nodes
    neighbours = [sum(1 << index[u] for u in graph[v]) for v in nodes]
    if cycle:  # a cycle passes every node: begin at the first one, end next to it
        start, end = nodes[0], None
        ends = neighbours[0] if n >= 3 else 0
    else:
        ends = full if end is None else 1 << index[end]
    starts = [index[start]] if start is not None else range(n)
    reach = [0] * (full + 1)  # per set of visited nodes, the nodes a path through exactly them can end at
    for i in starts:
        reach[1 << i] |= 1 << i
    for visited in range(1, full + 1):
        last = reach[visited]
        while last:
            bit = last & -last
            last ^= bit
            free = neighbours[bit.bit_length() - 1] & ~visited
            while free:
                step = free & -free
                free ^= step
                reach[visited | step] |= step
    return bool(reach[full] & ends)


def _leaf_ends(graph: nx.Graph, start, end) -> tuple:
    """(start, end, None) for a Hamiltonian path search: a node with one neighbour must end the path, so the free
    ends go to such nodes (reversing a path whose ends are both free loses nothing); (start, end, why) when there
    are more such nodes than free ends, so that no path exists."""
    fixed = [f"{name} {node!r}" for name, node in (("start", start), ("end", end)) if node is not None]
    leaves = [v for v, d in graph.degree if d == 1 and v not in (start, end)]
    free = 2 - len(fixed)
    if len(leaves) > free:
        return start, end, (("a node has" if len(leaves) == 1 else f"{len(leaves)} nodes have")
                            + f" one neighbour ({', '.join(map(repr, leaves))}) and must end the path, but it has "
                            + plural(free, "free end") + (f" ({' and '.join(fixed)} given)" if fixed else "")
                            + ": no Hamiltonian path exists")
    if start is None and leaves:
        start = leaves.pop()
    if end is None and leaves:
        end = leaves.pop()
    return start, end, None


# ------------------------------------------------------------------------------------------ inputs
def _hamiltonian_problem(graph: nx.Graph, cycle: bool, start, end) -> tuple:
    """(spec, labels, the answer when no sampling is needed or None, verifier) of one Hamiltonian instance."""
    labels, edges, index = _route_input(graph, MAX_PROMPT_EDGES, "Hamiltonian", start=start, end=end)
    trivial = None
    what = "cycle" if cycle else "path"
    if len(labels) == 1:
        trivial = RouteResult(None, False, "a Hamiltonian cycle needs at least 3 nodes; the graph has one") if cycle \
            else RouteResult(labels, True, None, 0)
    elif not nx.is_connected(graph):
        trivial = RouteResult(None, False, f"the graph is not connected, so no Hamiltonian {what} exists")
    elif not cycle and start is not None and start == end:
        trivial = RouteResult(None, False, "a Hamiltonian path cannot start and end at the same node of "
                                           "a graph with more than one (use cycle=True for a closed route)")
    elif cycle and min(d for _, d in graph.degree) < 2:
        lone = next(v for v, d in graph.degree if d < 2)
        trivial = RouteResult(None, False, f"node {lone!r} has one neighbour, so no Hamiltonian cycle exists")
    first, last = start, end
    if not cycle and trivial is None:
        first, last, impossible = _leaf_ends(graph, start, end)
        if impossible:
            trivial = RouteResult(None, False, impossible)
    if trivial is None and len(labels) <= EXHAUSTIVE_NODES and \
            not _hamiltonian_route_exists(graph, cycle, start, end):
        ends = "" if cycle else "".join(f" {name} {node!r}" for name, node in (("from", start), ("to", end))
                                        if node is not None)
        trivial = RouteResult(None, False, f"no Hamiltonian {what} exists{ends} (exhaustive check)")
    spec = RouteSpec(len(labels), edges, "hamcycle" if cycle else "hampath", index.get(first), index.get(last))
    return spec, labels, trivial, lambda path: _is_hamiltonian(graph, path, cycle, start, end)


def _path_problem(query) -> tuple:
    """(spec, labels, the answer when no sampling is needed or None, verifier) of one (graph, source, target)."""
    if not isinstance(query, (tuple, list)) or len(query) != 3:
        raise GraphError(f"expected (graph, source, target), got {query!r}")
    graph, source, target = query
    if source is None or target is None:
        raise GraphError("path finding needs a source and a target node")
    check_graph(graph, None, "path-finding")
    _check_nodes(graph, source=source, target=target)
    if source == target:  # answered without the model, whatever the graph's size
        return None, None, RouteResult([source], True, None, 0), None
    if not nx.has_path(graph, source, target):
        return None, None, RouteResult(None, False, f"no path exists from {source!r} to {target!r}"), None
    labels, edges, index = _route_input(graph, MAX_PATH_EDGES, "path-finding", source=source, target=target)
    arcs = graph.graph.get(SHORTEST_ARCS)
    spec = RouteSpec(len(labels), edges, "path", index[source], index[target],
                     None if arcs is None else [(index[u], index[v]) for u, v in arcs])
    return spec, labels, None, lambda path: _is_path(graph, path, source, target)


def _route_input(graph: nx.Graph, max_edges: int, what: str, **nodes) -> tuple[list, list[tuple[int, int]], dict]:
    """(labels, edges over 0..N-1, label -> index) of a graph that fits the route canvas and prompt; every
    named node that is given must be in the graph."""
    check_graph(graph, MAX_ROUTE_NODES - 1, what)
    labels, edges = relabel(graph)
    if len(edges) > max_edges:
        raise GraphError(f"{len(edges)} edges: the {what} model reads at most {max_edges}")
    _check_nodes(graph, **nodes)
    return labels, edges, {node: i for i, node in enumerate(labels)}


def _check_nodes(graph: nx.Graph, **nodes) -> None:
    """GraphError naming the first of `nodes` (name=label; None: not given) that is not in the graph."""
    for name, node in nodes.items():
        if node is not None and (not isinstance(node, Hashable) or node not in graph):
            raise GraphError(f"{name} node {node!r} is not in the graph")


# ------------------------------------------------------------------------------------------ verifiers
def _is_path(graph: nx.Graph, path: list, source, target) -> bool:
    return (path[0] == source and path[-1] == target and len(set(path)) == len(path)
            and all(graph.has_edge(u, v) for u, v in zip(path, path[1:])))


def _is_hamiltonian(graph: nx.Graph, path: list, cycle: bool, start, end) -> bool:
    if len(path) != graph.number_of_nodes() or set(path) != set(graph.nodes):
        return False
    if start is not None and path[0] != start or end is not None and path[-1] != end:
        return False
    return all(graph.has_edge(u, v) for u, v in _route_links(path, cycle))


def _large_clique(graph: nx.Graph, budget: int = 50_000) -> list:
    """A large clique (its size bounds the chromatic number below): the best of a greedy pass from each node
    and the first `budget` maximal cliques of networkx's Bron-Kerbosch search (under a second; exact on the
    sparse DIMACS graphs, e.g. miles1000's 42 where the greedy pass finds 41)."""
    best: list = []
    for node in graph.nodes:
        clique = [node]
        for other in sorted(graph[node], key=graph.degree, reverse=True):
            if all(graph.has_edge(other, member) for member in clique):
                clique.append(other)
        if len(clique) > len(best):
            best = clique
    for clique in itertools.islice(nx.find_cliques(graph), budget):
        if len(clique) > len(best):
            best = clique
    return best
