"""Model-only Sudoku at several stock-sampler settings, on puzzles generated here (never the evaluation sets):
how the temperature and entropy bound in `models/sudoku/generation_config.json` (`diffsolve.tasks.sudoku.SAMPLER`)
were chosen.

    python benchmarks/sudoku_sampler.py [--seed 4242] [--puzzles 48] [--max-steps 128] [--settings released,shipped]

Per setting: verified solves of the model alone (one canvas, clues pinned, the stock sampler with the checkpoint's
other settings) on `--puzzles` puzzles with 36 givens and as many unique minimal ones (21-27 givens). Prints a
markdown table; writes JSON and the table (default benchmarks/results/sudoku_sampler.*).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from diffsolve.core import weights_digest
from diffsolve.solvers import SudokuSolver
from diffsolve.tasks.sudoku_data import make_puzzle, random_grid
from reporting import THREADS_HELP, add_out_argument, count, names, relative, write_results

SETTINGS = {
    "released": {"t_max": 0.8, "t_min": 0.4},
    "shipped": {"t_max": 1.2, "t_min": 0.8},
    "warmer": {"t_max": 1.5, "t_min": 1.0},
    "hot": {"t_max": 2.0, "t_min": 2.0},
    "cool": {"t_max": 0.4, "t_min": 0.1},
    # Fewer cells accepted per pass, the most certain first (the released bound is 0.1)
    "careful": {"t_max": 1.2, "t_min": 0.8, "entropy_bound": 0.01},
    "one by one": {"t_max": 1.2, "t_min": 0.8, "entropy_bound": 1e-4},
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
    parser.add_argument("--seed", type=count(0), default=4242, help="seed of the generated puzzles")
    parser.add_argument("--puzzles", type=count(1), default=48, help="puzzles per set")
    parser.add_argument("--max-steps", type=count(1), default=128, help="denoising passes per puzzle at most")
    parser.add_argument("--settings", type=names(tuple(SETTINGS)), default=",".join(SETTINGS),
                        help=f"comma-separated, of {','.join(SETTINGS)}")
    parser.add_argument("--threads", type=count(1), default=1, help=THREADS_HELP)
    add_out_argument(parser, "sudoku_sampler.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the settings already in --out that this run does not redo (same weights, seed, "
                             "puzzles, passes and threads)")
    args = parser.parse_args()
    chosen = args.settings
    torch.set_num_threads(args.threads)
    sets = puzzle_sets(args.seed, args.puzzles)
    solver = SudokuSolver.from_pretrained(guided=False, max_steps=args.max_steps)
    base = solver.config
    report = {"checkpoint": relative(solver.model.source), "weights": weights_digest(solver.model.source),
              "seed": args.seed, "puzzles": args.puzzles, "max_steps": args.max_steps, "threads": args.threads,
              "torch": torch.__version__, "settings": {}}
    if args.merge and args.out.is_file():  # checked before the run, so that a mismatch fails in seconds
        previous = json.loads(args.out.read_text())
        same = ("weights", "seed", "puzzles", "max_steps", "threads")
        if any(previous.get(k) != report[k] for k in same):
            sys.exit(f"{args.out} was measured with other {'/'.join(same)}; cannot --merge")
        report["settings"] = {k: v for k, v in previous["settings"].items() if k not in chosen}
    header = ["| setting | temperature | entropy bound | " + " | ".join(sets) + " | seconds |",
              "|---|---|---|" + "---|" * (len(sets) + 1)]
    print("\n".join(header), flush=True)  # each row follows as its setting is measured
    for name in chosen:
        solver.config = replace(base, **SETTINGS[name])
        began = time.perf_counter()
        solved = {label: sum(r.verified for r in solver.solve_many(puzzles)) for label, puzzles in sets.items()}
        seconds = round(time.perf_counter() - began, 1)
        report["settings"][name] = {"entropy_bound": solver.config.entropy_bound, **SETTINGS[name],
                                    "solved": solved, "seconds": seconds}
        print(row(name, report["settings"][name], args.puzzles), flush=True)
    lines = header + [row(name, setting, args.puzzles) for name, setting in report["settings"].items()]
    write_results(args.out, report, "\n".join(lines))


def row(name: str, setting: dict, puzzles: int) -> str:
    bound = setting.get("entropy_bound", 0.1)  # runs before the column existed used the released bound
    return (f"| {name} | {setting['t_max']} -> {setting['t_min']} | {bound:g} | "
            + " | ".join(f"{k}/{puzzles}" for k in setting["solved"].values()) + f" | {setting['seconds']} |")


if __name__ == "__main__":
    main()
