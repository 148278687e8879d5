"""Checks on a GPU of what the CPU tests cannot show (a session lent a device; about a minute):

    run(command="python3 scripts/gpu_check.py", timeout_s=300)

Each check prints PASS, FAIL or SKIP with what it saw; the exit status is the number of failures. It needs torch
with CUDA and uses the package from the working tree (nothing is installed); the Sudoku check needs RDKit too
(`scripts/gpu_stage.sh start` installs it there) and is skipped without it. GPU_CHECK_DEVICE=cpu runs the same
checks on the CPU (a dry run of the script)."""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
FAILED: list[str] = []


def use_package() -> None:
    """diffsolve from the working tree, linked as scripts/gpu_stage.sh links it; the wheels gpu_stage.sh
    installed (RDKit), where it did."""
    sys.path.insert(0, str(ROOT / "scripts"))  # beside this script (not on the path under PYTHONSAFEPATH)
    from link_package import link_package

    folder = tempfile.TemporaryDirectory(prefix="diffsolve-")  # removed at exit
    atexit.register(folder.cleanup)
    link_package(Path(folder.name))
    sys.path.insert(0, folder.name)
    if (ROOT / "runs" / "gpu" / "site").is_dir():
        sys.path.append(str(ROOT / "runs" / "gpu" / "site"))


class Skipped(Exception):
    """A check that cannot run here."""


def check(name: str):
    def run(test):
        start = time.perf_counter()
        try:
            seen, verdict = test(), "PASS"
        except Skipped as exc:
            seen, verdict = f"{exc}", "SKIP"
        except Exception as exc:  # a check that raises has failed
            seen, verdict = f"{type(exc).__name__}: {exc}", "FAIL"
            FAILED.append(name)
        print(f"{verdict} {name} ({time.perf_counter() - start:.1f} s): {seen}", flush=True)
        return test
    return run


use_package()
if DEVICE != "cpu" and not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device here")


def tiny_model(experts: int = 8, k: int = 4):
    from diffsolve.core import ModelConfig, new_model

    cfg = ModelConfig(vocab_size=32, hidden_size=64, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                      head_dim=32, num_experts=experts, top_k_experts=k, moe_intermediate_size=32,
                      layer_types=["sliding_attention", "full_attention"], sliding_window=16, canvas_length=64)
    return new_model(cfg, seed=0, device=DEVICE).eval()


@check("non-finite logits raise FloatingPointError and the device stays usable")
def _():
    from diffsolve.core import generate, released_config

    model = tiny_model()
    with torch.no_grad():
        model.embed_tokens.weight[5] = float("nan")
    prompt = torch.full((2, 4), 5, device=DEVICE)
    try:
        generate(model, prompt, released_config(model, max_new_tokens=64),
                 generator=torch.Generator(DEVICE).manual_seed(0))
    except FloatingPointError:
        pass
    else:
        raise AssertionError("no FloatingPointError")
    if DEVICE != "cpu":
        torch.cuda.synchronize()  # a device-side assert would surface here
    return f"then {torch.ones(3, device=DEVICE).sum().item():g} computed on the device"


@check("grouped experts give the same bits run after run (no atomics in the sum)")
def _():
    from diffsolve.core.model import Experts

    model = tiny_model(experts=16, k=4)
    experts = next(m for m in model.modules() if isinstance(m, Experts))
    g = torch.Generator(DEVICE).manual_seed(1)
    x = torch.randn(4096, 64, device=DEVICE, generator=g)
    index = torch.rand(4096, 16, device=DEVICE, generator=g).argsort(-1)[:, :4]
    weights = torch.rand(4096, 4, device=DEVICE, generator=g)
    with torch.no_grad():
        runs = [experts(x, weights, index) for _ in range(5)]
        dense = experts._dense(x, weights, index)
    assert all(torch.equal(runs[0], r) for r in runs[1:]), "runs differ"
    return f"5 equal runs; largest difference from the dense form {float((runs[0] - dense).abs().max()):.2e}"


@check("the Sudoku solver gives the same answers and passes twice")
def _():
    try:
        from diffsolve.solvers import SudokuSolver
    except ImportError as exc:  # the solvers package imports RDKit
        raise Skipped(f"{exc}") from None

    puzzles = [line.strip() for line in (ROOT / "examples" / "sudoku.txt").read_text().splitlines()
               if len(line.strip()) == 81]
    solver = SudokuSolver.from_pretrained(device=DEVICE)
    first, second = (solver.solve_many(puzzles) for _ in range(2))
    assert [(r.solution, r.steps) for r in first] == [(r.solution, r.steps) for r in second], "runs differ"
    assert all(r.verified for r in first), "not all verified"
    return f"{len(first)} puzzles verified, passes {[r.steps for r in first]}"


@check("Pins held on the CPU drive the model with finished rows dropped")
def _():
    from diffsolve.core import Pins, generate, released_config

    selected = []

    class FirstRowSolved(Pins):  # row 0 stops after the first pass, so the sampler drops it (Pins.select)
        def verify(self, canvas):
            return (torch.arange(canvas.shape[0], device=canvas.device) == 0) & (canvas.shape[0] == 3)

        def select(self, rows):
            selected.append(rows.tolist())
            return FirstRowSolved(*super().select(rows).pinned(0, self.mask.device))

    model = tiny_model()
    mask = torch.zeros(3, 64, dtype=torch.bool)
    mask[:, :4] = True
    values = torch.full((3, 64), 7)
    out = generate(model, torch.full((3, 4), 3, device=DEVICE),
                   released_config(model, max_new_tokens=64, drop_finished=True), guidance=FirstRowSolved(mask, values),
                   generator=torch.Generator(DEVICE).manual_seed(0))
    assert selected, "no row was dropped"
    assert bool((out.canvas[:, :4] == 7).all()), "pins lost"
    return f"pins kept; rows kept after the first drop: {selected[0]}"


@check("a sharded save of the model loads back equal")
def _():
    from diffsolve.core import load_model, save_model

    model = tiny_model()
    with tempfile.TemporaryDirectory() as folder:
        save_model(model, folder, max_shard_bytes=50_000)
        again = load_model(folder, device=DEVICE)
        shards = len(list(Path(folder).glob("model-*.safetensors")))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    return f"{shards} shards"


@check("free memory counts what torch keeps cached for reuse, and a load within it succeeds")
def _():
    from diffsolve.core import load_model
    from diffsolve.core.checkpoint import free_memory

    before = free_memory(torch.device(DEVICE))
    if DEVICE == "cpu":
        return f"{before / 1e9:.1f} GB available"
    block = torch.empty(2**30, dtype=torch.uint8, device=DEVICE)  # 1 GiB into torch's cache, then freed
    del block
    after = free_memory(torch.device(DEVICE))
    assert after >= before - 2**20, (before, after)
    load_model(ROOT / "models" / "sudoku", device=DEVICE)
    return f"{before / 1e9:.1f} GB free before, {after / 1e9:.1f} GB with a freed block in the cache"


print(f"{len(FAILED)} failed" + (f": {', '.join(FAILED)}" if FAILED else ""), flush=True)
sys.exit(len(FAILED))
