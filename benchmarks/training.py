"""Training-step throughput of each task model, and where a step's time goes: making the batch, the loss
(forward passes), backward, and the optimizer (gradient clipping + AdamW). Run it first on a lent GPU to see
whether a step is compute-bound before spending the device minutes on training.

    python benchmarks/training.py [--tasks sorting,sudoku,molecules,graphs] [--batch-size 64] [--device cpu]
                                  [--compile]

The step is `core.training.train_step`, the one `solve train` runs (loss, bf16 autocast on CUDA, backward,
clipping, AdamW), timed phase by phase with the device synchronised between phases. Prints a markdown table;
writes JSON, the table and a plot (default benchmarks/results/training.*). `--compile` also times each task
with both passes compiled (`solve --compile train`), in the same run: steps/s, the speedup over eager and the
one-off compilation time (the first step's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reporting import THREADS_HELP, add_out_argument, count, names, pyplot, save_figure, write_results  # noqa: E402

from diffsolve.core import new_model  # noqa: E402
from diffsolve.core.training import TrainConfig, make_optimizer, step_generators, train_step  # noqa: E402

PHASES = ("batch", "loss", "backward", "optimizer")


def task_module(name: str):
    from diffsolve.tasks import graph_data, molecules, sorting, sudoku

    return {"sorting": sorting, "sudoku": sudoku, "molecules": molecules, "graphs": graph_data}[name]


def time_steps(name: str, batch_size: int, steps: int, device: str, examples: int, compile: bool = False) -> dict:
    module = task_module(name)
    model = new_model(module.model_config(), seed=0).to(device).train()
    if compile:
        torch._dynamo.reset()  # no graphs left from another task's model
        model.compile_encoder()
        model.compile_denoiser()
    cfg = TrainConfig(batch_size=batch_size, device=device, bf16=device.startswith("cuda"),
                      ar_weight=getattr(module, "AR_WEIGHT", 1.0))
    optimizer = make_optimizer(model, cfg)
    with tempfile.TemporaryDirectory() as scratch:  # sudoku and molecules build their base sets here
        make_batch = module.batches(Path(scratch), 0, batch_size, device, examples=examples, workers=1)
        seconds = {phase: [] for phase in PHASES}
        first_step_s = 0.0
        for step in range(steps + 2):  # the first two warm up (allocator, lazy init, compilation)
            took = _one_step(model, optimizer, make_batch, step, cfg)
            if step == 0:
                first_step_s = sum(took.values())
            if step >= 2:
                for phase in PHASES:
                    seconds[phase].append(took[phase])
    per_phase = {phase: statistics.median(values) for phase, values in seconds.items()}
    total = sum(per_phase.values())
    return {"task": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "batch_size": batch_size,
            "seconds_per_step": total, "steps_per_s": 1 / total, "examples_per_s": batch_size / total,
            "phase_seconds": per_phase, "phase_share": {p: s / total for p, s in per_phase.items()},
            "first_step_s": first_step_s}


def _one_step(model, optimizer, make_batch, step: int, cfg: TrainConfig) -> dict:
    device = torch.device(cfg.device)
    marks = [time.perf_counter()]

    def mark() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    data, noise = step_generators(0, step, device)
    batch = make_batch(step, data).to(device)
    mark()
    train_step(model, optimizer, batch, noise, cfg, mark)
    mark()
    return {phase: marks[i + 1] - marks[i] for i, phase in enumerate(PHASES)}


def markdown(report: dict) -> str:
    compiled = any("compiled" in r for r in report["rows"])
    extra = ["compiled steps/s", "speedup", "compile s"] if compiled else []
    lines = ["| task | params (M) | batch | steps/s | examples/s | " + " | ".join(f"{p} %" for p in PHASES)
             + "".join(f" | {e}" for e in extra) + " |", "|---" * (5 + len(PHASES) + len(extra)) + "|"]
    for r in report["rows"]:
        c = r.get("compiled")
        tail = "" if not compiled else " | -" * 3 if c is None else \
            f" | {c['steps_per_s']:.2f} | {c['steps_per_s'] / r['steps_per_s']:.2f}x | {c['first_step_s']:.0f}"
        lines.append(f"| {r['task']} | {r['params_m']:.2f} | {r['batch_size']} | {r['steps_per_s']:.2f} | "
                     f"{r['examples_per_s']:.0f} | "
                     + " | ".join(f"{100 * r['phase_share'][p]:.0f}" for p in PHASES) + tail + " |")
    meta = report["meta"]
    lines += ["", f"Device {meta['device']}, {meta['threads']} threads, torch {meta['torch']}; median of "
                  f"{meta['steps']} steps after 2 warm-up steps; phases timed with the device synchronised."]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.5))
    left = [0.0] * len(report["rows"])
    names = [f"{r['task']} (batch {r['batch_size']})" for r in report["rows"]]
    for phase in PHASES:
        widths = [r["phase_seconds"][phase] for r in report["rows"]]
        ax.barh(names, widths, left=left, label=phase)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("seconds per training step")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=names(("sorting", "sudoku", "molecules", "graphs")),
                        default="sorting,sudoku,molecules,graphs", help="Comma-separated tasks to time.")
    parser.add_argument("--batch-size", type=count(1), default=64, help="Examples per step.")
    parser.add_argument("--steps", type=count(1), default=10, help="Timed steps per task (after 2 warm-up steps).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda, as in training).")
    parser.add_argument("--threads", type=count(1), default=2, help=THREADS_HELP)
    parser.add_argument("--examples", type=count(1), default=2000, help="Base set size for sudoku and molecules.")
    parser.add_argument("--compile", action="store_true", help="Also time each task compiled (torch.compile).")
    add_out_argument(parser, "training.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.tasks:
        rows.append(time_steps(name, args.batch_size, args.steps, args.device, args.examples))
        print(f"  {name}: {rows[-1]['steps_per_s']:.2f} steps/s", file=sys.stderr, flush=True)
        if args.compile:
            rows[-1]["compiled"] = time_steps(name, args.batch_size, args.steps, args.device, args.examples, True)
            print(f"  {name} compiled: {rows[-1]['compiled']['steps_per_s']:.2f} steps/s", file=sys.stderr,
                  flush=True)
    report = {"meta": {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                       "threads": args.threads, "torch": torch.__version__, "steps": args.steps}, "rows": rows}
    write_results(args.out, report, markdown(report), lambda p: plot(report, p))
    print(markdown(report))


if __name__ == "__main__":
    main()
