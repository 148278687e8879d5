"""Sudoku benchmark over the public development sets: model only vs the full constraint-guided system.

    python benchmarks/sudoku.py [--per-tier 50] [--max-steps 256] [--checkpoint DIR] [--modes full,...]
                                [--data ../shared/data/sudoku/eval_dev.csv] [--out results/sudoku.json] [--merge]

Per tier of `eval_dev.csv`: verified-solve rate of (1) the model only (stock sampler, clues pinned, one
canvas), (2) the full system (propagated masks, re-noising, restarts, verifier, parallel canvases) and
(3) the full system with the explicit backtracking search (`--backtrack`), reported separately; wrong
answers marked verified (must be zero); p50/p99 seconds per puzzle; forward passes per solved puzzle.
Prints a markdown table, writes JSON, the table (.md) and a plot (.png, when matplotlib is installed)
after every tier.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from diffsolve.core import files_digest, weights_digest
from diffsolve.solvers import SudokuSolver
from reporting import (ROOT, THREADS_HELP, add_out_argument, count, names, pyplot, relative, same_settings,
                       save_figure, write_results)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_tier(solver: SudokuSolver, rows: list[dict]) -> dict:
    started = time.perf_counter()
    results = solver.solve_many([r["puzzle"] for r in rows])
    wall = time.perf_counter() - started
    solved = [res for res in results if res.verified]
    wrong = sum(res.verified and res.solution != row["solution"] for res, row in zip(results, rows))
    seconds = [res.seconds for res in results]
    return {
        "puzzles": len(rows), "verified": len(solved), "rate": len(solved) / len(rows), "wrong_verified": wrong,
        "p50_s": statistics.median(seconds), "p99_s": percentile(seconds, 0.99), "wall_s": wall,
        # the solved puzzles' own passes; and every puzzle's passes (failures spend the whole budget) per solved one
        "passes_per_solved": (sum(r.forward_passes for r in solved) / len(solved)) if solved else None,
        "all_passes_per_solved": (sum(r.forward_passes for r in results) / len(solved)) if solved else None,
    }


MODES = {"model_only": "model only", "full": "full system", "backtrack": "full + backtracking"}


def _rate(x: dict | None) -> str:
    return "-" if x is None else f"{100 * x['rate']:.1f}%"


def _seconds(x: dict | None) -> str:
    return "-" if x is None else f"{x['p50_s']:.2f} / {x['p99_s']:.2f}"


def markdown(report: dict) -> str:
    lines = ["| tier | n | model only | full system | full + backtracking | wrong verified | full p50 / p99 s | "
             "backtracking p50 / p99 s | passes / solved (full, backtracking; the solved puzzles' own) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for tier, r in report["tiers"].items():
        m, f, b = (r.get(mode) for mode in MODES)  # a mode left out with --modes shows as "-"
        n = next(x["puzzles"] for x in (m, f, b) if x)
        passes = " / ".join("-" if not x or x["passes_per_solved"] is None else f"{x['passes_per_solved']:.0f}"
                            for x in (f, b))
        wrong = sum(x["wrong_verified"] for x in (m, f, b) if x)
        lines.append(f"| {tier} | {n} | {_rate(m)} | {_rate(f)} | {_rate(b)} | {wrong} | {_seconds(f)} | "
                     f"{_seconds(b)} | {passes} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    tiers = list(report["tiers"])
    fig, ax = plt.subplots(figsize=(9, 3.5))
    width = 0.27
    for k, (mode, label) in enumerate(MODES.items()):
        if mode in report["modes"]:
            ax.bar([i + (k - 1) * width for i in range(len(tiers))],
                   [100 * report["tiers"][t][mode]["rate"] for t in tiers], width, label=label)
    ax.set_xticks(list(range(len(tiers))), [t.replace("_", "\n", 1) for t in tiers], fontsize=7)
    ax.set_ylabel("verified solved (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Sudoku, {report['per_tier'] or 'all'} puzzles per tier")
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def merged_report(path: Path, report: dict) -> dict:
    """The earlier results at `path` for --merge, refused when they were measured with other settings."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    same_settings(path, earlier, report,
                  ("per_tier", "canvases", "max_steps", "checkpoint", "weights", "data", "seed", "temperature"))
    return earlier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sudoku" / "eval_dev.csv",
                        help="CSV with tier, puzzle and solution columns (default: ../shared/data/sudoku/eval_dev.csv)")
    parser.add_argument("--per-tier", type=count(0), default=50, help="first N puzzles of each tier (0: all)")
    parser.add_argument("--checkpoint", default=None, help="model directory or hub id (default: the shipped one)")
    parser.add_argument("--canvases", type=count(1), default=8, help="canvases per puzzle for the full system")
    parser.add_argument("--max-steps", type=count(1), default=256, help="denoising passes per puzzle at most")
    parser.add_argument("--threads", type=count(1), default=2, help=THREADS_HELP)
    parser.add_argument("--modes", type=names(tuple(MODES)), default=",".join(MODES),
                        help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--merge", action="store_true", help="keep the results of the modes not run in --out "
                                                             "(the same tiers, puzzles and settings)")
    add_out_argument(parser, "sudoku.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tiers: dict[str, list[dict]] = {}
    with args.data.open() as f:
        for row in csv.DictReader(f):
            tiers.setdefault(row["tier"], []).append(row)
    model_only = SudokuSolver.from_pretrained(args.checkpoint, guided=False, max_steps=args.max_steps)
    solvers = {"model_only": model_only,
               "full": SudokuSolver(model_only.model, canvases=args.canvases, max_steps=args.max_steps),
               "backtrack": SudokuSolver(model_only.model, canvases=args.canvases, max_steps=args.max_steps,
                                         backtrack=True)}
    modes = args.modes
    temperature = solvers["full"].config.t_max  # the guided searches' (the model alone samples as its card says)
    solvers = {mode: solver for mode, solver in solvers.items() if mode in modes}
    report = {"per_tier": args.per_tier, "canvases": args.canvases, "max_steps": args.max_steps, "modes": modes,
              "checkpoint": relative(model_only.model.source), "weights": weights_digest(model_only.model.source),
              "data": f"{relative(args.data)} ({files_digest([args.data])})", "seed": model_only.seed,
              "temperature": temperature, "rows_per_batch": model_only.rows_per_batch,
              "threads": args.threads, "torch": torch.__version__, "tiers": {}}
    earlier = merged_report(args.out, report) if args.merge else {}
    # the model-only results' sampler settings (the checkpoint's generation_config.json, with --max-steps)
    report["model_only_sampler"] = (model_only.config.to_hf_dict() if "model_only" in modes
                                    else earlier.get("model_only_sampler"))
    for tier, rows in tiers.items():
        rows = rows[:args.per_tier] if args.per_tier else rows
        report["tiers"][tier] = {**earlier.get("tiers", {}).get(tier, {}),
                                 **{mode: run_tier(solver, rows) for mode, solver in solvers.items()}}
        report["modes"] = [mode for mode in MODES if any(mode in r for r in report["tiers"].values())]
        print(f"{tier}: " + ", ".join(f"{MODES[mode]} {report['tiers'][tier][mode]['rate']:.2f}"
                                      for mode in solvers), file=sys.stderr, flush=True)
        write_results(args.out, report, markdown(report), lambda path: plot(report, path))
    print(markdown(report))


if __name__ == "__main__":
    main()
