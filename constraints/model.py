"""Declarative canvas constraints, compiled into batched tensor ops the sampler applies every pass.

Build a `ConstraintModel` the way one builds a CP-SAT model -- declare, then compile:

    cm = ConstraintModel(canvas_length=81, vocab_size=14, batch_size=len(puzzles))
    cm.pin(cells, tokens, row=i)                  # fixed tokens (clues)
    cm.allow(range(81), digit_tokens)             # per-position allowed sets
    for unit in units:
        cm.all_different(unit, digit_tokens)      # no token of `values` twice in the group
    cm.add_predicate("sorted", verify=fn)         # any batched check over whole canvases (and their rows)
    guidance = cm.compile()                       # a `core.Guidance` for `generate`

`row=None` applies a declaration to every row of the batch. The compiled object answers the sampler's hooks
(`pinned`, `allowed`, `settleable`, `violations`, `verify`, `retire`) with dense tensor ops over [B, L, V] (no
loops over positions), so `vocab_size` should be a task vocabulary; all-different work happens in the smaller
space of the declared values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core import arguments, check_device
from ..core.guidance import Guidance, any_sibling


def tabu_tenure(conflicting: Tensor, generator: torch.Generator | None) -> Tensor:
    """[B] moves a value just left stays barred: PartialCol's rule, 0.6 x (places in conflict) + 0-9 at random."""
    spread = torch.randint(0, 10, conflicting.shape, generator=generator, device=conflicting.device)
    return (0.6 * conflicting).long() + spread


@dataclass(frozen=True)
class Predicate:
    """A task rule over whole canvases, batched.

    `verify(canvas [B, L], rows [B]) -> bool [B]`: the rule holds. `rows` maps each canvas to the declared
    batch row it belongs to (parallel restarts repeat rows), so per-row data is indexed as `data[rows]`.
    `locate(canvas, accepted, rows) -> bool [B, L]`: accepted positions to blame and re-noise (optional)."""

    name: str
    verify: Callable[[Tensor, Tensor], Tensor]
    locate: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None


