"""Graph problems on the canvas: the constraints every denoising pass applies (files: `graph_files`).

Colouring: one colour token per node; each edge is an all-different pair, so a settled node's colour is masked
for its neighbours, clashing colours are re-noised, and a node left with no colour releases its neighbours.
Routes (Hamiltonian paths/cycles, start-goal paths): the node order; `RouteGuidance` adds a successor table
(which token may follow which: neighbours, EOS after the goal, padding after EOS) on top of an all-different
group over the node tokens, and masks, re-noises and verifies with gathers over the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import networkx as nx
import torch
from torch import Tensor

from ..constraints import CompiledConstraints, ConstraintModel, tabu_tenure
from ..core import Guidance
from .graph_data import (COLOR0, EOS, MAX_COLORS, MAX_NODES, MAX_ROUTE_NODES, NODE0, PAD, VOCAB,
                         hamiltonian_prompt, path_prompt)


class GraphError(ValueError):
    """A graph the solvers cannot take (with the file and line when it came from a file)."""


def check_graph(graph: nx.Graph, limit: int | None, what: str) -> None:
    if not isinstance(graph, nx.Graph):
        raise GraphError(f"{what} takes a networkx.Graph, got {type(graph).__name__} (build one with "
                        "networkx.Graph(edges), or read a file with diffsolve.tasks.graph_files.read_graph)")
    if graph.is_directed() or graph.is_multigraph():
        raise GraphError(f"{what} needs a simple undirected graph, got a {type(graph).__name__} (nx.Graph(G) makes "
                         "one: directions dropped, parallel edges merged)")
    if graph.number_of_nodes() == 0:
        raise GraphError("the graph has no nodes")
    loops = list(nx.selfloop_edges(graph))
    if loops:
        raise GraphError(f"self-loop on node {loops[0][0]!r}"
                         + (" (no route uses one; G.remove_edges_from(list(nx.selfloop_edges(G))) drops them)"
                            if what in ("path-finding", "Hamiltonian") else ""))
    if limit is not None and graph.number_of_nodes() > limit:
        raise GraphError(f"{graph.number_of_nodes()} nodes: the {what} model's canvas holds at most {limit} "
                         "(larger graphs are not supported by the model path)")


def relabel(graph: nx.Graph, first: Sequence = ()) -> tuple[list, list[tuple[int, int]]]:
    """(labels, edges over 0..N-1): the nodes `first`, then the others in the graph's own order."""
    leading = set(first)
    labels = list(first) + [node for node in graph.nodes if node not in leading]
    index = {node: i for i, node in enumerate(labels)}
    return labels, [(index[u], index[v]) for u, v in graph.edges]


# ------------------------------------------------------------------------------------------ colouring
# Dead ends of dense graphs go to the local search (`repair`): at 1,024 passes it found queen8_8 at 9, queen9_9
# at 10, DSJC125.5 at 19 and DSJC125.9 at 46 colours, where releasing the dead node's settled neighbours stopped
# at 10, 11, 20 and 49. On sparse graphs propagation does most of the work, and that wholesale release
# rebuilds better: DSJC125.1 (density 0.09) at 5 colours, found in about 700 passes with it, none in 1,024
# with the local search (PartialCol itself needed ~22,000 moves there).
REPAIR_DENSITY = 0.25


