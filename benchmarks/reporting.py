"""What every benchmark script shares: matplotlib if present, and writing JSON + table + plot side by side."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from diffsolve.core.provenance import provenance

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


def output_path(out: Path, default_name: str) -> Path:
    """The results file for --out, settled before any work (a long run must not fail at its end): an existing
    folder gets `default_name` inside it; anything else must be a .json file whose folder can be written."""
    if out.is_dir():
        out = out / default_name
    if out.suffix != ".json":
        raise SystemExit(f"--out {out}: name a .json file (its .md and .png go beside it) or a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise SystemExit(f"--out {out}: cannot write to {out.parent}")
    return out


THREADS_HELP = "CPU threads for torch (torch.set_num_threads)"


def count(minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (a negative count would slice a list from its end,
    and 0 canvases, steps or threads crash or divide by zero after minutes of work)."""
    def parse(text: str) -> int:
        value = int(text)  # argparse turns a ValueError into "invalid count value"
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names, each one of `allowed` (a typo fails at once, not as a KeyError
    after the earlier ones have run)."""
    def parse(text: str) -> list[str]:
        chosen = [name for name in text.split(",") if name]
        if not chosen or any(name not in allowed for name in chosen):
            raise argparse.ArgumentTypeError(f"expected some of {','.join(allowed)}, got {text!r}")
        return chosen

    parse.__name__ = "names"
    return parse


def add_out_argument(parser: argparse.ArgumentParser, default_name: str) -> None:
    """--out, defaulting to results/`default_name` and settled by `output_path` while the arguments are parsed."""
    parser.add_argument("--out", type=lambda value: output_path(Path(value), default_name),
                        default=str(Path(__file__).parent / "results" / default_name),
                        help=f"a .json file (its .md and .png go beside it) or a folder for {default_name}")


def write_results(out: Path, report: dict, table: str, plot: Callable[[Path], bool] | None = None) -> None:
    """out.json (the numbers, with `provenance`: each write's commit, date, machine and versions, latest last,
    as a merge keeps parts of earlier runs), out.md (the table) and out.png (when a plot is given and matplotlib
    exists)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    history = {}  # one record per code, machine and day (a run writes its file once per family or section)
    for record in [*provenance_records(_earlier(out)), *provenance_records(report), provenance()]:
        key = json.dumps({**record, "written": str(record.get("written", ""))[:10]}, sort_keys=True)
        history.pop(key, None)
        history[key] = record  # the latest write of the day, last
    out.write_text(json.dumps({**report, "provenance": list(history.values())[-HISTORY:]}, indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    if plot is not None:
        plot(out.with_suffix(".png"))


HISTORY = 20  # writes of one results file kept on record


def _earlier(path: Path) -> dict:
    """An earlier results file at `path` ({} where there is none, or none readable)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def provenance_records(report: dict) -> list[dict]:
    """A results report's provenance as a list of records (a single record, or none, as older files hold it)."""
    records = report.get("provenance")
    records = [records] if isinstance(records, dict) else records if isinstance(records, list) else []
    return [record for record in records if isinstance(record, dict)]


def same_settings(path: Path, earlier: dict, current: dict, keys: tuple[str, ...], option: str = "--merge") -> None:
    """Exit when the results at `path` (`earlier`) were measured with other `keys` than `current` holds, so one
    file never mixes runs of different weights or settings; a key the earlier file does not record (files from
    before 2026-12-06) is trusted, with a warning."""
    if differ := [key for key in keys if key in earlier and earlier[key] != current[key]]:
        raise SystemExit(f"{path}: measured with other {', '.join(differ)}; cannot {option}")
    if unknown := [key for key in keys if key not in earlier]:
        print(f"warning: {path} does not record its {', '.join(unknown)}; {option} on trust", file=sys.stderr)


def relative(path: Path | str) -> str:
    """A path inside the repository as a relative one (results stay machine-independent)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
