"""Countdown on the canvas: the steps `a+b=c,...` one character a token, then EOS.

Every pass the leading run of settled tokens is read as a prefix of a solution: each operand must be a number
still available, every result must be the exact value of its step (so once `a op b =` is settled, the result
digits are the only tokens allowed), the last step must produce the target, and EOS may only follow it.
Propagation stays within the step being typed: a character is allowed only if the step can still be finished
from it (with two numbers left, finishing means the last step can make the target), so a pool of three from
which no step leaves a good pair is found dead as soon as its step begins. Dead pools are exact facts: every
canvas of the instance learns them and never again takes a step into one. The first faulty token and
everything settled after it are re-noised; a dead end cuts back to the step that led into it (further on
repeats). Verification replays the steps with sympy's exact integers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Set
from functools import lru_cache
from numbers import Integral

import numpy as np
import torch
from torch import Tensor

from ..core import Guidance
from .graph_data import (CHAR_ID, CHARACTERS, EOS, ID_TO_CHAR, MAX_COUNTDOWN_NUMBERS, OPERATORS,
                         PAD, VOCAB, apply)

END = "$"  # EOS in prefix strings
STEP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")


class CountdownError(ValueError):
    """An instance the solver cannot take."""


def whole_numbers(numbers, target) -> tuple[list[int], int]:
    """(numbers, target) as ints; anything that is not a whole number (1.5, '7', True) is refused, never rounded."""
    if isinstance(numbers, (str, bytes)):
        raise CountdownError(f"numbers must be a sequence of whole numbers, got the text {numbers!r} "
                             "(parse_instance reads text)")
    if not hasattr(numbers, "__iter__") or isinstance(numbers, (Set, Mapping)):  # a set drops repeats
        raise CountdownError(f"numbers must be a sequence of whole numbers (a list or tuple; each used once), got "
                             f"{numbers!r}")
    values = list(numbers)
    for value in [*values, target]:
        whole = isinstance(value, Integral) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole:
            raise CountdownError(f"numbers and target must be whole numbers, got {value!r}")
    return [int(v) for v in values], int(target)


def check_instance(numbers: list[int], target: int) -> None:
    if not 2 <= len(numbers) <= MAX_COUNTDOWN_NUMBERS:
        raise CountdownError(f"need 2..{MAX_COUNTDOWN_NUMBERS} numbers, got {len(numbers)}")
    if any(n < 1 for n in [*numbers, target]):
        raise CountdownError("numbers and target must be positive integers")
    if any(n > 999 for n in [*numbers, target]):
        raise CountdownError("numbers and target must be at most 999 (the model's prompt)")


def parse_instance(text: str, target: int | None = None) -> tuple[list[int], int]:
    """'86 28 13 31' with `target`, or the public format '86,28,13,31,96' (the last number is the target)."""
    fields = [f for f in re.split(r"[,\s]+", text.strip()) if f]
    if not fields or not all(re.fullmatch(r"[0-9]+", f) for f in fields):
        raise CountdownError(f"expected whole numbers separated by spaces or commas, got {text!r}")
    if any(len(f.lstrip("0")) > 3 for f in fields):  # before int(): Python refuses to read over 4,300 digits
        raise CountdownError("numbers and target must be at most 999 (the model's prompt)")
    values = [int(f) for f in fields]
    if target is None:
        if len(values) < 3:
            raise CountdownError(f"expected numbers then the target, got {text!r}")
        values, target = values[:-1], values[-1]
    check_instance(values, target)
    return values, target


@lru_cache(maxsize=200_000)
def prefix_state(numbers: tuple[int, ...], target: int, text: str) -> tuple[int, frozenset[str]]:
    """(length of the longest valid prefix of `text`, characters that may extend that prefix).

    Valid means every complete step uses available numbers and is exact, the partial step can still be
    finished, and the last step (when the pool is down to two numbers) yields the target."""
    for cut in range(1, len(text) + 1):
        if not _finishable(numbers, target, text[:cut]):
            return cut - 1, next_options(numbers, target, text[:cut - 1])
    return len(text), next_options(numbers, target, text)


def next_options(numbers: tuple[int, ...], target: int, text: str) -> frozenset[str]:
    """Characters after the valid prefix `text` from which the step being typed can still be finished."""
    return frozenset(c for c in _extensions(numbers, target, text) or () if _finishable(numbers, target, text + c))


@lru_cache(maxsize=200_000)
def _finishable(numbers: tuple[int, ...], target: int, text: str) -> bool:
    """`text` is a valid prefix and the step it is typing can be completed (looks no further than its ',')."""
    options = _extensions(numbers, target, text)
    if options is None:
        return False
    return text.endswith((",", END)) or any(_finishable(numbers, target, text + c) for c in options)


@lru_cache(maxsize=200_000)
def _forced(numbers: tuple[int, ...], target: int, text: str) -> str:
    """`text` followed through every forced character, up to the end of its step or the next free choice."""
    while not text.endswith((",", END)):
        options = next_options(numbers, target, text)
        if len(options) != 1:
            break
        text += next(iter(options))
    return text


@lru_cache(maxsize=200_000)
def pool_after(numbers: tuple[int, ...], text: str) -> tuple[int, ...] | None:
    """The sorted numbers left after the complete steps of a valid prefix that ends with ','; else None."""
    if not text.endswith(","):
        return None
    pool = Counter(numbers)
    for step in text[:-1].split(","):
        _step(pool, step)
    return tuple(sorted(pool.elements()))


@lru_cache(maxsize=200_000)
def _extensions(numbers: tuple[int, ...], target: int, text: str) -> frozenset[str] | None:
    """Characters that may follow a valid prefix, or None when `text` is not a valid prefix."""
    if END in text[:-1]:
        return None
    if text.endswith(END):
        return frozenset() if _solved(numbers, target, text[:-1]) else None
    *done, partial = text.split(",")
    pool = Counter(numbers)
    for step in done:
        result = _step(pool, step)
        if result is None or sum(pool.values()) == 1:
            return None
    return _partial_options(pool, target, partial)


def _step(pool: Counter, step: str) -> int | None:
    """Apply one complete step to `pool` (in place); None when it is not a legal exact step."""
    match = STEP.fullmatch(step)
    if not match or any(len(x) > 1 and x[0] == "0" for x in (match[1], match[3], match[4])):
        return None
    a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
    pool[a] -= 1
    pool[b] -= 1
    if pool[a] < 0 or pool[b] < 0 or apply(a, op, b) != c:
        return None
    pool[c] += 1
    return c


def _number_options(available: list[int], typed: str) -> set[str]:
    """Next digits that keep `typed` a prefix of an available number (no leading zeros)."""
    return {str(n)[len(typed)] for n in available if str(n).startswith(typed) and len(str(n)) > len(typed)}


def _partial_options(pool: Counter, target: int, partial: str) -> frozenset[str] | None:
    available = sorted(n for n, count in pool.items() for _ in range(count))
    last = len(available) == 2
    match = re.fullmatch(r"(\d*)(?:([-+*/])(\d*)(?:=(\d*))?)?", partial)
    if not match:
        return None
    a_text, op, b_text, c_text = match.groups()
    if op is None:  # still typing the first operand
        options = _number_options(available, a_text)
        if a_text and int(a_text) in available:
            options |= set("+-*/")
        return frozenset(options) if options or not a_text else None
    if not a_text or int(a_text) not in available:
        return None
    rest = list(available)
    rest.remove(int(a_text))
    if c_text is None:  # typing the second operand
        options = _number_options(rest, b_text)
        if b_text and int(b_text) in rest:
            result = apply(int(a_text), op, int(b_text))
            if result is not None and (not last or result == target):
                options.add("=")
        return frozenset(options) if options or not b_text else None
    if not b_text or int(b_text) not in rest:
        return None
    result = apply(int(a_text), op, int(b_text))
    if result is None or (last and result != target) or not str(result).startswith(c_text):
        return None
    if c_text != str(result):
        return frozenset(str(result)[len(c_text)])
    if last:
        return frozenset({END})
    rest.remove(int(b_text))
    left = [*rest, result]
    if len(left) == 2 and not any(apply(x, op, y) == target for x, y in (left, left[::-1]) for op in OPERATORS):
        return frozenset()  # the two numbers left cannot make the target: a dead end
    return frozenset({","})


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
        match = STEP.fullmatch(part)
        if not match:
            return False
        a, b, c = (sympy.Integer(match[i]) for i in (1, 3, 4))
        exact = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b != 0 else sympy.zoo}[match[2]]
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
    for i in range(len(pool)):
        for j in range(len(pool)):
            if i == j:
                continue
            rest = [x for t, x in enumerate(pool) if t not in (i, j)]
            for op in OPERATORS:
                c = apply(pool[i], op, pool[j])
                if c is not None and _reachable(tuple(sorted([*rest, c])), target):
                    return True
    return False


def solvable(numbers: list[int], target: int) -> bool:
    """Exhaustive check (used only to explain a failure: 'no solution exists' versus 'none found')."""
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
def decode(canvas: Tensor) -> list[str | None]:
    """Canvas rows -> the step text before the first EOS (None when a non-character token comes first)."""
    out = []
    for row in canvas.tolist():
        end = row.index(EOS) if EOS in row else None
        chars = [ID_TO_CHAR.get(t) for t in row[:end]] if end is not None else [None]
        out.append(None if None in chars else "".join(chars))
    return out


CHAR_IDS = torch.tensor([CHAR_ID[c] for c in CHARACTERS])
_TOKEN_OF = {**CHAR_ID, END: EOS}


class CountdownGuidance(Guidance):
    """Prefix checks on the settled leading run of each canvas (cached per prefix string); masks for the
    next position; padding only after EOS. One instance per declared row; `repeat` gives parallel canvases."""

    def __init__(self, instances: list[tuple[list[int], int]], device: str | torch.device = "cpu", seed: int = 0):
        self.instances = [(tuple(numbers), target) for numbers, target in instances]
        self.rows = torch.arange(len(instances))
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.static = torch.zeros(VOCAB, dtype=torch.bool, device=self.device)
        self.static[[*CHAR_IDS.tolist(), EOS, PAD]] = True
        self.pad_only = torch.zeros(VOCAB, dtype=torch.bool, device=self.device)
        self.pad_only[PAD] = True
        self.failures: dict[tuple[int, str], int] = {}
        self.dead: dict[int, set[tuple[int, ...]]] = {}  # per instance: pools that cannot make the target
        self._cached = None

    def repeat(self, n: int) -> "CountdownGuidance":
        return self.select(torch.arange(len(self.rows)).repeat_interleave(n))

    def select(self, rows: Tensor) -> "CountdownGuidance":
        out = object.__new__(CountdownGuidance)
        out.__dict__.update(self.__dict__)
        out.rows = self.rows[rows.cpu()]
        out._cached = None
        return out

    def _prefixes(self, canvas: Tensor, settled: Tensor) -> list[str]:
        run = settled.cumprod(1).sum(1).tolist()
        texts = []
        for row, length in zip(canvas.tolist(), run):
            chars = []
            for t in row[:length]:
                if t == EOS:
                    chars.append(END)
                    break
                chars.append(ID_TO_CHAR.get(t, "?"))
            texts.append("".join(chars))
        return texts

    def _plan(self, canvas: Tensor, settled: Tensor) -> list[tuple[int, list[frozenset[str]], bool]]:
        """Per row: (start, options, ended). From `start` (the end of the valid settled prefix) each entry of
        `options` is the character set allowed at the next position: forced characters, then the first
        free choice. `ended`: the prefix reaches EOS, so only padding follows. A row whose prefix has a fault
        gets (fault, [], False). Cached for the pass (allowed and settleable ask with the same tensors)."""
        if self._cached is not None and self._cached[0] is canvas and self._cached[1] is settled:
            return self._cached[2]
        plans = []
        for instance, text in zip(self.rows.tolist(), self._prefixes(canvas, settled), strict=True):
            numbers, target = self.instances[instance]
            valid, options = self._state(instance, text)
            steps: list[frozenset[str]] = []
            if valid == len(text):
                while options and len(text) + len(steps) < canvas.shape[1]:
                    steps.append(options)
                    if len(options) > 1:
                        break
                    text += next(iter(options))
                    options = self._live(instance, text, next_options(numbers, target, text))
            plans.append((valid, steps, text.endswith(END)))
        self._cached = (canvas, settled, plans)
        return plans

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
        return frozenset(c for c in options if pool_after(numbers, _forced(numbers, target, text + c)) not in dead)

    def allowed(self, canvas: Tensor, settled: Tensor) -> Tensor:
        """Forced characters (result digits, the ',' or EOS after a step) are the only tokens allowed at
        their positions, the next free choice keeps the prefix valid, and after EOS only padding."""
        b, length = canvas.shape
        plans = self._plan(canvas, settled)
        planned = [(i, start + offset, _TOKEN_OF[c]) for i, (start, steps, _) in enumerate(plans)
                   for offset, options in enumerate(steps) for c in options]
        allowed = self.static.expand(b, length, VOCAB).clone()
        if planned:
            row, position, token = torch.tensor(planned, device=allowed.device).unbind(1)
            allowed[row, position] = False
            allowed[row, position, token] = True
        padding = self._from(plans, length, lambda start, steps, ended: start + len(steps) if ended else length)
        allowed[padding] = self.pad_only
        return allowed

    def settleable(self, canvas: Tensor, settled: Tensor) -> Tensor:
        """Steps are committed left to right (each character depends on those before it): only the forced
        characters and the next free choice may settle; after EOS, the padding."""
        plans = self._plan(canvas, settled)
        length = canvas.shape[1]
        start = self._from(plans, length, lambda start, steps, ended: start)
        stop = self._from(plans, length, lambda start, steps, ended: length if ended else start + len(steps))
        return (start & ~stop).to(settled.device)

    def _from(self, plans, length: int, first) -> Tensor:
        """[B, L] bool: each row's positions from `first(start, steps, ended)` of its plan on."""
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
                    self.dead.setdefault(instance, set()).add(pool_after(self.instances[instance][0], text))
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
        count = torch.zeros(int(self.rows.max()) + 1, dtype=torch.long)
        rows = self.rows
        return (count.index_add_(0, rows, solved.cpu().long())[rows] > 0).to(solved.device)