class ConstraintModel:
    def __init__(self, canvas_length: int, vocab_size: int, batch_size: int = 1):
        canvas_length, vocab_size, batch_size = (arguments.whole(value, name, 1) for value, name in (
            (canvas_length, "canvas_length"), (vocab_size, "vocab_size"), (batch_size, "batch_size")))
        self.length, self.vocab, self.batch = canvas_length, vocab_size, batch_size
        self.pins = torch.full((batch_size, canvas_length), -1, dtype=torch.long)
        self.allowed: Tensor | None = None  # [B, L, V] bool, allocated by the first `allow`
        self.groups: list[tuple[list[int], list[int], bool]] = []
        self.predicates: list[Predicate] = []

    # ------------------------------------------------------------------ declarations
    def pin(self, positions: Iterable[int], tokens: Iterable[int], row: int | None = None) -> "ConstraintModel":
        # paired in order: a set has none
        positions, tokens = self._positions(positions, ordered=True), self._tokens(tokens, ordered=True)
        if len(positions) != len(tokens):
            raise ValueError(f"pin: {len(positions)} positions but {len(tokens)} tokens")
        if not positions:
            return self
        if len(set(positions)) != len(positions):
            raise ValueError(f"pin: position {_repeated(positions)} given twice")
        rows = self._rows(row)
        current = self.pins[rows][:, positions]
        clash = (current >= 0) & (current != torch.tensor(tokens, dtype=torch.long))
        if clash.any():
            raise ValueError(f"pin: position(s) {sorted({positions[i] for i in clash.nonzero()[:, 1].tolist()})} "
                             f"already pinned to a different token")
        self.pins[rows.unsqueeze(1), torch.tensor(positions, dtype=torch.long)] = torch.tensor(tokens, dtype=torch.long)
        return self

    def allow(self, positions: Iterable[int], tokens: Iterable[int], row: int | None = None) -> "ConstraintModel":
        """Restrict `positions` to `tokens` (intersected with any earlier restriction)."""
        positions, tokens = self._positions(positions), self._tokens(tokens)
        if not positions:
            return self
        if self.allowed is None:
            self.allowed = torch.ones(self.batch, self.length, self.vocab, dtype=torch.bool)
        mask = torch.zeros(self.vocab, dtype=torch.bool)
        mask[tokens] = True
        rows = self._rows(row)
        self.allowed[rows.unsqueeze(1), torch.tensor(positions, dtype=torch.long)] &= mask
        return self

    def all_different(self, positions: Iterable[int], values: Iterable[int], exact: bool = False
                      ) -> "ConstraintModel":
        """No token from `values` may appear twice among `positions` (in every row); the positions may hold other
        tokens too (limit them with `allow`). `exact=True`: as many positions as values, each value exactly once
        (a permutation: the positions hold only these values), so a value with one place left goes there."""
        positions, values = self._positions(positions), list(dict.fromkeys(self._tokens(values)))  # each value once
        exact = arguments.flag(exact, "exact")
        if len(set(positions)) != len(positions):
            raise ValueError(f"all_different: position {_repeated(positions)} given twice")
        if not values:
            raise ValueError("all_different: no values")
        if exact and len(values) != len(positions):
            raise ValueError(f"all_different(exact=True): {len(positions)} positions but {len(values)} values")
        if exact:
            self.allow(positions, values)
        self.groups.append((positions, values, exact))
        return self

    def add_predicate(self, name: str, verify: Callable[[Tensor, Tensor], Tensor],
                      locate: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None) -> "ConstraintModel":
        if not isinstance(name, str):
            raise TypeError(f"name must be text, got {name!r}")
        if not callable(verify):
            raise TypeError(f"verify must be a function, got {verify!r}")
        self.predicates.append(Predicate(name, verify, arguments.callback(locate, "locate")))
        return self

    # ------------------------------------------------------------------ compile
    def compile(self, device: str | torch.device = "cpu", dead_end: str = "release",
                most_constrained_first: bool = False) -> "CompiledConstraints":
        """`dead_end`: what re-noising does when the settled tokens leave some position without a candidate:
        "release" (re-noise the settled peers of a dead position), "repair" (a local search that keeps a legal
        partial assignment, see `CompiledConstraints._repair`), "restart" or "backtrack" (see
        `CompiledConstraints._search_step`).
        `most_constrained_first`: a pass may settle only the free positions with the fewest candidates left
        (the DSATUR order of graph colouring), the model choosing their values."""
        most_constrained_first = arguments.flag(most_constrained_first, "most_constrained_first")
        pinned = self.pins >= 0
        if self.allowed is not None:
            pin_ok = self.allowed.gather(2, self.pins.clamp(min=0).unsqueeze(2)).squeeze(2) | ~pinned
            if not pin_ok.all():
                row, pos = (~pin_ok).nonzero()[0].tolist()
                raise ValueError(f"row {row}: pinned token at position {pos} is not in its allowed set (from allow, "
                                 "and the values of its exact groups)")
            empty = ~self.allowed.any(-1)
            if empty.any():
                row, pos = empty.nonzero()[0].tolist()
                raise ValueError(f"row {row}: position {pos} has an empty allowed set")
        compiled = CompiledConstraints(self, check_device(device), dead_end, most_constrained_first)
        clash = compiled._clashes(compiled.pins.clamp(min=0), compiled.pins >= 0) if self.groups else None
        if clash is not None and clash.any():
            row, pos = clash.nonzero()[0].tolist()
            raise ValueError(f"row {row}: the token pinned at position {pos} is also pinned at another position of "
                             "one of its all-different groups")
        return compiled

    # ------------------------------------------------------------------ validation helpers
    def _positions(self, positions: Iterable[int], ordered: bool = False) -> list[int]:
        return _indices(positions, "position", ordered, self.length, "the canvas of length")

    def _tokens(self, tokens: Iterable[int], ordered: bool = False) -> list[int]:
        return _indices(tokens, "token", ordered, self.vocab, "the vocabulary of size")

    def _rows(self, row: int | None) -> Tensor:
        if row is None:
            return torch.arange(self.batch)
        row = arguments.whole(row, "row")
        if not 0 <= row < self.batch:
            raise ValueError(f"row {row} outside the batch of size {self.batch}")
        return torch.tensor([row])


def _repeated(positions: list[int]) -> int:
    return next(p for i, p in enumerate(positions) if p in positions[:i])


