"""Declarative canvas constraints, compiled into batched tensor ops the sampler applies every pass.

Build a `ConstraintModel` the way one builds a CP-SAT model -- declare, then compile:

    cm = ConstraintModel(canvas_length=81, vocab_size=14, batch_size=len(puzzles))
    cm.pin(cells, tokens, row=i)                  # fixed tokens (clues)
    cm.allow(range(81), digit_tokens)             # per-position allowed sets
    for unit in units:
        cm.all_different(unit, digit_tokens)      # no token of `values` twice in the group
    cm.add_predicate("sorted", verify=fn)         # any batched check over whole canvases (and their rows)
    guidance = cm.compile()                       # a `core.Guidance` for `generate`

`row=None` applies a declaration to every row of the batch. The compiled object answers the sampler's three
hooks with dense tensor ops over [B, L, V] (no loops over positions), so `vocab_size` should be a task
vocabulary; all-different work happens in the smaller space of the declared values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.sampler import Guidance


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
        if canvas_length <= 0 or vocab_size <= 0 or batch_size <= 0:
            raise ValueError("canvas_length, vocab_size and batch_size must be positive")
        self.length, self.vocab, self.batch = canvas_length, vocab_size, batch_size
        self.pins = torch.full((batch_size, canvas_length), -1, dtype=torch.long)
        self.allowed: Tensor | None = None  # [B, L, V] bool, allocated by the first `allow`
        self.groups: list[tuple[list[int], list[int]]] = []
        self.predicates: list[Predicate] = []

    # ------------------------------------------------------------------ declarations
    def pin(self, positions: Iterable[int], tokens: Iterable[int], row: int | None = None) -> "ConstraintModel":
        positions, tokens = self._positions(positions), self._tokens(tokens)
        if len(positions) != len(tokens):
            raise ValueError(f"pin: {len(positions)} positions but {len(tokens)} tokens")
        if not positions:
            return self
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

    def all_different(self, positions: Iterable[int], values: Iterable[int]) -> "ConstraintModel":
        """No token from `values` may appear twice among `positions` (in every row)."""
        positions, values = self._positions(positions), self._tokens(values)
        if len(set(positions)) != len(positions):
            raise ValueError("all_different: repeated position")
        self.groups.append((positions, values))
        return self

    def add_predicate(self, name: str, verify: Callable[[Tensor, Tensor], Tensor],
                      locate: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None) -> "ConstraintModel":
        self.predicates.append(Predicate(name, verify, locate))
        return self

    # ------------------------------------------------------------------ compile
    def compile(self, device: str | torch.device = "cpu") -> "CompiledConstraints":
        pinned = self.pins >= 0
        if self.allowed is not None:
            pin_ok = self.allowed.gather(2, self.pins.clamp(min=0).unsqueeze(2)).squeeze(2) | ~pinned
            if not pin_ok.all():
                row, pos = (~pin_ok).nonzero()[0].tolist()
                raise ValueError(f"row {row}: pinned token at position {pos} is not in its allowed set")
            empty = ~self.allowed.any(-1)
            if empty.any():
                row, pos = empty.nonzero()[0].tolist()
                raise ValueError(f"row {row}: position {pos} has an empty allowed set")
        return CompiledConstraints(self, torch.device(device))

    # ------------------------------------------------------------------ validation helpers
    def _positions(self, positions: Iterable[int]) -> list[int]:
        out = [int(p) for p in positions]
        bad = [p for p in out if not 0 <= p < self.length]
        if bad:
            raise ValueError(f"position(s) {bad[:5]} outside the canvas of length {self.length}")
        return out

    def _tokens(self, tokens: Iterable[int]) -> list[int]:
        out = [int(t) for t in tokens]
        bad = [t for t in out if not 0 <= t < self.vocab]
        if bad:
            raise ValueError(f"token(s) {bad[:5]} outside the vocabulary of size {self.vocab}")
        return out

    def _rows(self, row: int | None) -> Tensor:
        if row is None:
            return torch.arange(self.batch)
        if not 0 <= row < self.batch:
            raise ValueError(f"row {row} outside the batch of size {self.batch}")
        return torch.tensor([row])


class CompiledConstraints(Guidance):
    """Constraint tensors for a batch of canvases; `repeat(n)` gives n parallel canvases per row."""

    def __init__(self, model: ConstraintModel, device: torch.device):
        self.device = device
        self.pins = model.pins.to(device)
        self.static_allowed = None if model.allowed is None else model.allowed.to(device)
        self.predicates = list(model.predicates)
        self.rows = torch.arange(model.batch, device=device)  # declared row of each canvas
        self.vocab = model.vocab
        # All-different groups over the union of their value sets ("domain", D tokens).
        domain = sorted({v for _, values in model.groups for v in values})
        self.domain = torch.tensor(domain, dtype=torch.long, device=device)
        self.domain_index = torch.full((model.vocab,), -1, dtype=torch.long, device=device)
        self.domain_index[self.domain] = torch.arange(len(domain), device=device)
        self.membership = torch.zeros(len(model.groups), model.length, device=device)  # [G, L]
        self.group_values = torch.zeros(len(model.groups), len(domain), device=device)  # [G, D]
        for g, (positions, values) in enumerate(model.groups):
            self.membership[g, positions] = 1.0
            self.group_values[g, self.domain_index[torch.tensor(values, device=device)]] = 1.0
        self.has_outside_option = None  # [B, L]: the static set holds a token outside every group's values
        if self.static_allowed is not None:
            outside = self.static_allowed.clone()
            outside[..., self.domain] = False
            self.has_outside_option = outside.any(-1)

    @property
    def batch_size(self) -> int:
        return self.pins.shape[0]

    def repeat(self, n: int) -> "CompiledConstraints":
        """Each row repeated n times in a row (parallel restarts of the same instance)."""
        return self.select(torch.arange(self.batch_size, device=self.device).repeat_interleave(n))

    def select(self, rows: Tensor) -> "CompiledConstraints":
        """The constraints of the given canvases (indices into this batch)."""
        out = object.__new__(CompiledConstraints)
        out.__dict__.update(self.__dict__)
        out.pins = self.pins[rows]
        if self.static_allowed is not None:
            out.static_allowed = self.static_allowed[rows]
            out.has_outside_option = self.has_outside_option[rows]
        out.rows = self.rows[rows]
        return out

    # ------------------------------------------------------------------ shared tensor pieces
    def _domain_onehot(self, canvas: Tensor, where: Tensor) -> Tensor:
        """[B, L, D] one-hot of canvas tokens that are in the all-different domain, at `where`."""
        index = self.domain_index[canvas]
        keep = where & (index >= 0)
        onehot = torch.zeros(*canvas.shape, self.domain.numel(), device=canvas.device)
        onehot.scatter_(2, index.clamp(min=0).unsqueeze(2), keep.unsqueeze(2).float())
        return onehot

    def _group_counts(self, onehot: Tensor) -> Tensor:
        """[B, G, D]: how often each domain token occurs in each group (only the group's own values)."""
        return torch.einsum("gl,bld->bgd", self.membership, onehot) * self.group_values

    def _check_rows(self, canvas: Tensor) -> None:
        if canvas.shape[0] != self.batch_size:
            raise ValueError(f"constraints were compiled for {self.batch_size} canvases, got {canvas.shape[0]}")

    def _wiped_out_peers(self, counts: Tensor, settled: Tensor) -> Tensor:
        """Settled positions sharing a group with an unsettled position whose every candidate value is held
        by a peer. Releasing them is what lets the search back out of a dead end instead of sampling
        against it forever."""
        held = torch.einsum("gl,bgd->bld", self.membership, counts) > 0.5  # [B, L, D]
        candidates = torch.einsum("gl,gd->ld", self.membership, self.group_values) > 0.5  # values in its groups
        if self.static_allowed is not None:
            candidates = candidates & self.static_allowed[..., self.domain]
        in_groups = self.membership.sum(0) > 0
        dead = ~(candidates & ~held).any(-1) & ~settled & in_groups  # [B, L]
        if self.has_outside_option is not None:  # it may still take a token outside the groups' values
            dead &= ~self.has_outside_option
        dead_groups = torch.einsum("gl,bl->bg", self.membership, dead.float()) > 0.5
        return torch.einsum("gl,bg->bl", self.membership, dead_groups.float()) > 0.5

    # ------------------------------------------------------------------ Guidance hooks
    def pinned(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        if batch != self.batch_size:
            raise ValueError(f"constraints were compiled for {self.batch_size} canvases, got {batch}")
        mask = self.pins >= 0
        return (mask, self.pins.clamp(min=0)) if mask.any() else None

    def allowed(self, canvas: Tensor, settled: Tensor) -> Tensor | None:
        self._check_rows(canvas)
        allowed = self.static_allowed
        if self.membership.shape[0]:
            onehot = self._domain_onehot(canvas, settled)
            peers = torch.einsum("gl,bgd->bld", self.membership, self._group_counts(onehot))
            own = torch.einsum("gl,gd->ld", self.membership, self.group_values) * onehot
            taken = (peers - own) > 0.5  # a peer in some shared group already holds this value
            forbidden = torch.zeros(*canvas.shape, self.vocab, dtype=torch.bool, device=canvas.device)
            forbidden[..., self.domain] = taken
            allowed = ~forbidden if allowed is None else allowed & ~forbidden
        pinned = self.pins >= 0
        if pinned.any():
            only_pin = torch.nn.functional.one_hot(self.pins.clamp(min=0), self.vocab).bool()
            base = torch.ones_like(only_pin) if allowed is None else allowed
            allowed = torch.where(pinned.unsqueeze(2), only_pin, base)
        return allowed

    def violations(self, canvas: Tensor, accepted: Tensor) -> Tensor | None:
        self._check_rows(canvas)
        bad = torch.zeros_like(accepted)
        if self.static_allowed is not None:
            bad |= ~self.static_allowed.gather(2, canvas.unsqueeze(2)).squeeze(2)
        if self.membership.shape[0]:
            settled = accepted | (self.pins >= 0)
            onehot = self._domain_onehot(canvas, settled)
            counts = self._group_counts(onehot)  # [B, G, D]
            clash = (counts > 1.5).float()
            bad |= (torch.einsum("gl,bgd->bld", self.membership, clash) * onehot).sum(-1) > 0
            bad |= self._wiped_out_peers(counts, settled)
        for predicate in self.predicates:
            if predicate.locate is not None:
                bad |= predicate.locate(canvas, accepted, self.rows)
        return bad & accepted & (self.pins < 0)  # pins are never blamed

    def retire(self, solved: Tensor) -> Tensor:
        """Once one canvas of a declared row is solved, its parallel siblings stop."""
        count = torch.zeros(int(self.rows.max()) + 1, dtype=torch.long, device=solved.device)
        return count.index_add_(0, self.rows, solved.long())[self.rows] > 0

    def verify(self, canvas: Tensor) -> Tensor:
        self._check_rows(canvas)
        ok = ((self.pins < 0) | (canvas == self.pins)).all(-1)
        if self.static_allowed is not None:
            ok &= self.static_allowed.gather(2, canvas.unsqueeze(2)).squeeze(2).all(-1)
        if self.membership.shape[0]:
            everywhere = torch.ones_like(canvas, dtype=torch.bool)
            ok &= (self._group_counts(self._domain_onehot(canvas, everywhere)) < 1.5).all(-1).all(-1)
        for predicate in self.predicates:
            ok &= predicate.verify(canvas, self.rows)
        return ok
