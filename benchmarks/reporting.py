"""What every benchmark script shares: matplotlib if present, and writing JSON + table + plot side by side."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pyplot():
    """matplotlib.pyplot on the file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_results(out: Path, report: dict, table: str, plot: Callable[[Path], bool] | None = None) -> None:
    """out.json (the numbers), out.md (the table) and out.png (when a plot is given and matplotlib exists)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    if plot is not None:
        plot(out.with_suffix(".png"))


def relative(path: Path | str) -> str:
    """A path inside the repository as a relative one (results stay machine-independent)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