def _indices(values: Iterable[int], name: str, ordered: bool, size: int, within: str) -> list[int]:
    """Positions or tokens as ints in [0, size): any iterable of whole numbers (a tensor or array too), never 2.7
    read as 2; a set only where their order does not matter (not `ordered`)."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    out = [arguments.whole(value, name) for value in arguments.items(values, f"{name}s", ordered)]
    bad = [v for v in out if not 0 <= v < size]
    if bad:
        raise ValueError(f"{name}(s) {bad[:5]} outside {within} {size}")
    return out


DEAD_ENDS = ("release", "repair", "restart", "backtrack")
HALL_MAX_VALUES = 10  # Hall-set tables hold 2**D value subsets


class GuessTrail:
    """Per-canvas search state of the restart and backtrack policies: how many guesses deep each canvas is,
    the depth at which each position settled (0: the pins and what they force), which positions were guesses,
    and values ruled out per position, tagged with the depth whose guesses proved them wrong (-1: none)."""

    FIRST_PATIENCE = 32  # backtrack restarts from depth 0 after this many dead ends, then twice as many, ...

    depth: Tensor  # [B]
    dead_ends: Tensor  # [B] dead ends since the last restart (backtrack restarts after `patience` of them)
    patience: Tensor  # [B]
    settled_at: Tensor  # [B, L]
    guess_at: Tensor  # [B, L] bool
    ruled_at: Tensor  # [B, L, D]

    def __init__(self, batch: int, length: int, size: int, device: torch.device):
        self.depth = torch.zeros(batch, dtype=torch.long, device=device)
        self.dead_ends = torch.zeros(batch, dtype=torch.long, device=device)
        self.patience = torch.full((batch,), self.FIRST_PATIENCE, dtype=torch.long, device=device)
        self.settled_at = torch.zeros(batch, length, dtype=torch.long, device=device)
        self.guess_at = torch.zeros(batch, length, dtype=torch.bool, device=device)
        self.ruled_at = torch.full((batch, length, size), -1, dtype=torch.long, device=device)

    def select(self, rows: Tensor) -> "GuessTrail":
        out = object.__new__(GuessTrail)
        out.depth, out.settled_at = self.depth[rows], self.settled_at[rows]
        out.dead_ends, out.patience = self.dead_ends[rows], self.patience[rows]
        out.guess_at, out.ruled_at = self.guess_at[rows], self.ruled_at[rows]
        return out


class CompiledConstraints(Guidance):
    """Constraint tensors for a batch of canvases; `repeat(n)` gives n parallel canvases per row.

    All-different groups become a peer tensor over the union of their values (the "domain", D tokens):
    `peers[l, m, d]` says positions l and m may not both hold value d. `allowed` and `violations` propagate what
    the settled positions force, to a fixpoint, with batched tensor ops (see `_propagate`).
    """

    def __init__(self, model: ConstraintModel, device: torch.device, dead_end: str = "release",
                 most_constrained_first: bool = False):
        if dead_end not in DEAD_ENDS:
            raise ValueError(f"dead_end must be one of {DEAD_ENDS}, got {dead_end!r}")
        self.device, self.dead_end, self.most_constrained_first = device, dead_end, most_constrained_first
        # copies: declarations made after compile must not change what was compiled (on CPU .to() is a no-op)
        self.pins = model.pins.to(device, copy=True)
        self.pin_mask = self.pins >= 0  # constant after compiling, like the pins
        self.has_pins = bool(self.pin_mask.any())  # some row has pins; read every pass: a bool, not a device sync
        self.static_allowed = None if model.allowed is None else model.allowed.to(device, copy=True)
        self.predicates = list(model.predicates)
        self.rows = torch.arange(model.batch, device=device)  # declared row of each canvas
        self.vocab = model.vocab
        domain = sorted({v for _, values, _ in model.groups for v in values})
        self.domain = torch.tensor(domain, dtype=torch.long, device=device)
        self.domain_index = torch.full((model.vocab,), -1, dtype=torch.long, device=device)
        self.domain_index[self.domain] = torch.arange(len(domain), device=device)
        length, size = model.length, len(domain)
        self.peers = torch.zeros(length, length, size, device=device)  # [L, L, D]
        self.own_values = torch.zeros(length, size, dtype=torch.bool, device=device)  # [L, D] its groups' values
        by_values: dict[tuple[int, ...], list[list[int]]] = {}
        for positions, values, _ in model.groups:
            by_values.setdefault(tuple(values), []).append(positions)
        for values, groups in by_values.items():  # one [L, L] product per distinct value set
            membership, value_mask = self._group_tables([(positions, values) for positions in groups], length)
            shared = (membership.T @ membership > 0.5).fill_diagonal_(False)
            self.peers = torch.maximum(self.peers, (shared[:, :, None] & value_mask[0]).float())
            self.own_values |= (membership.sum(0) > 0.5)[:, None] & value_mask[0]
        exact = [(positions, values) for positions, values, is_exact in model.groups if is_exact]
        self.exact_membership, exact_values = self._group_tables(exact, length)  # [Gx, L], [Gx, D]
        self.exact_values = exact_values.float()
        self._compile_hall_sets(exact, size, device)
        # Other groups of three or more positions (e.g. cliques of a colouring): the pigeonhole check only
        wide = [(positions, values) for positions, values, is_exact in model.groups
                if not is_exact and len(positions) > 2]
        self.wide_membership, self.wide_values = self._group_tables(wide, length)  # [Gw, L], [Gw, D]
        # [D, Gw] values outside each wide group; None when every group holds the whole domain (colouring, routes)
        self.wide_outside = None if self.wide_values.all() else (~self.wide_values).float().T
        self.in_groups = self.own_values.any(-1)  # [L]
        self.has_groups = bool(self.in_groups.any())  # read every pass: a Python bool, not a device sync
        self.neighbours = (self.peers > 0.5).any(-1).float()  # [L, L]: positions sharing any group
        self.earlier_peers = torch.tril(self.neighbours, diagonal=-1)  # [l, m]: m < l and they share a group
        # [B, L]: the position may take a token no all-different group of it constrains (never forced, never dead)
        if self.static_allowed is not None:
            outside = self.static_allowed.clone()
            outside[..., self.domain] &= ~self.own_values
            self.has_outside_option = outside.any(-1)
        else:  # every token is allowed: all but its groups' values
            self.has_outside_option = (self.own_values.sum(-1) < model.vocab).expand(model.batch, length).clone()
        self.trail = GuessTrail(model.batch, length, size, device)
        # `repair` only: (position, value) pairs a repair took away, barred until pass `tabu_until`
        self.tabu_until = torch.zeros(model.batch, length, size, dtype=torch.long, device=device)
        self.clock = torch.zeros(model.batch, dtype=torch.long, device=device)  # passes seen by `violations`
        self.generator = torch.Generator(device).manual_seed(0)
        # [declared rows] proved to have no solution: by the declarations alone (checked here), or by a dead end
        # with no guess standing (restart and backtrack). One tensor, updated in place, shared by `select`ed copies.
        self.refuted = torch.zeros(model.batch, dtype=torch.bool, device=device)
        self._before: tuple[Tensor, Tensor, Tensor] | None = None  # (settled, candidates, dead) of this pass
        self._searched = [False]  # by a generate call, this or a `select`ed copy (the list is shared): see `start`
        if self.has_groups:  # what the declarations alone rule out (a pigeonhole: five positions, four values)
            self.refuted |= self._propagate(self.pins.clamp(min=0), self.pin_mask)[1].any(-1)

    def _group_tables(self, groups: list[tuple[list[int], list[int]]], length: int) -> tuple[Tensor, Tensor]:
        """[G, L] float membership of each (positions, values) group's positions and [G, D] bool its values."""
        membership = torch.zeros(len(groups), length, device=self.device)
        values = torch.zeros(len(groups), self.domain.numel(), dtype=torch.bool, device=self.device)
        for g, (positions, group_values) in enumerate(groups):
            membership[g, positions] = 1.0
            values[g, self.domain_index[torch.tensor(group_values, device=self.device)]] = True
        return membership, values

    def _compile_hall_sets(self, exact: list[tuple[list[int], list[int]]], size: int, device: torch.device) -> None:
        """Tables for Hall-set reasoning in exact groups over at most HALL_MAX_VALUES values: value subsets S
        as bit masks (index S holds the values of S's bits), their sizes, and each group's positions, padded."""
        self.hall = bool(exact) and size <= HALL_MAX_VALUES
        if not self.hall:
            return
        subsets = torch.arange(1 << size, device=device)
        bits = 1 << torch.arange(size, device=device)
        self.subset_size = ((subsets[:, None] & bits) > 0).sum(-1)  # [S]
        self.value_bits = bits
        width = max(len(positions) for positions, _ in exact)
        self.hall_positions = torch.zeros(len(exact), width, dtype=torch.long, device=device)  # [Gx, P]
        self.hall_real = torch.zeros(len(exact), width, dtype=torch.bool, device=device)
        group_bits = torch.zeros(len(exact), dtype=torch.long, device=device)
        for g, (positions, values) in enumerate(exact):
            self.hall_positions[g, :len(positions)] = torch.tensor(positions, device=device)
            self.hall_real[g, :len(positions)] = True
            group_bits[g] = int(bits[self.domain_index[torch.tensor(values, device=device)]].sum())
        # Hall sets worth testing per group: non-empty subsets of its values
        self.hall_sets = ((subsets[None, :] & ~group_bits[:, None]) == 0) & (subsets > 0)  # [Gx, S]

    def _hall_step(self, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """One round of Hall-set reasoning over the exact groups (all-different's full propagation): if the
        candidates of n positions of a group lie inside a set S of n values, those positions take S between
        them and the group's other positions lose S; more than n positions inside S is a dead end.
        Returns (narrowed candidates [B, L, D], dead [B, L]).

        Works on the 2**D value subsets with two subset transforms (D steps each) rather than testing every
        position against every subset: per group, how many positions' candidate masks lie inside each S
        (sums over subsets), and, per value d, the intersection of the Hall sets holding d (bitwise and over
        supersets). A position loses d exactly when its mask does not lie inside that intersection."""
        b, length, size = candidates.shape
        groups, n_subsets = self.hall_sets.shape
        masks = (candidates.long() * self.value_bits).sum(-1)  # [B, L]
        cell_masks = masks[:, self.hall_positions]  # [B, Gx, P]
        inside = torch.zeros(b, groups, n_subsets, dtype=torch.long, device=candidates.device)
        inside.scatter_add_(2, cell_masks, self.hall_real.long().expand(b, -1, -1))  # positions with mask S
        for bit in range(size):  # ... then with mask inside S
            halves = inside.view(b, groups, n_subsets >> (bit + 1), 2, 1 << bit)
            halves[:, :, :, 1] += halves[:, :, :, 0]
        hall = self.hall_sets & (inside == self.subset_size)
        overfull = (self.hall_sets & (inside > self.subset_size)).any(-1)  # [B, Gx]
        every_value = n_subsets - 1
        common = torch.where(hall, torch.arange(n_subsets, device=candidates.device), every_value)
        for bit in range(size):  # common[T]: the values every Hall set holding T holds
            halves = common.view(b, groups, n_subsets >> (bit + 1), 2, 1 << bit)
            halves[:, :, :, 0] &= halves[:, :, :, 1]
        outside = every_value & ~common[:, :, self.value_bits]  # [B, Gx, D]
        lose = (cell_masks[:, :, :, None] & outside[:, :, None, :]) != 0  # [B, Gx, P, D]
        lose &= self.hall_real[:, :, None]
        removed = torch.zeros(b, length, size, device=candidates.device)
        index = self.hall_positions.reshape(1, -1, 1).expand(b, -1, size)
        removed.scatter_add_(1, index, lose.flatten(1, 2).float())
        dead = torch.zeros(b, length, device=candidates.device)
        dead.scatter_add_(1, self.hall_positions.reshape(1, -1).expand(b, -1),
                          (overfull[:, :, None] & self.hall_real).flatten(1).float())
        return candidates & (removed < 0.5), dead > 0.5

    @property
    def batch_size(self) -> int:
        return self.pins.shape[0]

    @property
    def canvas_shape(self) -> tuple[int, int]:
        """(positions, vocabulary) the constraints were declared for: the sampler refuses another model's."""
        return self.pins.shape[1], self.vocab

    @property
    def needs_kept_tokens(self) -> bool:
        return self.dead_end in ("restart", "backtrack")

    def select(self, rows: Tensor) -> "CompiledConstraints":
        """The constraints of the given canvases (indices into this batch)."""
        out = object.__new__(CompiledConstraints)
        out.__dict__.update(self.__dict__)
        out.pins, out.pin_mask = self.pins[rows], self.pin_mask[rows]
        if self.static_allowed is not None:
            out.static_allowed = self.static_allowed[rows]
        out.has_outside_option = self.has_outside_option[rows]
        out.rows = self.rows[rows]
        out.trail = self.trail.select(rows)
        out.tabu_until, out.clock = self.tabu_until[rows], self.clock[rows]
        out._before = None if self._before is None else tuple(t[rows] for t in self._before)
        return out

    # ------------------------------------------------------------------ shared tensor pieces
    def _domain_onehot(self, canvas: Tensor, where: Tensor) -> Tensor:
        """[B, L, D] one-hot of canvas tokens that are in the all-different domain, at `where`."""
        index = self.domain_index[canvas]
        keep = where & (index >= 0)
        onehot = torch.zeros(*canvas.shape, self.domain.numel(), device=canvas.device)
        onehot.scatter_(2, index.clamp(min=0).unsqueeze(2), keep.unsqueeze(2).float())
        return onehot

    def _taken(self, onehot: Tensor) -> Tensor:
        """[B, L, D]: a peer holds value d (onehot [B, L, D] of what the positions hold)."""
        return torch.einsum("lmd,bmd->bld", self.peers, onehot) > 0.5

    def _clashes(self, canvas: Tensor, where: Tensor) -> Tensor:
        """[B, L]: positions in `where` whose value a peer in `where` also holds."""
        onehot = self._domain_onehot(canvas, where)
        return (self._taken(onehot) & (onehot > 0.5)).any(-1)

    def _check_rows(self, rows: int) -> None:
        if rows != self.batch_size:
            raise ValueError(f"constraints were compiled for {self.batch_size} canvases, got {rows}")

    def _propagate(self, canvas: Tensor, settled: Tensor) -> tuple[Tensor, Tensor]:
        """What the settled positions force, to a fixpoint: a position with one candidate value left takes it
        and its peers lose it; in an exact group a value with one possible position left goes there.

        Returns (candidates [B, L, D], dead [B, L]): positions with no candidate left, or in an exact group
        that has no place left for one of its values. Loops over propagation rounds, never over positions."""
        b, length = canvas.shape
        candidates = self.own_values.expand(b, length, -1)
        if self.static_allowed is not None:
            candidates = candidates & self.static_allowed[..., self.domain]
        held = self._domain_onehot(canvas, settled) > 0.5
        open_values = (self.trail.ruled_at < 0) & (self.tabu_until <= self.clock[:, None, None])
        candidates = torch.where(settled.unsqueeze(2), held, candidates & open_values)
        if self.dead_end == "repair":
            legal = candidates & ~self._taken(held.float())  # what the settled tokens alone leave each position
        holds = settled & held.any(-1)  # settled on a value: its peers lose it, outside options or not
        must_choose = self.in_groups & ~self.has_outside_option & ~(settled & ~holds)
        dead = torch.zeros_like(settled)
        for _ in range(length + 1):
            decided = candidates & (holds | (must_choose & (candidates.sum(-1) == 1))).unsqueeze(2)
            narrowed = candidates & ~self._taken(decided.float())
            if self.exact_membership.shape[0]:
                places = torch.einsum("gl,bld->bgd", self.exact_membership, narrowed.float()) * self.exact_values
                only_place = ((places > 0.5) & (places < 1.5)).float()
                forced = (torch.einsum("gl,bgd->bld", self.exact_membership, only_place) > 0.5) & narrowed
                dead |= forced.sum(-1) > 1  # two values that each have nowhere else to go
                narrowed = torch.where(forced.any(-1, keepdim=True), forced, narrowed)
            if self.wide_membership.shape[0]:
                narrowed, short = self._wide_step(narrowed, must_choose & ~holds)
                dead |= short
            unchanged = torch.equal(narrowed, candidates)  # one host sync a round (two in a round of Hall sets)
            if unchanged and self.hall:  # singles are done: try larger Hall sets
                narrowed, overfull = self._hall_step(narrowed)
                dead |= overfull
                unchanged = torch.equal(narrowed, candidates)
            if unchanged:
                break
            candidates = narrowed
        dead |= must_choose & ~candidates.any(-1)
        if self.exact_membership.shape[0]:
            places = torch.einsum("gl,bld->bgd", self.exact_membership, candidates.float())
            hole = ((places < 0.5) & (self.exact_values > 0.5)).any(-1).float()  # [B, Gx]
            dead |= torch.einsum("gl,bg->bl", self.exact_membership, hole) > 0.5
        if self.dead_end == "repair":
            # Local search keeps a partial assignment that is only legal, not provably completable: a position
            # that propagation leaves empty may still take a value no settled peer holds.
            empty = must_choose & ~settled & ~candidates.any(-1)
            candidates = torch.where(empty.unsqueeze(2), legal, candidates)
        return candidates, dead

    def _wide_step(self, candidates: Tensor, free: Tensor) -> tuple[Tensor, Tensor]:
        """Hall's condition on each wide group as a whole. Its free positions need as many candidate values
        between them as there are of them, or it is a dead end (a triangle left with two colours: no single
        position is stuck yet). With exactly as many, every such value is used once, so a value with one free
        place left goes there. Only free positions whose candidates all lie in the group's values count (another
        group's value would let one step aside). Returns (narrowed candidates [B, L, D], dead [B, L])."""
        # Members that count: [Gw, L] when no group has another value to step aside to (colouring, routes), else
        # [B, Gw, L] (per canvas: those with no candidate outside the group's values). Either way, only free ones.
        if self.wide_outside is None:
            bound, per_canvas = self.wide_membership, ""
        else:
            beyond = candidates.float() @ self.wide_outside  # [B, L, Gw]
            bound, per_canvas = self.wide_membership * (beyond < 0.5).transpose(1, 2), "b"
        open_candidates = (candidates & free.unsqueeze(2)).float()
        places = torch.einsum(f"{per_canvas}gl,bld->bgd", bound, open_candidates) * self.wide_values  # [B, Gw, D]
        values = (places > 0.5).sum(-1)
        positions = torch.einsum(f"{per_canvas}gl,bl->bg", bound, free.float()).round().long()
        short = values < positions
        dead = (torch.einsum(f"{per_canvas}gl,bg->bl", bound, short.float()) > 0.5) & free
        only_place = ((places > 0.5) & (places < 1.5) & (values == positions).unsqueeze(2)).float()
        forced = (torch.einsum(f"{per_canvas}gl,bgd->bld", bound, only_place) > 0.5) & candidates & free.unsqueeze(2)
        dead |= forced.sum(-1) > 1
        return torch.where(forced.any(-1, keepdim=True), forced, candidates), dead

    # ------------------------------------------------------------------ Guidance hooks
    def pinned(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        self._check_rows(batch)
        return (self.pin_mask.clone(), self.pins.clamp(min=0)) if self.has_pins else None

    def allowed(self, canvas: Tensor, settled: Tensor) -> Tensor | None:
        self._check_rows(canvas.shape[0])
        allowed = self.static_allowed
        if self.has_groups:
            settled = settled | self.pin_mask
            candidates, dead = self._propagate(canvas, settled)
            self._before = (settled, candidates, dead.any(-1))
            forbidden = torch.zeros(*canvas.shape, self.vocab, dtype=torch.bool, device=canvas.device)
            forbidden[..., self.domain] = self.own_values & ~candidates
            allowed = ~forbidden if allowed is None else allowed & ~forbidden
        if self.has_pins:  # a pinned position allows its pin alone
            pin_mask, pins = self.pin_mask.unsqueeze(2), self.pins.clamp(min=0).unsqueeze(2)
            if allowed is None:
                allowed = torch.ones(*canvas.shape, self.vocab, dtype=torch.bool, device=canvas.device)
            allowed = allowed.masked_fill(pin_mask, False).scatter_(2, pins, pin_mask | allowed.gather(2, pins))
        # a copy: a caller that edits the mask it gets must not change what `verify` accepts
        return allowed.clone() if allowed is not None and allowed is self.static_allowed else allowed

    def settleable(self, canvas: Tensor, settled: Tensor) -> Tensor | None:
        if not self.most_constrained_first or self._before is None:
            return None
        _, candidates, _ = self._before  # this pass's propagation, from `allowed`
        free = self.in_groups & ~settled & ~self.pin_mask
        count = candidates.sum(-1)
        waiting = (count == 0) if self.dead_end == "repair" else torch.zeros_like(free)
        count = count.masked_fill(~free | waiting, candidates.shape[-1] + 1)
        fewest = free & (count == count.min(-1, keepdim=True).values)
        # Never two peers in one pass: both may take the same value, clash and be re-noised together, and a
        # sharp model repeats that forever (miles500 at 20 colours stalled at 69 of 128 nodes). Positions in no
        # group have no order to keep: they may settle any time.
        return (fewest & ~((fewest.float() @ self.earlier_peers.T) > 0.5)) | ~self.in_groups

    def violations(self, canvas: Tensor, accepted: Tensor) -> Tensor | None:
        """Accepted tokens outside their allowed set or clashing with a peer, and what the dead-end policy
        re-noises when the settled tokens leave some position without a candidate: `release` -- the settled
        peers of the dead positions; `repair` -- a local repair (see `_repair`); `restart` / `backtrack` -- see
        `_search_step`."""
        self._check_rows(canvas.shape[0])
        bad = torch.zeros_like(accepted)
        if self.static_allowed is not None:
            bad |= ~self.static_allowed.gather(2, canvas.unsqueeze(2)).squeeze(2)
        if self.has_groups:
            settled = accepted | self.pin_mask
            bad |= self._clashes(canvas, settled)
            settled &= ~bad
            if self.dead_end in ("restart", "backtrack") and self._before is not None:
                bad |= self._search_step(canvas, settled)
            else:
                candidates, dead = self._propagate(canvas, settled)
                if self.dead_end == "repair":
                    bad |= self._repair(canvas, settled, candidates, dead)
                else:
                    bad |= self._peers_of(dead) & settled
            self.clock = self.clock + 1
        for predicate in self.predicates:
            if predicate.locate is not None:
                bad |= predicate.locate(canvas, accepted, self.rows)
        return bad & accepted & ~self.pin_mask  # pins are never blamed

    def _repair(self, canvas: Tensor, settled: Tensor, candidates: Tensor, dead: Tensor) -> Tensor:
        """The `repair` policy, a local search after PartialCol (Bloechliger & Zufferey 2008). Positions left with
        no candidate wait while the others settle. Each pass, a waiting position may take back the value its
        settled peers hold least often (among values it is not barred from); the canvas makes its cheapest such
        moves, on positions no two of which are peers, and re-noises only those holders: the value then reaches
        the waiting position as its last candidate. A holder may not retake that value for (0.6 x (waiting
        positions) + 0-9) / 2 passes, so repairs do not undo each other at once. A dead end with no move and nothing
        free to settle releases every settled peer of its dead positions. Returns the positions to re-noise."""
        free = self.in_groups & ~settled & ~self.pin_mask
        waiting = free & ~self.has_outside_option & ~candidates.any(-1)
        held = self._domain_onehot(canvas, settled)  # [B, L, D]
        holders = torch.einsum("lmd,bmd->bld", self.peers, held)  # [B, L, D] settled peers holding d
        usable = self.own_values
        if self.static_allowed is not None:
            usable = usable & self.static_allowed[..., self.domain]
        barred = self.tabu_until > self.clock[:, None, None]
        noise = torch.rand(holders.shape, generator=self.generator, device=holders.device)
        cost = holders + barred * float(holders.shape[1]) + 0.5 * noise  # ties in random order
        cost = cost.masked_fill(~usable | (holders < 0.5), float("inf"))
        own_best, best = cost.min(-1)  # [B, L]: each position's cheapest value
        own_best = own_best.masked_fill(~waiting, float("inf")).floor()
        # The cheapest moves of the canvas, on positions no two of which are peers (their releases stay apart)
        move = torch.isfinite(own_best) & (own_best == own_best.min(-1, keepdim=True).values)
        move &= ~((move.float() @ self.earlier_peers.T) > 0.5)
        take = torch.zeros_like(held).scatter_(2, best.unsqueeze(2), 1.0) * move.unsqueeze(2)
        release = (torch.einsum("lmd,bld->bmd", self.peers, take) > 0.5) & (held > 0.5)  # [B, L, D]
        # counted in passes: a pass makes about two moves
        tenure = tabu_tenure(waiting.sum(-1), self.generator) // 2
        self.tabu_until = torch.where(release, (self.clock + 1 + tenure)[:, None, None], self.tabu_until)
        stuck = dead.any(-1) & ~(free & candidates.any(-1)).any(-1) & ~move.any(-1)
        return (release.any(-1) | (self._peers_of(dead) & stuck.unsqueeze(1))) & settled

    def _peers_of(self, flags: Tensor) -> Tensor:
        """[B, L]: positions sharing a group with some flagged position."""
        return torch.einsum("lm,bm->bl", self.neighbours, flags.float()) > 0.5

    def _search_step(self, canvas: Tensor, settled: Tensor) -> Tensor:
        """Restart / backtrack search over guesses, all canvases at once. Returns the positions to re-noise.

        A guess is a newly settled position that had more than one candidate; a canvas commits at most one per
        pass (the most constrained), and what it forces settles on later passes at the depth it reached. At a
        dead end at depth k (k guesses on the path), `restart` goes back to depth 0 and `backtrack` to depth
        k-1 (or to 0 once its patience runs out). Whenever it goes back exactly one level, the k-th guess is
        proved wrong given the guesses before it, and its value is ruled out at that position for as long as
        they stand."""
        settled_before, candidates_before, dead_before = self._before
        self._before = None
        trail, length = self.trail, settled.shape[1]
        new = settled & ~settled_before
        count = candidates_before.sum(-1) + self.has_outside_option  # an outside token is a choice too
        guess = new & (count > 1)
        # One guess per pass, the most constrained. (Letting every confident guess of a pass stack up at
        # consecutive depths cost Sudoku-magictour 49/50 -> 29/50 solved: wrong stacks unwind one per pass.)
        key = torch.where(guess, count * length + torch.arange(length, device=canvas.device), count.new_tensor(2 ** 40))
        first = key.argmin(-1, keepdim=True)
        bad = guess.scatter(1, first, False) | (new & dead_before.unsqueeze(1))  # nothing new on a dead state
        new &= ~bad
        guess &= ~bad
        settled = settled & ~bad
        depth = trail.depth + guess.any(-1)
        trail.settled_at = torch.where(new, torch.where(guess, depth[:, None], trail.depth[:, None]), trail.settled_at)
        trail.guess_at = (trail.guess_at & ~new) | guess
        trail.depth = depth
        _, dead = self._propagate(canvas, settled)
        dead_rows = dead.any(-1) | dead_before
        trail.dead_ends += dead_rows
        self.refuted[self.rows[dead_rows & (depth == 0)]] = True  # only pins, forced tokens and proved facts
        # Depth-first search has heavy tails (an early wrong guess buried under many right ones): backtrack
        # also restarts, after a patience that doubles each time; what was proved at depth 0 is kept.
        give_up = trail.dead_ends >= trail.patience
        back = torch.where(give_up, 0, (depth - 1).clamp(min=0))
        trail.patience = torch.where(dead_rows & give_up, trail.patience * 2, trail.patience)
        trail.dead_ends = trail.dead_ends.masked_fill(dead_rows & give_up, 0)
        target = torch.zeros_like(depth) if self.dead_end == "restart" else back
        target = torch.where(dead_rows, target, depth)
        trail.ruled_at = trail.ruled_at.masked_fill(trail.ruled_at > target[:, None, None], -1)
        proved = dead_rows & (depth >= 1) & (target == depth - 1)
        last = settled & trail.guess_at & (trail.settled_at == depth.unsqueeze(1)) & proved.unsqueeze(1)
        wrong = self._domain_onehot(canvas, last) > 0.5
        trail.ruled_at = torch.where(wrong, target[:, None, None], trail.ruled_at)
        trail.ruled_at = self._share_facts(trail.ruled_at)
        bad |= settled & (trail.settled_at > target.unsqueeze(1))
        trail.depth = target
        return bad

    def _share_facts(self, ruled_at: Tensor) -> Tensor:
        """Values ruled out at depth 0 hold for the instance itself, not just one search path (depth 0 is the
        pins and what they force), so parallel canvases of one declared row pool them."""
        shared = any_sibling((ruled_at == 0).flatten(1), self.rows).view_as(ruled_at)
        return torch.where(shared & (ruled_at < 0), 0, ruled_at)

    def start(self) -> None:
        if self._searched[0]:
            raise ValueError("these compiled constraints keep the state of the search that used them (its guesses, "
                             "refuted rows and random stream): compile them again (ConstraintModel.compile) for "
                             "each generate call")
        self._searched[0] = True

    def retire(self, solved: Tensor) -> Tensor:
        """Once one canvas of a declared row is solved, its parallel siblings stop; so do all canvases of a
        refuted row."""
        return any_sibling(solved, self.rows) | self.refuted[self.rows]

    def verify(self, canvas: Tensor) -> Tensor:
        self._check_rows(canvas.shape[0])
        ok = (~self.pin_mask | (canvas == self.pins)).all(-1)
        if self.static_allowed is not None:
            ok &= self.static_allowed.gather(2, canvas.unsqueeze(2)).squeeze(2).all(-1)
        if self.has_groups:
            ok &= ~self._clashes(canvas, torch.ones_like(canvas, dtype=torch.bool)).any(-1)
        for predicate in self.predicates:
            held = predicate.verify(canvas, self.rows)
            if not isinstance(held, Tensor) or held.dtype != torch.bool or held.shape != ok.shape:
                raise TypeError(f"predicate {predicate.name!r}: verify must return a bool tensor "
                                f"{list(ok.shape)} (one flag per canvas), got "
                                f"{getattr(held, 'dtype', type(held).__name__)} {list(getattr(held, 'shape', []))}")
            ok &= held
        return ok
