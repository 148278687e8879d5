"""Checks of the public API's arguments: each error names the argument and comes before any work."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from numbers import Integral, Real
from typing import TypeVar

import numpy as np

SEED_LIMIT = 2**63  # torch generators take 64-bit seeds; the graph solvers add small salts
MAX_STEPS = 2**31 - 1  # the sampler's temperature schedule counts passes in int32, as transformers does
C = TypeVar("C")
MAX_CANVASES = 1024  # parallel canvases per instance: each is a row of the batch, all of them in memory at once


def whole(value: object, name: str, minimum: int | None = None) -> int:
    """`value` as an int: any whole-number type (numpy's too, and a one-number array or tensor of one), never a
    bool, float or string."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # np.array(3), torch.tensor(3)
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def steps(value: object, name: str = "max_steps") -> int:
    value = whole(value, name, 1)
    if value > MAX_STEPS:
        raise ValueError(f"{name} must be below 2**31, got {value}")
    return value


def flag(value: object, name: str) -> bool:
    """`value` as a bool: True or False (numpy's too), never a string such as "no" or a number."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def canvases(value: object, guided: bool, default: int = 8) -> int:
    """Parallel canvases per instance: `default` when None; the model alone samples one."""
    if value is None:
        return default if guided else 1
    value = whole(value, "canvases", 1)
    if value > MAX_CANVASES:
        raise ValueError(f"canvases must be at most {MAX_CANVASES} (each is a row of the batch, all in memory at "
                         f"once), got {value}")
    if not guided and value != 1:
        raise ValueError(f"canvases is for the guided search: the model alone samples one canvas, got {value}")
    return value


def items(value: object, name: str, ordered: bool = True) -> list:
    """A call's items as a list: any iterable but text (one item's text is not a batch of characters), a mapping
    or a table (they iterate over their keys or columns), or, where results come back in the items' order
    (`ordered`, a batched call), a set."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a list (or another iterable) of items, not text: got {value!r:.60}")
    if hasattr(value, "columns"):  # a pandas or polars table yields its column names or its columns
        raise TypeError(f"{name} must be a list (or another iterable) of items, not a table (it yields its "
                        "columns): pass the items, such as one column or a list of rows")
    if isinstance(value, Mapping):
        raise TypeError(f"{name} must be a list (or another iterable) of items, not a mapping (it yields its "
                        "keys): pass the items as a list (its values(), say)")
    if ordered and isinstance(value, (set, frozenset)):
        raise TypeError(f"{name} must be a list (or another iterable) of items, not a set (it has no order for "
                        "the results to follow): pass a list")
    if not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list (or another iterable), got {type(value).__name__}")
    return list(value)


def seed(value: object, name: str = "seed") -> int:
    value = whole(value, name, 0)
    if value >= SEED_LIMIT:
        raise ValueError(f"{name} must be below 2**63, got {value}")
    return value


def positive(value: object, name: str) -> float:
    """A finite number above zero (a temperature)."""
    return number(value, name, 0, above_low=True)


def number(value: object, name: str, low: float, high: float = float("inf"), above_low: bool = False,
           infinite: bool = False) -> float:
    """A finite number (or infinity, where `infinite`) from `low` to `high` (above `low` where `above_low`)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    too_low = not (low < value if above_low else low <= value)
    if too_low or not value <= high or (value == float("inf") and not infinite):
        span = (f"above {low:g}" if above_low else f"at least {low:g}" if high == float("inf")
                else f"from {low:g}") + ("" if high == float("inf") else f" {'and at most' if above_low else 'to'} "
                                              f"{high:g}")
        raise ValueError(f"{name} must be a {'number' if infinite else 'finite number'} {span}, got {value}")
    return float(value)


def generator(value: object, device_type: str) -> None:
    """A torch.Generator (or None: torch's global one) on the model's kind of device."""
    import torch

    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (or None: torch's global one), got {value!r}")
    if value is not None and value.device.type != device_type:
        raise ValueError(f"generator is on {value.device.type} but the model on {device_type}: make it "
                         f"with torch.Generator({device_type!r})")


def callback(value: C, name: str) -> C:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a function (or None), got {value!r}")
    return value


@contextmanager
def raised_as(error: type[ValueError]) -> Iterator[None]:
    """The checks inside raise their TypeError or ValueError as `error`: in a call, every bad argument is the
    task's one error (GraphError, CountdownError, RequestError)."""
    try:
        yield
    except error:
        raise
    except (TypeError, ValueError) as exc:
        raise error(str(exc)) from None


@contextmanager
def numbered(what: str, i: int, count: int) -> Iterator[None]:
    """In a batched call of `count` items, a TypeError or ValueError raised inside names the item at fault
    (`query 1: ...`, the same exception type); a call of one item raises it as it is."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        if count == 1:
            raise
        raise type(exc)(f"{what} {i}: {exc}") from None


def warn_caller(message: str, category: type[Warning]) -> None:
    """`warnings.warn` pointed at the caller's own line: the first frame outside diffsolve and the decorators
    around its calls (torch.no_grad, functools.wraps), however deep the call came in."""
    import sys
    import warnings

    frame, level = sys._getframe(1), 2  # stacklevel 1 is this function, 2 its caller
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("diffsolve", "torch"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
