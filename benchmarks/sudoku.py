"""Sudoku benchmark over the public development sets: model only vs the full constraint-guided system.

    python benchmarks/sudoku.py [--per-tier 16] [--checkpoint DIR] [--data ../shared/data/sudoku/eval_dev.csv]

Per tier of `eval_dev.csv`: verified-solve rate of (1) the model only (stock sampler, clues pinned, one
canvas) and (2) the full system (masks, re-noising, verifier, parallel canvases); wrong answers marked
verified (must be zero); p50/p99 seconds per puzzle; forward passes per solved puzzle. Prints a markdown
table, writes JSON, the table (.md) and a plot (.png, when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from diffsolve.solvers import SudokuSolver
from reporting import ROOT, pyplot, relative, save_figure, write_results


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
        "passes_per_solved": (sum(r.forward_passes for r in solved) / len(solved)) if solved else None,
    }


def markdown(report: dict) -> str:
    lines = ["| tier | n | model only | full system | wrong verified | full p50 s | full p99 s | "
             "passes / solved (full) |", "|---|---|---|---|---|---|---|---|"]
    for tier, r in report["tiers"].items():
        m, f = r["model_only"], r["full"]
        passes = "-" if f["passes_per_solved"] is None else f"{f['passes_per_solved']:.0f}"
        lines.append(f"| {tier} | {f['puzzles']} | {100 * m['rate']:.1f}% | {100 * f['rate']:.1f}% | "
                     f"{m['wrong_verified'] + f['wrong_verified']} | {f['p50_s']:.2f} | {f['p99_s']:.2f} | {passes} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    tiers = list(report["tiers"])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = range(len(tiers))
    ax.bar([i - 0.2 for i in x], [100 * report["tiers"][t]["model_only"]["rate"] for t in tiers], 0.4,
           label="model only")
    ax.bar([i + 0.2 for i in x], [100 * report["tiers"][t]["full"]["rate"] for t in tiers], 0.4,
           label="full system")
    ax.set_xticks(list(x), [t.replace("_", "\n", 1) for t in tiers], fontsize=7)
    ax.set_ylabel("verified solved (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Sudoku, {report['per_tier']} puzzles per tier")
    ax.legend()
    save_figure(fig, path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sudoku" / "eval_dev.csv")
    parser.add_argument("--per-tier", type=int, default=16, help="first N puzzles of each tier (0: all)")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--canvases", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sudoku.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tiers: dict[str, list[dict]] = {}
    with args.data.open() as f:
        for row in csv.DictReader(f):
            tiers.setdefault(row["tier"], []).append(row)
    model_only = SudokuSolver.from_pretrained(args.checkpoint, guided=False, max_steps=args.max_steps)
    full = SudokuSolver(model_only.model, canvases=args.canvases, max_steps=args.max_steps)
    report = {"per_tier": args.per_tier, "canvases": args.canvases, "max_steps": args.max_steps,
              "checkpoint": relative(model_only.model.source), "tiers": {}}
    for tier, rows in tiers.items():
        rows = rows[:args.per_tier] if args.per_tier else rows
        report["tiers"][tier] = {"model_only": run_tier(model_only, rows), "full": run_tier(full, rows)}
        print(f"{tier}: model only {report['tiers'][tier]['model_only']['rate']:.2f}, "
              f"full {report['tiers'][tier]['full']['rate']:.2f}", file=sys.stderr, flush=True)
    table = markdown(report)
    print(table)
    write_results(args.out, report, table, lambda path: plot(report, path))


if __name__ == "__main__":
    main()
