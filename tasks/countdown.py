"""Countdown on the canvas: the steps `a+b=c,...` one character a token, then EOS.

Every pass the leading run of settled tokens is read as a prefix of a solution: each operand must be a number
still available, every result must be the exact value of its step (so once `a op b =` is settled, the result
digits are the only tokens allowed), the last step must produce the target, and EOS may only follow it.
Propagation stays within the step being typed: a character is allowed only if the step can still be finished
from it (with two numbers left, finishing means the last step can make the target), so a pool of three from
which no step leaves a good pair is found dead as soon as its step begins. Dead pools are exact facts: every
canvas of the instance learns them and never again takes a step into one. The first faulty token and
everything settled after it are re-noised; a dead end cuts back to the step that led into it (further on
repeats). The steps open to each pool are enumerated once (every prefix with the characters that may follow
it), so reading a prefix is a walk through dictionaries. A canvas is verified when its steps replay exactly
(`_solved`); the solver checks each answer again with sympy's exact integers (`verify_steps`; the two share
only the reading of a step's text).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence, Set
from functools import lru_cache
from itertools import permutations
from numbers import Integral
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..core import Guidance, check_device
from ..core.guidance import any_sibling
from .graph_data import CHAR_ID, CHARACTERS, EOS, MAX_COUNTDOWN_NUMBERS, OPERATORS, PAD, VOCAB, apply

END = "$"  # EOS in prefix strings
STEP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")


class CountdownError(ValueError):
    """An instance the solver cannot take."""


def whole_numbers(numbers: Sequence[int], target: int) -> tuple[list[int], int]:
    """(numbers, target) as ints; anything not of a whole-number type (1.5, 86.0, '7', True) is refused, never
    rounded, as `arguments.whole` refuses it for every other count the API takes."""
    if isinstance(numbers, (str, bytes)):
        raise CountdownError(f"numbers must be a sequence of whole numbers, got the text {numbers!r} "
                             "(parse_instance reads text)")
    if not hasattr(numbers, "__iter__") or isinstance(numbers, (Set, Mapping)):  # a set drops repeats
        raise CountdownError(f"numbers must be a sequence of whole numbers (a list or tuple; each used once), got "
                             f"{numbers!r}")
    values = list(numbers)
    for value in [*values, target]:
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise CountdownError(f"numbers and target must be whole numbers, got {value!r}")
    return [int(v) for v in values], int(target)


def check_instance(numbers: list[int], target: int) -> None:
    if not 2 <= len(numbers) <= MAX_COUNTDOWN_NUMBERS:
        raise CountdownError(f"need 2..{MAX_COUNTDOWN_NUMBERS} numbers, got {len(numbers)}")
    if small := [n for n in [*numbers, target] if n < 1]:
        raise CountdownError(f"numbers and target must be positive integers, got {small[0]}")
    if large := [n for n in [*numbers, target] if n > 999]:
        raise CountdownError(f"numbers and target must be at most 999 (the model's prompt), got {large[0]}")


def parse_instance(text: str, target: int | None = None) -> tuple[list[int], int]:
    """'86 28 13 31' with `target`, or the public format '86,28,13,31,96' (the last number is the target)."""
    fields = re.split(r"\s*,\s*|\s+", text.strip()) if text.strip() else []
    if "" in fields:  # a number left out: reading on would solve another instance
        raise CountdownError(f"an empty number field (two commas in a row, or one at an end) in {text!r}")
    if not fields or not all(re.fullmatch(r"[0-9]+", f) for f in fields):
        raise CountdownError(f"expected whole numbers separated by spaces or commas, got {text!r}")
    if any(len(f.lstrip("0")) > 3 for f in fields):  # before int(): Python refuses to read over 4,300 digits
        raise CountdownError("numbers and target must be at most 999 (the model's prompt)")
    values = [int(f) for f in fields]
    if target is None:
        if len(values) < 3:
            raise CountdownError(f"expected numbers then the target, got {text!r}")
        values, target = values[:-1], values[-1]
    values, target = whole_numbers(values, target)  # a target given apart (a JSON field) may be anything
    check_instance(values, target)
    return values, target


class Steps(NamedTuple):
    """The steps that can be typed next from one pool: `options` maps every proper prefix of a step (from '' to
    all but its terminator) to the characters that may follow it; `after` maps every whole step, its terminator
    included, to the sorted pool it leaves."""
    options: dict[str, frozenset[str]]
    after: dict[str, tuple[int, ...]]


@lru_cache(maxsize=4096)  # a table of four to six numbers' steps takes 15-40 KiB
def next_steps(pool: tuple[int, ...], target: int) -> Steps:
    """Every step that can be finished from the sorted `pool`: two of its numbers, an exact result, then ','.
    A step that would leave two numbers that cannot make the target is left out; from the last two numbers only
    a step that makes the target counts, and EOS ends it."""
    last = len(pool) == 2
    options: dict[str, set[str]] = {}
    after: dict[str, tuple[int, ...]] = {}
    for i, j in permutations(range(len(pool)), 2):
        rest = [x for k, x in enumerate(pool) if k not in (i, j)]
        for op in OPERATORS:
            result = apply(pool[i], op, pool[j])
            if result is None:
                continue
            left = tuple(sorted([*rest, result]))
            if not (result == target if last else len(left) > 2 or _reachable(left, target)):
                continue
            step = f"{pool[i]}{op}{pool[j]}={result}{END if last else ','}"
            after[step] = left
            for k in range(len(step)):
                options.setdefault(step[:k], set()).add(step[k])
    return Steps({prefix: _interned(frozenset(chars)) for prefix, chars in options.items()}, after)


@lru_cache(maxsize=None)
def _interned(chars: frozenset[str]) -> frozenset[str]:
    """One shared object per character set (a few hundred exist), so the tables hold references, not copies."""
    return chars


@lru_cache(maxsize=200_000)
def _walk(numbers: tuple[int, ...], target: int, text: str) -> tuple[int, tuple[int, ...], int]:
    """(length of the longest valid prefix of `text`, the pool its last step starts from, where that step starts).
    Valid means every whole step is one of `next_steps` of the pool before it and the partial step is a prefix
    of one."""
    pool, start, valid = tuple(sorted(numbers)), 0, 0
    steps = next_steps(pool, target)
    while valid < len(text) and text[valid] in steps.options.get(text[start:valid], ()):
        valid += 1
        if text[start:valid] in steps.after:
            pool, start = steps.after[text[start:valid]], valid
            steps = next_steps(pool, target)
    return valid, pool, start


def prefix_state(numbers: tuple[int, ...], target: int, text: str) -> tuple[int, frozenset[str]]:
    """(length of the longest valid prefix of `text`, characters that may extend that prefix).

    Valid means every complete step uses available numbers and is exact, the partial step can still be
    finished, and the last step (when the pool is down to two numbers) yields the target."""
    valid, pool, start = _walk(numbers, target, text)
    return valid, next_steps(pool, target).options.get(text[start:valid], frozenset())


def next_options(numbers: tuple[int, ...], target: int, text: str) -> frozenset[str]:
    """Characters after the valid prefix `text` from which the step being typed can still be finished."""
    valid, options = prefix_state(numbers, target, text)
    return options if valid == len(text) else frozenset()


@lru_cache(maxsize=200_000)
def _forced(numbers: tuple[int, ...], target: int, text: str) -> str:
    """`text` followed through every forced character, up to the end of its step or the next free choice."""
    while not text.endswith((",", END)):
        options = next_options(numbers, target, text)
        if len(options) != 1:
            break
        text += next(iter(options))
    return text


def pool_after(numbers: tuple[int, ...], target: int, text: str) -> tuple[int, ...] | None:
    """The sorted numbers left after the steps of a valid prefix that ends with ','; else None."""
    valid, pool, _ = _walk(numbers, target, text)
    return pool if text.endswith(",") and valid == len(text) else None


def _step_parts(step: str) -> tuple[str, str, str, str] | None:
    """(a, op, b, c) of the text 'a op b = c', or None when it is not one ("07" is not how a number is written)."""
    match = STEP.fullmatch(step)
    if not match or any(len(x) > 1 and x[0] == "0" for x in (match[1], match[3], match[4])):
        return None
    return match[1], match[2], match[3], match[4]


def _step(pool: Counter, step: str) -> int | None:
    """Apply one complete step to `pool` (in place); None when it is not a legal exact step."""
    parts = _step_parts(step)
    if parts is None:
        return None
    a, op, b, c = int(parts[0]), parts[1], int(parts[2]), int(parts[3])
    pool[a] -= 1
    pool[b] -= 1
    if pool[a] < 0 or pool[b] < 0 or apply(a, op, b) != c:
        return None
    pool[c] += 1
    return c


def _solved(numbers: tuple[int, ...], target: int, text: str) -> bool:
    pool = Counter(numbers)
    results = [_step(pool, step) for step in text.split(",")] if text else []
    return (bool(results) and None not in results and sum(pool.values()) == 1 and results[-1] == target)


def verify_steps(numbers: list[int], target: int, steps: str) -> bool:
    """Independent exact check with sympy: each step's operands are available numbers (each used once), its
    result is exact, and the last result is the target with every number used."""
    import sympy

    pool = Counter(numbers)
    value = None
    parts = steps.split(",") if steps else []
    for part in parts:
        step = _step_parts(part)
        if step is None:
            return False
        a, b, c = (sympy.Integer(step[i]) for i in (0, 2, 3))
        exact = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b != 0 else sympy.zoo}[step[1]]
        if exact != c or not (exact.is_integer and exact >= 0):
            return False
        for x in (int(a), int(b)):
            pool[x] -= 1
            if pool[x] < 0:
                return False
        pool[int(c)] += 1
        value = c
    return value is not None and value == target and sum(pool.values()) == 1


@lru_cache(maxsize=100_000)
def _reachable(pool: tuple[int, ...], target: int) -> bool:
    if len(pool) == 1:
        return pool[0] == target
    for i, j in permutations(range(len(pool)), 2):
        rest = [x for k, x in enumerate(pool) if k not in (i, j)]
        for op in OPERATORS:
            c = apply(pool[i], op, pool[j])
            if c is not None and _reachable(tuple(sorted([*rest, c])), target):
                return True
    return False


def solvable(numbers: list[int], target: int) -> bool:
    """Exhaustive check: whether any order of steps reaches the target (the solver asks before sampling, so an
    impossible instance costs no passes)."""
    return _reachable(tuple(sorted(numbers)), target)


def infix(numbers: list[int], steps: str) -> str:
    """The steps as one infix expression over the original numbers, e.g. '(86+28)-(31-13)'."""
    names: dict[int, list[str]] = {}
    for n in numbers:
        names.setdefault(n, []).append(str(n))
    for part in steps.split(","):
        a, op, b, c = STEP.fullmatch(part).groups()
        left, right = names[int(a)].pop(), names[int(b)].pop()
        names.setdefault(int(c), []).append(f"({left}{op}{right})")
    expression = next(v[0] for v in names.values() if v)
    return expression[1:-1] if expression.startswith("(") and _balanced(expression[1:-1]) else expression


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


# ------------------------------------------------------------------------------------------ canvas
_ASCII = np.zeros(VOCAB, dtype=np.uint8)  # token id -> its character's code; 0 (NUL) for non-characters
_ASCII[list(CHAR_ID.values())] = [ord(c) for c in CHAR_ID]
_ASCII[EOS] = ord(END)


def _texts(canvas: Tensor, lengths: list[int] | None = None) -> list[str]:
    """Each row's first `lengths[i]` tokens (all by default) as text: EOS as '$' and nothing after it, a token
    that is no character as NUL (which no prefix admits)."""
    codes = _ASCII[canvas.cpu().numpy()]
    lengths = lengths if lengths is not None else [codes.shape[1]] * codes.shape[0]
    texts = [row[:n].tobytes().decode("ascii") for row, n in zip(codes, lengths, strict=True)]
    return [text[:text.index(END) + 1] if END in text else text for text in texts]


def decode(canvas: Tensor) -> list[str | None]:
    """Canvas rows -> the step text before the first EOS (None when a non-character token comes first)."""
    return [text[:-1] if text.endswith(END) and "\0" not in text else None for text in _texts(canvas)]


CHAR_IDS = torch.tensor([CHAR_ID[c] for c in CHARACTERS])
_TOKEN_OF = {**CHAR_ID, END: EOS}


class CountdownGuidance(Guidance):
    """Prefix checks on the settled leading run of each canvas (one plan per instance and prefix a pass);
    masks for the forced characters and the next free choice; padding only after EOS. One instance per declared
    row; `repeat` gives parallel canvases."""

    def __init__(self, instances: list[tuple[list[int], int]], device: str | torch.device = "cpu", seed: int = 0):
        self.instances = [(tuple(numbers), target) for numbers, target in instances]
        self.rows = torch.arange(len(instances))
        self.device = check_device(device)
        self.rng = np.random.default_rng(seed)
        self.static = torch.zeros(VOCAB, dtype=torch.bool, device=self.device)
        self.static[[*CHAR_IDS.tolist(), EOS, PAD]] = True
        self.pad_only = torch.zeros(VOCAB, dtype=torch.bool, device=self.device)
        self.pad_only[PAD] = True
        self.failures: dict[tuple[int, str], int] = {}
        self.dead: dict[int, set[tuple[int, ...]]] = {}  # per instance: pools that cannot make the target
        self._cached = None

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    def select(self, rows: Tensor) -> "CountdownGuidance":
        out = object.__new__(CountdownGuidance)
        out.__dict__.update(self.__dict__)
        out.rows = self.rows[rows.cpu()]
        out._cached = None
        return out

    def _prefixes(self, canvas: Tensor, settled: Tensor) -> list[str]:
        """Each row's leading run of settled tokens as text."""
        return _texts(canvas, settled.cumprod(1).sum(1).tolist())

    def _plan(self, canvas: Tensor, settled: Tensor) -> list[tuple[int, list[frozenset[str]], bool]]:
        """Per row: (start, ahead, ended). From `start` (the end of the valid settled prefix) each entry of
        `ahead` is the character set allowed at the next position: forced characters, then the first
        free choice. `ended`: the prefix reaches EOS, so only padding follows. A row whose prefix has a fault
        gets (fault, [], ended). Cached for the pass (allowed and settleable ask with the same tensors)."""
        if self._cached is not None and self._cached[0] is canvas and self._cached[1] is settled:
            return self._cached[2]
        rows = list(zip(self.rows.tolist(), self._prefixes(canvas, settled), strict=True))
        unique = {row: self._row_plan(*row, canvas.shape[1]) for row in set(rows)}  # parallel canvases agree
        plans = [unique[row] for row in rows]
        self._cached = (canvas, settled, plans)
        return plans

    def _row_plan(self, instance: int, text: str, length: int) -> tuple[int, list[frozenset[str]], bool]:
        """One row's entry of `_plan`, from its settled prefix and the canvas length."""
        numbers, target = self.instances[instance]
        valid, options = self._state(instance, text)
        ahead: list[frozenset[str]] = []
        if valid == len(text):
            while options and valid + len(ahead) < length:
                ahead.append(options)
                if len(options) > 1:
                    break
                text += next(iter(options))
                options = self._live(instance, text, next_options(numbers, target, text))
        return valid, ahead, text.endswith(END)

    def _state(self, instance: int, text: str) -> tuple[int, frozenset[str]]:
        """`prefix_state` with the characters that would step into a known dead pool taken out."""
        numbers, target = self.instances[instance]
        valid, options = prefix_state(numbers, target, text)
        return valid, self._live(instance, text[:valid], options)

    def _live(self, instance: int, text: str, options: frozenset[str]) -> frozenset[str]:
        dead = self.dead.get(instance)
        if not dead:
            return options
        numbers, target = self.instances[instance]
        return frozenset(c for c in options
                         if pool_after(numbers, target, _forced(numbers, target, text + c)) not in dead)

    def allowed(self, canvas: Tensor, settled: Tensor) -> Tensor:
        """Forced characters (result digits, the ',' or EOS after a step) are the only tokens allowed at
        their positions, the next free choice keeps the prefix valid, and after EOS only padding."""
        b, length = canvas.shape
        plans = self._plan(canvas, settled)
        planned = [(i, start + offset, _TOKEN_OF[c]) for i, (start, ahead, _) in enumerate(plans)
                   for offset, options in enumerate(ahead) for c in options]
        allowed = self.static.expand(b, length, VOCAB).clone()
        if planned:
            row, position, token = torch.tensor(planned, device=allowed.device).unbind(1)
            allowed[row, position] = False
            allowed[row, position, token] = True
        padding = self._from(plans, length, lambda start, ahead, ended: start + len(ahead) if ended else length)
        allowed[padding] = self.pad_only
        return allowed

    def settleable(self, canvas: Tensor, settled: Tensor) -> Tensor:
        """Steps are committed left to right (each character depends on those before it): only the forced
        characters and the next free choice may settle; after EOS, the padding."""
        plans = self._plan(canvas, settled)
        length = canvas.shape[1]
        start = self._from(plans, length, lambda start, ahead, ended: start)
        stop = self._from(plans, length, lambda start, ahead, ended: length if ended else start + len(ahead))
        return (start & ~stop).to(settled.device)

    def _from(self, plans, length: int, first) -> Tensor:
        """[B, L] bool: each row's positions from `first(start, ahead, ended)` of its plan on."""
        firsts = torch.tensor([first(*plan) for plan in plans], device=self.static.device)
        return torch.arange(length, device=firsts.device)[None] >= firsts[:, None]

    def violations(self, canvas: Tensor, accepted: Tensor) -> Tensor:
        bad = ~self.static[canvas] & accepted
        cuts = [canvas.shape[1]] * canvas.shape[0]  # per row, re-noise the accepted tokens from here on
        for i, (instance, text) in enumerate(zip(self.rows.tolist(), self._prefixes(canvas, accepted), strict=True)):
            valid, options = self._state(instance, text)
            cut = None
            if valid < len(text):
                cut = valid
            elif not options and END not in text:  # a dead end: back to the start of the step that led here
                if text.endswith(","):
                    self.dead.setdefault(instance, set()).add(pool_after(*self.instances[instance], text))
                    text = text[:-1]
                cut = text.rfind(",") + 1
            if cut is not None:
                key = (instance, text[:cut + 1])
                self.failures[key] = self.failures.get(key, 0) + 1
                cuts[i] = max(0, cut - int(self.rng.integers(0, self.failures[key])))  # escalate on repeats
        positions = torch.arange(canvas.shape[1], device=accepted.device)
        return bad | (accepted & (positions[None] >= torch.tensor(cuts, device=accepted.device)[:, None]))

    def verify(self, canvas: Tensor) -> Tensor:
        ok = []
        for instance, text in zip(self.rows.tolist(), decode(canvas), strict=True):
            numbers, target = self.instances[instance]
            ok.append(text is not None and _solved(numbers, target, text))
        return torch.tensor(ok, device=canvas.device)

    def retire(self, solved: Tensor) -> Tensor:
        return any_sibling(solved, self.rows)