def coloring_constraints(n: int, edges: list[tuple[int, int]], k: int, device: str | torch.device = "cpu",
                         dead_end: str | None = None, clique: int = 1) -> CompiledConstraints:
    """Colours c0..c{k-1} on the first n positions (padding after), each edge an all-different pair. Colours
    are interchangeable, so nodes 0..clique-1, which must form a clique, take colours 0..clique-1 (canonical
    by first use, as in training). `dead_end`: None picks "repair" (local search) for graphs of edge density
    at least REPAIR_DENSITY and "release" for sparser ones; "backtrack" is the explicit exact search."""
    if not 1 <= k <= MAX_COLORS:
        raise GraphError(f"k must be in 1..{MAX_COLORS}, got {k}")
    cm = ConstraintModel(MAX_NODES, VOCAB)
    colors = [COLOR0 + c for c in range(k)]
    cm.allow(range(n), colors)
    cm.pin(range(n, MAX_NODES), [PAD] * (MAX_NODES - n))
    if not 1 <= clique <= min(n, k):
        raise GraphError(f"a clique of {clique} pinned nodes needs 1..min(n, k) = {min(n, k)}")
    cm.pin(range(clique), colors[:clique])
    for group in clique_cover(n, edges):
        cm.all_different(group, colors)
    # Most constrained first: settling many free nodes at once on dense graphs starts a cascade of dead ends
    # (DSJC125.5 at DSATUR's 22 colours: none found in 256 passes -> found in 65).
    if dead_end is None:
        dead_end = "repair" if 2 * len(edges) >= REPAIR_DENSITY * n * (n - 1) else "release"
    return cm.compile(device, dead_end=dead_end, most_constrained_first=True)


