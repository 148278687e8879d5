"""Where the checkpoints shipped with diffsolve live."""

from __future__ import annotations

from pathlib import Path

SHIPPED = {"sorting": "sort-demo", "sudoku": "sudoku", "molecules": "molecules", "graphs": "graphs"}


def default_checkpoint(task: str) -> Path:
    """The shipped checkpoint directory for `task` (inside the installed `diffsolve.models` package)."""
    from .. import models

    if task not in SHIPPED:
        raise KeyError(f"no shipped checkpoint for task {task!r}")
    return Path(models.__file__).parent / SHIPPED[task]
