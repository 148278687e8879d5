"""Model-only Sudoku at several stock-sampler settings, on puzzles generated here (never the evaluation sets):
how the temperature in `models/sudoku/generation_config.json` (`diffsolve.tasks.sudoku.SAMPLER`) was chosen.

    python benchmarks/sudoku_sampler.py [--seed 4242] [--puzzles 48] [--max-steps 128] [--settings released,shipped]

Per setting: verified solves of the model alone (one canvas, clues pinned, the stock sampler with the checkpoint's
other settings) on `--puzzles` puzzles with 36 givens and as many unique minimal ones (21-27 givens). Prints a
markdown table; writes JSON and the table (default benchmarks/results/sudoku_sampler.*).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from diffsolve.core import weights_digest
from diffsolve.solvers import SudokuSolver
from diffsolve.tasks.sudoku_data import make_puzzle, random_grid
from reporting import add_out_argument, relative, write_results

SETTINGS = {
    "released": {"t_max": 0.8, "t_min": 0.4},
    "shipped": {"t_max": 1.2, "t_min": 0.8},
    "warmer": {"t_max": 1.5, "t_min": 1.0},
    "hot": {"t_max": 2.0, "t_min": 2.0},
    "cool": {"t_max": 0.4, "t_min": 0.1},
}


def puzzle_sets(seed: int, n: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    sets: dict[str, list[str]] = {"36 givens": [], "minimal": []}
    for _ in range(n):
        sets["36 givens"].append(make_puzzle(random_grid(rng), 36, rng, unique=False))
        sets["minimal"].append(make_puzzle(random_grid(rng), 17, rng, unique=True))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--puzzles", type=int, default=48, help="puzzles per set")
    parser.add_argument("--max-steps", type=int, default=128)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {','.join(SETTINGS)}")
    parser.add_argument("--threads", type=int, default=1)
    add_out_argument(parser, "sudoku_sampler.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = puzzle_sets(args.seed, args.puzzles)
    solver = SudokuSolver.from_pretrained(guided=False, max_steps=args.max_steps)
    base = solver.config
    report = {"checkpoint": relative(solver.model.source), "weights": weights_digest(solver.model.source),
              "seed": args.seed, "puzzles": args.puzzles, "max_steps": args.max_steps, "threads": args.threads,
              "torch": torch.__version__, "settings": {}}
    lines = ["| setting | temperature | " + " | ".join(sets) + " | seconds |", "|---|---|" + "---|" * (len(sets) + 1)]
    for name in args.settings.split(","):
        solver.config = replace(base, **SETTINGS[name])
        began = time.perf_counter()
        solved = {label: sum(r.verified for r in solver.solve_many(puzzles)) for label, puzzles in sets.items()}
        seconds = round(time.perf_counter() - began, 1)
        report["settings"][name] = {**SETTINGS[name], "solved": solved, "seconds": seconds}
        lines.append(f"| {name} | {SETTINGS[name]['t_max']} -> {SETTINGS[name]['t_min']} | "
                     + " | ".join(f"{k}/{args.puzzles}" for k in solved.values()) + f" | {seconds} |")
        print(lines[-1], flush=True)
    write_results(args.out, report, "\n".join(lines))


if __name__ == "__main__":
    main()