def clique_cover(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Cliques that together hold every edge: each not yet covered edge grows greedily into a maximal clique
    (common neighbours, most connected first). A clique as one all-different group adds the pigeonhole check
    (its free nodes need as many colours as there are of them) to the pairwise masks."""
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for u, v in edges:
        neighbours[u].add(v)
        neighbours[v].add(u)
    covered: set[tuple[int, int]] = set()
    cliques = []
    for u, v in edges:
        if (min(u, v), max(u, v)) in covered:
            continue
        clique = [u, v]
        for w in sorted(neighbours[u] & neighbours[v], key=lambda x: (-len(neighbours[x]), x)):
            if all(w in neighbours[member] for member in clique):
                clique.append(w)
        covered.update((min(a, b), max(a, b)) for i, a in enumerate(clique) for b in clique[i + 1:])
        cliques.append(sorted(clique))
    return cliques


def tabu_coloring(n: int, edges: Sequence[tuple[int, int]], k: int, start: Tensor, moves: int,
                  generator: torch.Generator | None = None, fixed: int = 0,
                  progress: Callable[[int], None] | None = None) -> tuple[Tensor, Tensor, int]:
    """TabuCol (Galinier & Hao 1999), every row of `start` ([B, n] colours in 0..k-1) searched at once. Each
    move recolours one node on a clashing edge with the colour that removes the most clashes (ties at random),
    skipping moves that put a node back on a colour it left within its tenure (L + 0.6 x nodes in conflict, L
    uniform in 0..9 moves) unless the move beats the row's best so far. Nodes 0..fixed-1 keep their colours.
    Runs where `start` is (`generator` must be there too). `progress(moves made)` is called at the start and
    every 64 moves.

    Returns (colours [B, n], clashing edges per row [B], moves made); it stops within 64 moves of some row
    having none (the other rows move on until then), or when the moves run out."""
    if any(u == v for u, v in edges):
        raise GraphError("tabu_coloring: a self-loop can never be coloured properly")
    colors = start.clone().long()
    if colors.numel() and not 0 <= int(colors.min()) <= int(colors.max()) < k:
        raise GraphError(f"tabu_coloring: start colours must lie in 0..{k - 1}")
    batch = colors.shape[0]
    adjacency = torch.zeros(n, n, device=colors.device)
    if edges:
        u, v = torch.tensor(list(edges), device=colors.device).T
        adjacency[u, v] = adjacency[v, u] = 1.0
    # neighbours[b, x, c]: neighbours of node x with colour c in row b, kept up to date move by move
    neighbours = adjacency @ torch.nn.functional.one_hot(colors, k).float()
    clashes = neighbours.gather(2, colors.unsqueeze(2)).squeeze(2).sum(1) / 2
    best = clashes.clone()
    tabu_until = torch.zeros(batch, n, k, device=colors.device)
    movable = torch.arange(n, device=colors.device) >= fixed
    rows = torch.arange(batch, device=colors.device)
    made = 0
    if progress is not None:
        progress(made)
    while made < moves and k > 1 and bool((clashes > 0).all()):
        for _ in range(min(64, moves - made)):  # between checks for a solved row
            own = neighbours.gather(2, colors.unsqueeze(2))
            gain = neighbours - own  # change in clashing edges if node x took colour c
            in_conflict = (own.squeeze(2) > 0) & movable
            allowed = (tabu_until <= made) | (clashes[:, None, None] + gain < best[:, None, None])
            allowed &= in_conflict.unsqueeze(2)
            allowed.scatter_(2, colors.unsqueeze(2), False)
            score = (gain + 0.5 * torch.rand(gain.shape, generator=generator, device=gain.device))
            flat = score.masked_fill(~allowed, math.inf).view(batch, -1)
            pick = flat.argmin(1)
            moving = torch.isfinite(flat[rows, pick]) & (clashes > 0)
            node, color = pick // k, pick % k
            old = colors[rows, node]
            change = adjacency[node] * moving.unsqueeze(1)
            neighbours[rows, :, old] -= change
            neighbours[rows, :, color] += change
            tenure = tabu_tenure(in_conflict.sum(1), generator)
            tabu_until[rows, node, old] = torch.where(moving, made + 1 + tenure, tabu_until[rows, node, old])
            colors[rows, node] = torch.where(moving, color, old)
            clashes = clashes + gain[rows, node, color] * moving
            best = torch.minimum(best, clashes)
            made += 1
        if progress is not None:
            progress(made)
    return colors, clashes.round().long(), made


def first_proper_coloring(colors: Tensor, k: int, edges: Sequence[tuple[int, int]]) -> list[int] | None:
    """The first row of `colors` ([R, n]; canvas tokens minus COLOR0) that is a proper colouring with colours
    0..k-1, as a list; None if no row is."""
    proper = ((colors >= 0) & (colors < k)).all(1)
    if edges:
        u, v = torch.tensor(list(edges), device=colors.device).T
        proper &= (colors[:, u] != colors[:, v]).all(1)
    first = proper.nonzero()
    return colors[first[0, 0]].tolist() if len(first) else None


def peel_low_degree(graph: nx.Graph, k: int) -> tuple[list, list]:
    """(core, peeled): repeatedly set aside nodes with fewer than k neighbours left. Any k-colouring of the
    core extends to the whole graph by colouring `peeled` in order (each then has fewer than k coloured
    neighbours), and a graph has a k-colouring iff its core does."""
    degree = dict(graph.degree)
    removed: set = set()
    removal_order = []
    stack = [node for node, d in degree.items() if d < k]
    while stack:
        node = stack.pop()
        if node in removed:
            continue
        removed.add(node)
        removal_order.append(node)
        for other in graph[node]:
            if other not in removed:
                degree[other] -= 1
                if degree[other] < k:
                    stack.append(other)
    return [node for node in graph.nodes if node not in removed], removal_order[::-1]


def extend_coloring(graph: nx.Graph, coloring: dict, peeled: Sequence, k: int) -> dict:
    """`coloring` (of the core) plus each peeled node, in order, on the lowest colour its neighbours leave;
    keyed in the graph's node order."""
    coloring = dict(coloring)
    for node in peeled:
        taken = {coloring[other] for other in graph[node] if other in coloring}
        coloring[node] = next(c for c in range(k) if c not in taken)
    return {node: coloring[node] for node in graph.nodes}


def is_proper_coloring(graph: nx.Graph, coloring: dict) -> bool:
    return set(coloring) == set(graph.nodes) and all(coloring[u] != coloring[v] for u, v in graph.edges)


# ------------------------------------------------------------------------------------------ routes
class RouteGuidance(Guidance):
    """Node-order canvases. `successor[b, x, y]`: token y may directly follow token x in row b; `pred`/`succ`
    [B, L] give each position's neighbouring position (-1: none; a cycle wraps its last node to position 0).
    An all-different group over node tokens and the pins/static sets come from `base`.

    Hamiltonian rows also cover every node: `span` [B, L] marks positions 0..n-1, which hold nodes 0..n-1
    once each, and `ends` [B, L] the positions where a route may stop (a path's first and last; none on a
    cycle). See `_cover` for what that propagates.

    Masks are local, so two free positions can keep choosing tokens that suit their settled sides but not each
    other (a path that took a wrong branch, or settled its end too far away). Every re-noising is a strike on
    that position; at `STRIKES` on one position the whole canvas is released and starts over, as it is at once
    when `_cover` proves the settled tokens cannot be completed."""

    STRIKES = 4

    def __init__(self, base: CompiledConstraints, successor: Tensor, pred: Tensor, succ: Tensor, span: Tensor,
                 ends: Tensor, strikes: Tensor | None = None):
        self.base, self.successor, self.pred, self.succ = base, successor, pred, succ
        self.span, self.ends = span, ends
        self.rows = torch.arange(successor.shape[0], device=successor.device)
        self.strikes = torch.zeros_like(pred) if strikes is None else strikes

    @property
    def batch_size(self) -> int:
        return self.successor.shape[0]

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def canvas_shape(self) -> tuple[int, int]:
        return self.base.canvas_shape

    @property
    def needs_kept_tokens(self) -> bool:
        return self.base.needs_kept_tokens

    def select(self, rows: Tensor) -> "RouteGuidance":
        return RouteGuidance(self.base.select(rows), self.successor[rows], self.pred[rows], self.succ[rows],
                             self.span[rows], self.ends[rows], self.strikes[rows])

    def _cover(self, canvas: Tensor, settled: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """Hamiltonian rows, where every node takes one of the free positions 0..n-1: a node with no free
        position left is a dead end, a node with one takes it; a node with at most one possible neighbour on
        the route (unplaced neighbours, or placed ones beside a free position) can only stand at an end, and
        with none it is a dead end. Returns (narrowed allowed [B, L, V], dead rows [B])."""
        b, length = canvas.shape
        dead = torch.zeros(b, dtype=torch.bool, device=canvas.device)
        if not self.span.any():
            return allowed, dead
        nodes = slice(NODE0, NODE0 + length)  # token NODE0 + i is node i, covered iff span[:, i]
        index = canvas - NODE0
        held = settled & self.span & (index >= 0) & (index < length)
        node_at = index.clamp(0, length - 1)
        placed = _spread_to(held, node_at)  # [B, node]
        unplaced = self.span & ~placed
        free = self.span & ~settled
        beside_free = (_neighbour(free, self.pred) | _neighbour(free, self.succ)) & held  # [B, L] positions
        attachable = unplaced | _spread_to(beside_free, node_at)  # [B, node]
        adjacency = self.successor[:, nodes, nodes].float()  # [B, node, node]
        options = torch.einsum("bvu,bu->bv", adjacency, attachable.float())
        lonely = unplaced & (options < 1.5)
        dead |= (unplaced & (options < 0.5)).any(-1)
        node_allowed = allowed[:, :, nodes] & ~(lonely[:, None, :] & ~self.ends[:, :, None])
        fits = node_allowed & free[:, :, None]  # [B, position, node]
        places = fits.sum(1)
        dead |= (unplaced & (places == 0)).any(-1)
        forced = fits & (unplaced & (places == 1))[:, None, :]
        dead |= (forced.sum(-1) > 1).any(-1)
        taken = forced.any(-1, keepdim=True)  # [B, L, 1]: a position some node must take
        allowed = allowed & ~taken
        allowed[:, :, nodes] = torch.where(taken, forced, node_allowed)
        return allowed, dead & self.span.any(-1)

    def _link_masks(self, canvas: Tensor, settled: Tensor) -> Tensor:
        """[B, L, V]: tokens compatible with the settled tokens on either side."""
        allowed = torch.ones(*canvas.shape, VOCAB, dtype=torch.bool, device=canvas.device)
        for link, table in ((self.pred, self.successor), (self.succ, self.successor.transpose(1, 2))):
            token = canvas.gather(1, link.clamp(min=0))
            known = _neighbour(settled, link)
            options = table[self.rows[:, None], token]  # [B, L, V]
            allowed &= ~known.unsqueeze(2) | options
        return allowed

    def _broken_links(self, canvas: Tensor, where: Tensor) -> Tensor:
        """[B, L]: positions whose token may not be followed by its successor's (both in `where`)."""
        has = self.succ >= 0
        nxt = canvas.gather(1, self.succ.clamp(min=0))
        ok = self.successor[self.rows[:, None], canvas, nxt]
        return ~ok & has & where & where.gather(1, self.succ.clamp(min=0))

    def pinned(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        return self.base.pinned(batch, device)

    def _masks(self, canvas: Tensor, settled: Tensor) -> tuple[Tensor, Tensor]:
        base = self.base.allowed(canvas, settled)
        links = self._link_masks(canvas, settled)
        return self._cover(canvas, settled, links if base is None else base & links)

    def allowed(self, canvas: Tensor, settled: Tensor) -> Tensor:
        return self._masks(canvas, settled)[0]

    def violations(self, canvas: Tensor, accepted: Tensor) -> Tensor:
        bad = self.base.violations(canvas, accepted)
        broken = self._broken_links(canvas, accepted)
        bad |= broken | _spread(broken, self.succ)  # both ends of a broken link
        # A free position that nothing can fill releases the settled tokens beside it.
        settled = accepted & ~bad
        allowed, stuck = self._masks(canvas, settled)
        dead = ~allowed.any(-1) & ~settled
        bad |= _spread(dead, self.pred) | _spread(dead, self.succ)
        bad &= accepted & ~self.base.pin_mask
        self.strikes += bad
        restart = (self.strikes >= self.STRIKES).any(-1, keepdim=True) | stuck.unsqueeze(1)
        self.strikes.masked_fill_(restart, 0)
        return bad | (restart & accepted & ~self.base.pin_mask)

    def verify(self, canvas: Tensor) -> Tensor:
        everywhere = torch.ones_like(canvas, dtype=torch.bool)
        return self.base.verify(canvas) & ~self._broken_links(canvas, everywhere).any(-1) & (canvas == EOS).any(-1)

    def start(self) -> None:
        self.base.start()

    def retire(self, solved: Tensor) -> Tensor:
        return self.base.retire(solved)


def _neighbour(flags: Tensor, link: Tensor) -> Tensor:
    """[B, L]: flags at each position's linked position (False where there is none)."""
    return flags.gather(1, link.clamp(min=0)) & (link >= 0)


def _spread_to(flags: Tensor, index: Tensor) -> Tensor:
    """[B, L]: out[b, j] = any flags[b, i] with index[b, i] == j."""
    return torch.zeros_like(flags, dtype=torch.uint8).scatter_reduce(1, index, flags.to(torch.uint8),
                                                                      reduce="amax").bool()


def _spread(flags: Tensor, link: Tensor) -> Tensor:
    """[B, L]: out[b, link[b, i]] = any flags[b, i] over the positions linking there."""
    return _spread_to(flags & (link >= 0), link.clamp(min=0))


@dataclass
class RouteSpec:
    """One route instance over nodes 0..n-1. `kind`: hampath, hamcycle or path. For Hamiltonian routes `start`
    and `end` optionally fix the ends; for a path they are the source and the target."""

    n: int
    edges: list[tuple[int, int]]
    kind: str
    start: int | None = None
    end: int | None = None
    arcs: list[tuple[int, int]] | None = None  # path: the directions the edges may be walked in (default both)

    def __post_init__(self) -> None:
        if self.n >= MAX_ROUTE_NODES:
            raise GraphError(f"{self.n} nodes: the route canvas holds at most {MAX_ROUTE_NODES - 1}")

    def prompt(self) -> list[int]:
        if self.kind == "path":
            return path_prompt(self.edges, self.start, self.end)
        return hamiltonian_prompt(self.n, self.edges, cycle=self.kind == "hamcycle")

    def pins(self) -> dict[int, int]:
        pins = {} if self.start is None else {0: NODE0 + self.start}
        if self.kind != "path":
            pins.update({self.n: EOS, **{i: PAD for i in range(self.n + 1, MAX_ROUTE_NODES)}})
            if self.end is not None:
                pins[self.n - 1] = NODE0 + self.end
        return pins

    def reachable(self) -> dict[int, list[int]]:
        """position -> the tokens it may hold by distance alone: the node at position i is at most i edges from
        the pinned start and at most (n - 1 - i) from a Hamiltonian path's pinned end; a path's EOS comes after
        at least dist(source, target) edges. (A 24-edge chain from source to target was not found in 64 passes
        without this: the model settled the padding ten nodes in.)"""
        graph = nx.Graph(self.edges)
        graph.add_nodes_from(range(self.n))
        far = self.n  # farther than any route
        near_start = nx.single_source_shortest_path_length(graph, self.start) if self.start is not None else {}
        near_end = nx.single_source_shortest_path_length(graph, self.end) \
            if self.end is not None and self.kind == "hampath" else {}
        shortest = near_start.get(self.end, far) if self.kind == "path" else self.n - 1  # edges before EOS
        allowed = {}
        for i in range(MAX_ROUTE_NODES):
            nodes = [NODE0 + v for v in range(self.n) if near_start.get(v, 0 if self.start is None else far) <= i
                     and near_end.get(v, 0 if not near_end else far) <= self.n - 1 - i]
            allowed[i] = nodes + ([EOS, PAD] if i > shortest else [])
        return allowed

    def successors(self) -> Tensor:
        """[V, V]: which token may follow which (neighbours; EOS after any node, or only after the target)."""
        table = torch.zeros(VOCAB, VOCAB, dtype=torch.bool)
        if self.edges:
            e = torch.tensor(self.edges) + NODE0
            table[e[:, 0], e[:, 1]] = True
            table[e[:, 1], e[:, 0]] = True
        if self.arcs is not None:
            table[NODE0:NODE0 + self.n, NODE0:NODE0 + self.n] = False
            if self.arcs:
                a = torch.tensor(self.arcs) + NODE0
                table[a[:, 0], a[:, 1]] = True
        table[EOS, PAD] = table[PAD, PAD] = True
        if self.kind == "path":
            table[NODE0 + self.end, :] = False
            table[NODE0 + self.end, EOS] = True
        else:
            table[NODE0:NODE0 + self.n, EOS] = True
        return table

    def links(self) -> tuple[Tensor, Tensor]:
        pred = torch.arange(-1, MAX_ROUTE_NODES - 1)
        succ = torch.arange(1, MAX_ROUTE_NODES + 1)
        succ[-1] = -1
        if self.kind == "hamcycle":
            pred[0], succ[self.n - 1] = self.n - 1, 0
        return pred, succ


def route_guidance(specs: list[RouteSpec], device: str | torch.device = "cpu") -> RouteGuidance:
    """One batched guidance for many route instances (one row each)."""
    length, nodes = MAX_ROUTE_NODES, [NODE0 + v for v in range(MAX_ROUTE_NODES)]
    cm = ConstraintModel(length, VOCAB, batch_size=len(specs))
    cm.all_different(range(length), nodes)
    for row, spec in enumerate(specs):
        cm.allow(range(length), [*nodes[:spec.n], EOS, PAD], row=row)
        if spec.start is not None or spec.end is not None and spec.kind == "hampath":  # setup, once per instance
            for position, tokens in spec.reachable().items():
                cm.allow([position], tokens, row=row)
        pins = spec.pins()
        cm.pin(list(pins), list(pins.values()), row=row)
    links = [spec.links() for spec in specs]
    span = torch.zeros(len(specs), length, dtype=torch.bool)
    ends = torch.zeros(len(specs), length, dtype=torch.bool)
    for row, spec in enumerate(specs):
        if spec.kind != "path":
            span[row, :spec.n] = True
        if spec.kind == "hampath":
            ends[row, [0, spec.n - 1]] = True
    return RouteGuidance(cm.compile(device), torch.stack([s.successors() for s in specs]).to(device),
                         torch.stack([p for p, _ in links]).to(device), torch.stack([q for _, q in links]).to(device),
                         span.to(device), ends.to(device))


def decode_route(canvas: Tensor, n: int) -> list[int] | None:
    """Node indices up to the first EOS, or None when the canvas is not a list of nodes then EOS."""
    tokens = canvas.tolist()
    if EOS not in tokens:
        return None
    route = [t - NODE0 for t in tokens[:tokens.index(EOS)]]
    return route if route and all(0 <= v < n for v in route) else None
