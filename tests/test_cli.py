"""What every `solve` command shares: option ranges, exit codes, input from stdin, output files, `solve train`."""

import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from interrupt import ctrl_c_when
from typer.testing import CliRunner

from diffsolve.core import CheckpointError, CtrlC, FinishClock, StepInfo, quiet_worker
from diffsolve.solvers.checkpoints import default_checkpoint
from diffsolve.solvers.cli import app
from diffsolve.solvers.cli_common import InOrder, write_output
from diffsolve.tasks.graph_files import read_graph
from diffsolve.tasks.graphs import GraphError

PETERSEN = "examples/petersen.col"
SUDOKU = "examples/sudoku.txt"


def run(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


@pytest.mark.parametrize("args", [
    ["demo"], ["sudoku", SUDOKU], ["coloring", PETERSEN], ["countdown", "4 6 2", "--target", "12"],
    ["molecules", "-n", "1"], ["train", "sorting", "--out", "unused"],
])
@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_seeds_outside_what_torch_takes_exit_2_before_any_work(args, seed):
    result = run(*args, "--seed", seed)
    assert result.exit_code == 2 and "--seed" in result.output


@pytest.mark.parametrize("command", ["sudoku", "molecules", "coloring", "hamiltonian", "path", "countdown",
                                     "train"])
def test_help_shows_flags_as_flags(command):
    """A flag takes no value, so its help row shows none (typer 0.29 prints '<bool>' there: pinned below it)."""
    result = run(command, "--help")
    assert result.exit_code == 0 and "--help" in result.stdout
    assert "<bool>" not in result.stdout
    assert run(command, "-h").stdout == result.stdout  # -h too, as most tools take it


@pytest.mark.parametrize("args", [
    ["demo"], ["sudoku", SUDOKU], ["coloring", PETERSEN], ["countdown", "4 6 2", "--target", "12"],
    ["molecules", "-n", "1"],
])
def test_every_solving_command_runs_on_the_threads_asked_for(args):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert run(*args, "--threads", "1").exit_code == 0
        assert torch.get_num_threads() == 1
        refused = run(*args, "--threads", "0")
        assert refused.exit_code == 2 and "--threads" in refused.output
    finally:
        torch.set_num_threads(before)


def test_dtype_option_runs_the_model_in_that_dtype():
    from diffsolve.solvers import cli_common

    try:
        result = run("--dtype", "bfloat16", "sudoku", SUDOKU, "--format", "json")
        assert result.exit_code == 0 and all(json.loads(line)["verified"] for line in result.stdout.splitlines())
        assert cli_common.OPTIONS["dtype"] is torch.bfloat16
        model = cli_common.load_task_model(None, "sudoku", "cpu", None)
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        # every dtype the API takes, in any case (float64 for checking numerics against a float32 run)
        assert run("--dtype", "Float64", "sudoku", SUDOKU, "--format", "line").exit_code == 0
        assert cli_common.OPTIONS["dtype"] is torch.float64
    finally:
        cli_common.OPTIONS["dtype"] = "auto"
    refused = run("--dtype", "int8", "sudoku", SUDOKU)
    assert refused.exit_code == 2 and "--dtype int8: expected one of auto, float32, bfloat16" in refused.output


@pytest.mark.parametrize("args", [["sudoku", SUDOKU], ["countdown", "4 6 2", "--target", "12"]])
@pytest.mark.parametrize("name", ["JSON", "jsonl"])  # jsonl: json is one object per line already
def test_format_names_are_read_in_any_case(args, name):
    result = run(*args, "--format", name)
    assert result.exit_code == 0 and all(json.loads(line)["verified"] for line in result.stdout.splitlines())


@pytest.mark.parametrize("args", [
    ["sudoku", SUDOKU, "--temperature", "inf"], ["sudoku", SUDOKU, "--temperature", "nan"],
    ["train", "sorting", "--lr", "nan"], ["train", "sorting", "--lr", "inf"],
    ["train", "sorting", "--time-budget", "nan"], ["train", "sorting", "--lr", "0"], ["train", "sorting", "--lr", "-1"],
])
def test_float_options_must_be_finite(args, tmp_path):
    """typer's ranges let NaN through (every comparison with it is false): each float option says so up front."""
    out = tmp_path / "run"
    result = run(*args, *(["--out", out] if args[0] == "train" else []))
    assert result.exit_code == 2 and args[-2] in result.output
    assert any(reason in result.output for reason in ("not a finite number", "not in the range", "is not above 0"))
    assert not out.exists()


@pytest.mark.parametrize("args", [["sudoku", SUDOKU], ["coloring", PETERSEN], ["countdown", "4 6 2", "--target", "12"]])
def test_canvases_beyond_what_memory_holds_are_refused_up_front(args):
    result = run(*args, "--canvases", 10**7)
    assert result.exit_code == 2 and "--canvases" in result.output and "1<=x<=1024" in result.output


def test_demo_refuses_a_checkpoint_of_another_task():
    result = run("demo", "--checkpoint", default_checkpoint("sudoku"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --checkpoint {default_checkpoint('sudoku')}: not a sorting checkpoint")


def test_demo_samples_one_canvas_from_a_checkpoint_saved_before_max_new_tokens(tmp_path):
    """Saves before 2026-12-06 name no length, which now means 256 tokens (as in transformers): the demo still
    denoises its one 16-digit canvas."""
    import shutil

    old = tmp_path / "sort-demo"
    shutil.copytree(default_checkpoint("sorting"), old)
    config = json.loads((old / "generation_config.json").read_text())
    del config["max_new_tokens"]
    (old / "generation_config.json").write_text(json.dumps(config))
    result = run("demo", "--checkpoint", str(old), "--digits", "3141592653589793")
    assert result.exit_code == 0 and "output    1123334555678999  verified" in result.output


def test_demo_takes_only_ascii_digits():
    result = run("demo", "--digits", "³" * 16)
    assert result.exit_code == 2 and "--digits needs exactly 16 digits" in result.stderr


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.startswith("diffsolve ")


# ------------------------------------------------------------------------------------------ train
def test_an_extended_run_says_so_on_its_card_and_no_run_starts_inside_another(tmp_path):
    """More --steps reschedule the rest of a run: the card's command, run fresh, would give other weights. A run
    begun inside another's checkpoint/ was deleted by that run's next save."""
    threads = str(torch.get_num_threads())
    out = tmp_path / "run"
    assert run("train", "sorting", "--out", out, "--steps", 2, "--batch-size", 4, "--threads", threads).exit_code == 0
    nested = run("train", "sorting", "--out", out / "checkpoint" / "inner", "--steps", 2, "--threads", threads)
    assert nested.exit_code == 2 and f"--out {out / 'checkpoint' / 'inner'}: inside the run {out}" in \
        " ".join(nested.stderr.split())
    assert run("train", "sorting", "--out", out, "--steps", 3, "--batch-size", 4, "--threads", threads).exit_code == 0
    card = " ".join((out / "model" / "README.md").read_text().split())
    assert "The run was extended (steps 1-2 under --steps 2; step 3 under --steps 3)" in card
    deeper = run("train", "sorting", "--out", tmp_path / "deep", "--init", out / "model", "--deepen", 9)
    assert deeper.exit_code == 2 and "9 is not in the range 1<=x<=8" in deeper.stderr


def test_resuming_a_run_with_another_recipe_or_model_is_refused(tmp_path):
    threads = str(torch.get_num_threads())
    out = tmp_path / "run"
    assert run("train", "sorting", "--out", out, "--steps", 2, "--batch-size", 4, "--threads", threads).exit_code == 0
    other_batch = run("train", "sorting", "--out", out, "--steps", 4, "--batch-size", 8, "--threads", threads)
    assert other_batch.exit_code == 2 and "batch_size 4 -> 8" in other_batch.stderr
    other_model = run("train", "graphs", "--out", out, "--steps", 4, "--batch-size", 4, "--threads", threads)
    assert other_model.exit_code == 2 and "continues a run of the sorting task, not graphs" in other_model.stderr
    longer = run("train", "sorting", "--out", out, "--steps", 3, "--batch-size", 4, "--threads", threads)
    assert longer.exit_code == 0 and json.loads(longer.stdout)["resumed_from"] == 2
    assert "resuming from the checkpoint at step 2 of 3" in longer.stderr
    card = (out / "model" / "README.md").read_text()
    again = run("train", "sorting", "--out", out, "--steps", 3, "--batch-size", 4, "--threads", threads)
    assert again.exit_code == 0 and "the run already ended at step 3" in again.stderr
    fewer = run("train", "sorting", "--out", out, "--steps", 2, "--batch-size", 4, "--threads", threads)
    assert fewer.exit_code == 2 and "holds a run at step 3, past steps=2" in fewer.stderr
    assert json.loads(again.stdout)["loss"] == json.loads(longer.stdout)["loss"]  # the last logged, not nothing
    assert (out / "model" / "README.md").read_text() == card and "nan" not in card
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # a lab can read it
    assert (out / "checkpoint" / "training_state.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # was 0600

    begun = tmp_path / "begun"
    init = ["--init", default_checkpoint("sorting")]
    assert run("train", "sorting", "--out", begun, "--steps", 2, "--batch-size", 4, "--threads", threads,
               *init).exit_code == 0
    without = run("train", "sorting", "--out", begun, "--steps", 3, "--batch-size", 4, "--threads", threads)
    assert without.exit_code == 2 and f"init {default_checkpoint('sorting').resolve()} -> None" in without.stderr


def _solve_train(*args, **popen) -> subprocess.Popen:
    """`solve train sorting` in a child whose SIGHUP is the default, as in a terminal, even when these tests run
    under nohup (which the child would inherit); `preexec_fn` replaces that."""
    solve = Path(sys.executable).parent / "solve"
    popen.setdefault("preexec_fn", lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    return subprocess.Popen([str(solve), "train", "sorting", *map(str, args), "--threads", "1"], **popen)


def test_train_that_cannot_write_its_checkpoint_says_so_and_keeps_the_last(tmp_path):
    import resource

    out = tmp_path / "run"
    assert run("train", "sorting", "--out", out, "--steps", 2, "--batch-size", 4, "--threads", 1).exit_code == 0
    before = (out / "checkpoint" / "model.safetensors").read_bytes()
    def small() -> None:  # a full disk, for the weights; SIGHUP as in a terminal (see _solve_train)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    child = _solve_train("--out", out, "--steps", 4, "--batch-size", 4, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=small)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 74 and "Traceback" not in err, err  # was a SafetensorError traceback, exit 1
    assert re.search(f"cannot write the checkpoint of step [34] to {re.escape(str(out / 'checkpoint'))} "
                     r"\(SafetensorError: Error while serializing: I/O error: File too large", err)
    assert f"the checkpoint in {out / 'checkpoint'} is intact" in err
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [".train.lock", "checkpoint", "model", "train_log.jsonl"]


@pytest.mark.parametrize("stop", ["reader gone", "SIGHUP"])
def test_train_keeps_a_checkpoint_when_stderr_s_reader_goes_or_the_terminal_closes(tmp_path, stop):
    out = tmp_path / "run"
    child = _solve_train("--out", out, "--steps", 100_000, "--batch-size", 4, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)  # checkpoints every 500 steps; logs every 25
    try:
        logged = json.loads(child.stdout.readline())  # the first log line
        if stop == "reader gone":  # `solve train ... 2>&1 | head -1`
            child.stdout.close()
        else:
            child.send_signal(signal.SIGHUP)
        child.wait(timeout=300)
    finally:
        child.kill()
    assert child.returncode == (141 if stop == "reader gone" else 130)
    state = json.loads((out / "checkpoint" / "training_state.json").read_text())
    assert state["step"] >= logged["step"] == 25  # was no checkpoint at all: up to 250 steps lost
    assert state["step"] < 250


def test_train_under_nohup_outlives_the_terminal(tmp_path):
    ignore = lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does before it runs the command
    child = _solve_train("--out", tmp_path / "run", "--steps", 100_000, "--batch-size", 4, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, preexec_fn=ignore)
    try:
        assert json.loads(child.stderr.readline())["step"] == 25
        child.send_signal(signal.SIGHUP)
        assert json.loads(child.stderr.readline())["step"] == 50  # still training
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=300)
    finally:
        child.kill()
    assert child.returncode == 130


def test_a_damaged_checkpoint_or_a_model_folder_as_the_run_directory_is_refused(tmp_path):
    threads = str(torch.get_num_threads())
    out = tmp_path / "run"
    assert run("train", "sorting", "--out", out, "--steps", 2, "--batch-size", 4, "--threads", threads).exit_code == 0
    nested = run("train", "sorting", "--out", out / "checkpoint", "--steps", 2, "--batch-size", 4)
    assert nested.exit_code == 2 and "holds a model (config.json)" in nested.stderr  # was a run inside the run
    state = out / "checkpoint" / "training_state.safetensors"
    state.write_bytes(state.read_bytes()[:50])
    damaged = run("train", "sorting", "--out", out, "--steps", 3, "--batch-size", 4, "--threads", threads)
    assert damaged.exit_code == 2 and "checkpoint is damaged (SafetensorError" in damaged.stderr  # was a traceback
    assert "delete it to start the run over" in damaged.stderr and "resuming" not in damaged.stderr


def test_train_names_unusable_run_directories_and_data(tmp_path):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    result = run("train", "sorting", "--out", not_a_folder)
    assert result.exit_code == 2 and "not a folder" in result.stderr
    result = run("train", "sudoku", "--out", tmp_path / "a", "--data", tmp_path / "typo.npz")
    assert result.exit_code == 2 and "typo.npz: no such file" in result.stderr
    result = run("train", "sudoku", "--out", tmp_path / "b", "--data", not_a_folder)
    assert result.exit_code == 2 and "not a sudoku training set" in result.stderr
    assert "not a readable .npz archive" in result.stderr and "pickle" not in result.stderr
    assert "numpy.savez's archive of puzzles [N, 81], solutions [N, 81]" in " ".join(result.stderr.split())
    result = run("train", "sudoku", "--out", "/proc/diffsolve_run", "--examples", 20, "--workers", 1)
    assert result.exit_code == 2 and "--out /proc/diffsolve_run" in result.stderr
    assert "generating" not in result.stderr  # refused before the training set is built
    short = tmp_path / "short.npz"
    np.savez(short, puzzles=np.zeros((5, 80), np.uint8), solutions=np.ones((5, 80), np.uint8))
    result = run("train", "sudoku", "--out", tmp_path / "c", "--data", short)
    assert result.exit_code == 2 and ("arrays shaped puzzles [5, 80], solutions [5, 80]; expected puzzles [N, 81], "
                                     "solutions [N, 81] with one N") in result.stderr
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, puzzles=np.full((5, 81), 12, np.uint8), solutions=np.ones((5, 81), np.uint8))
    result = run("train", "sudoku", "--out", tmp_path / "c", "--data", wrong)
    assert result.exit_code == 2 and "puzzles must hold 0-9" in result.stderr
    assert not (tmp_path / "c").exists()  # the run folder the refused command made is gone again
    solved = "".join(str((r * 3 + r // 3 + c) % 9 + 1) for r in range(9) for c in range(9))  # a valid grid
    grids = np.tile(np.array([int(c) for c in solved], np.uint8), (3, 1))
    grids[2, [0, 1]] = grids[2, [1, 0]]  # two digits swapped in a row: its columns now repeat them
    ones = tmp_path / "rules.npz"
    np.savez(ones, puzzles=np.zeros((3, 81), np.uint8), solutions=grids)
    result = run("train", "sudoku", "--out", tmp_path / "c", "--data", ones)
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "1 solution repeats a digit in a row, column or box (the first at index 2" in said
    odd = tmp_path / "odd.npz"
    np.savez(odd, puzzles=np.zeros((5, 81), np.uint8), solutions=np.ones((5, 81), np.uint8),
             **{"made_with:examples": np.arange(3)})
    result = run("train", "sudoku", "--out", tmp_path / "d", "--data", odd)
    assert result.exit_code == 2 and "'made_with:' record holds something other than single whole numbers" in \
        result.stderr
    assert not (tmp_path / "d").exists()
    fractions = tmp_path / "fractions.npz"  # np.zeros' default float64: 1.5 trained as 1
    np.savez(fractions, puzzles=np.zeros((5, 81)), solutions=np.full((5, 81), 1.5))
    result = run("train", "sudoku", "--out", tmp_path / "e", "--data", fractions)
    assert result.exit_code == 2 and "'puzzles' holds float64 values, not digits (whole numbers)" in result.stderr
    result = run("train", "sudoku", "--out", tmp_path / "f", "--data", fractions, "--examples", 50, "--workers", 7)
    assert result.exit_code == 2 and "--examples and --workers: these shape a training set built in the run " \
        "directory" in result.stderr  # were ignored, and left out of the card's command
    result = run("train", "sudoku", "--out", tmp_path / "g", "--data", tmp_path)
    assert result.exit_code == 2 and "a folder, not a file" in result.stderr


@pytest.mark.parametrize("command", [["sudoku"], ["coloring"], ["hamiltonian"], ["countdown"]])
def test_an_endless_input_is_refused_with_exit_2_not_read_until_memory_runs_out(command):
    result = run(*command, "/dev/zero")
    assert result.exit_code == 2 and "more than 256 MiB, and inputs are read whole" in result.stderr
    assert "Errno" not in result.stderr


@pytest.mark.parametrize("command", [["coloring"], ["hamiltonian"], ["path", "--source", "1", "--target", "3"]])
def test_a_graph_command_does_not_draw_over_its_input(tmp_path, command):
    graph = tmp_path / "g.png"  # an edge list, whatever its name says
    graph.write_text("1 2\n2 3\n3 1\n")
    result = run(*command, graph, "--image", graph)
    assert result.exit_code == 2 and "is the input file: the picture would replace the graph" in result.stderr
    assert graph.read_text() == "1 2\n2 3\n3 1\n"


def test_train_refuses_an_empty_out_and_takes_the_current_folder_when_named(tmp_path, monkeypatch):
    """An empty --out (an unset shell variable) would be the current folder: refused; '.' is a choice."""
    monkeypatch.chdir(tmp_path)
    for out in ("", "  "):
        result = run("train", "sorting", "--out", out, "--steps", 2, "--batch-size", 4, "--threads", 1)
        assert result.exit_code == 2 and "--out is empty: name the run directory" in result.stderr
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "train.out").write_text("")  # a shell redirect made before the command runs
    assert run("train", "sorting", "--out", ".", "--steps", 2, "--batch-size", 4, "--threads", 1).exit_code == 0
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_train_refuses_a_run_directory_another_process_trains_in(tmp_path):
    from diffsolve.core.training import RunLock

    busy = tmp_path / "busy"
    busy.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import sys, time; from diffsolve.core.training import RunLock; "
                              f"lock = RunLock({str(busy)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        result = run("train", "sudoku", "--out", busy, "--examples", 20, "--workers", 1)
        assert result.exit_code == 2 and "another training process is running in this directory" in result.stderr
        assert "generating" not in result.stderr and sorted(p.name for p in busy.iterdir()) == [".train.lock"]
    finally:
        other.kill()
        other.wait()
    with RunLock(busy):  # free again once that process is gone
        pass


def test_train_refuses_set_options_for_tasks_without_a_prepared_set(tmp_path):
    result = run("train", "graphs", "--out", tmp_path / "g", "--examples", 5, "--workers", 1)
    assert result.exit_code == 2 and "--examples, --workers: only sudoku and molecules train on a prepared set; " \
        "graphs draws fresh instances for every batch" in result.stderr
    result = run("train", "sorting", "--out", tmp_path / "g", "--data", tmp_path / "missing.npz")
    assert result.exit_code == 2 and "--data: only sudoku and molecules train on a prepared set" in result.stderr
    assert not (tmp_path / "g").exists()


def test_the_card_says_when_a_time_budget_ended_the_run_and_where_its_schedule_was():
    from diffsolve.core.training import TrainConfig
    from diffsolve.solvers.train_cli import _steps_run

    budgeted = TrainConfig(steps=1000, lr=2e-3, warmup_steps=100, time_budget_s=60)
    assert _steps_run(budgeted, {"steps": 1000}) == "1000 steps"
    assert _steps_run(budgeted, {"steps": 10}) == ("10 of 1000 steps (the 60 s budget ended the run inside the "
                                                   "warmup, at lr 0.0002: the peak was never reached)")
    assert _steps_run(budgeted, {"steps": 100}) == ("100 of 1000 steps (the 60 s budget ended the run; the cosine "
                                                    "followed the clock)")


def test_train_refuses_a_cached_training_set_made_with_other_settings(tmp_path):
    from diffsolve.tasks.sudoku import base_set

    cache = tmp_path / "run" / "sudoku_base.npz"
    puzzles, _ = base_set(cache, 20, seed=0, workers=1)
    result = run("train", "sudoku", "--out", tmp_path / "run", "--examples", 30, "--workers", 1, "--steps", 1)
    assert result.exit_code == 2 and "made with other settings (examples 20, not 30)" in result.stderr
    again, _ = base_set(cache, 20, seed=0, workers=1)  # the same settings read it back
    assert (again == puzzles).all() and len(again) == 20
    assert len(base_set(cache, 30, seed=1, check=False)[0]) == 20  # --data: the file is what it is
    # each worker generates its share from its own seed: the count is part of the set and of the card's command
    result = run("train", "sudoku", "--out", tmp_path / "run", "--examples", 20, "--workers", 2, "--steps", 1)
    assert result.exit_code == 2 and "workers 1, not 2" in result.stderr
    result = run("train", "sudoku", "--out", tmp_path / "run", "--examples", 20, "--workers", 1, "--steps", 1,
                 "--batch-size", 2, "--threads", torch.get_num_threads())
    assert result.exit_code == 0, result.output
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "--examples 20 --workers 1" in card and "generated by `--workers` processes" in card


def test_a_run_on_a_data_file_resumes_only_on_the_same_set(tmp_path):
    from diffsolve.tasks.sudoku import base_set

    first, other = tmp_path / "first.npz", tmp_path / "other.npz"
    base_set(first, 20, seed=0, workers=1)
    base_set(other, 20, seed=1, workers=1)
    args = ("train", "sudoku", "--out", tmp_path / "run", "--batch-size", 2, "--threads", torch.get_num_threads())
    assert run(*args, "--steps", 1, "--data", first).exit_code == 0
    result = run(*args, "--steps", 2, "--data", other)
    assert result.exit_code == 2 and "another recipe (data sha256:" in result.stderr
    moved = tmp_path / "moved.npz"
    first.rename(moved)  # the same set under another name continues the run
    assert run(*args, "--steps", 2, "--data", moved).exit_code == 0
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "`moved.npz`, sha256:" in card and "Its record says diffsolve generated it (examples 20, seed 0, " \
        "workers 1)" in card


def test_a_card_does_not_vouch_for_a_data_file_without_a_record(tmp_path):
    from diffsolve.tasks.sudoku import base_set

    made = tmp_path / "made.npz"
    puzzles, solutions = base_set(made, 8, seed=0, workers=1)
    bare = tmp_path / "bare.npz"  # the same arrays, saved by someone else's script
    np.savez(bare, puzzles=puzzles, solutions=solutions)
    result = run("train", "sudoku", "--out", tmp_path / "run", "--batch-size", 2, "--steps", 1, "--data", bare,
                 "--threads", torch.get_num_threads())
    assert result.exit_code == 0, result.output
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "no record of how it was made" in card and "never the public evaluation sets" not in card


def test_train_deepens_an_init_model_and_refuses_one_of_another_task(tmp_path):
    threads = str(torch.get_num_threads())
    alone = run("train", "sorting", "--out", tmp_path / "a", "--deepen", 2)
    assert alone.exit_code == 2 and "--deepen grows the model given by --init" in alone.stderr
    other = run("train", "sorting", "--out", tmp_path / "b", "--init", default_checkpoint("molecules"))
    assert other.exit_code == 2 and "not a sorting checkpoint" in other.stderr
    assert not (tmp_path / "b").exists()  # refused before the run directory (and its lock) is made

    init = default_checkpoint("sorting")
    result = run("train", "sorting", "--out", tmp_path / "c", "--steps", 2, "--batch-size", 4, "--threads", threads,
                 "--init", init, "--deepen", 2)
    assert result.exit_code == 0, result.output
    grown = json.loads((tmp_path / "c" / "model" / "config.json").read_text())["text_config"]
    shipped = json.loads((init / "config.json").read_text())["text_config"]
    assert grown["num_hidden_layers"] == 2 * shipped["num_hidden_layers"]
    assert f"--init {init} --deepen 2" in (tmp_path / "c" / "model" / "README.md").read_text()


def test_a_short_run_from_init_keeps_what_the_model_knows(tmp_path):
    """A fresh optimizer's first steps at the scratch rate wiped the shipped sorting model out (exact 0.99 -> 0.0
    after 2 steps); from --init the default rate is lower and the warmup never shorter than 10 steps."""
    result = run("train", "sorting", "--out", tmp_path, "--steps", 2, "--threads", torch.get_num_threads(),
                 "--init", default_checkpoint("sorting"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_only_exact"] >= 0.9
    card = (tmp_path / "model" / "README.md").read_text()
    assert "lr 0.0005 with 10 warmup steps" in card and "2 steps, all inside the warmup (the last at lr 0.0001)" in card
    assert "--lr 0.0005" in card  # the command that reproduces it names the rate


# ------------------------------------------------------------------------------------------ output files
def test_atomic_writes_leave_other_files_alone_and_get_normal_permissions(tmp_path):
    target, bystander = tmp_path / "out.smi", tmp_path / "out.tmp.smi"
    bystander.write_text("precious")
    write_output(target, lambda tmp: tmp.write_text("CCO\n"))
    assert target.read_text() == "CCO\n" and bystander.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.smi", "out.tmp.smi"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_molecules_out_dash_is_stdout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("molecules", "-n", 1, "--seed", 0, "--out", "-")
    assert result.exit_code == 0 and result.stdout.strip() and not (tmp_path / "-").exists()


# ------------------------------------------------------------------------------------------ graphs
def test_edge_lists_reject_infinite_and_mixed_weights_and_keep_zero_padded_labels(tmp_path):
    f = tmp_path / "g.txt"
    f.write_text("1 2 inf\n")
    with pytest.raises(GraphError, match=r"g.txt:1: weight inf must be a finite"):
        read_graph(f)
    f.write_text("1 2 5\n2 3\n")
    with pytest.raises(GraphError, match=r"g.txt:2: an edge without a weight, unlike the edge on line 1"):
        read_graph(f)
    f.write_text("1 2 -1.5\n2 3 0.5\n")  # a signed network: weights only a shortest path needs non-negative
    assert read_graph(f)[1][2]["weight"] == -1.5 and run("coloring", f, "--image", tmp_path / "g.png").exit_code == 0
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"  # laid out by structure: no weight is a distance
    negative = run("path", f, "--source", "1", "--target", "3", "--shortest")
    assert negative.exit_code == 2 and "g.txt:1: weight -1.5 on edge 1 2; shortest paths need" in negative.stderr
    f.write_text("01 02\n02 3\n")
    assert set(read_graph(f).nodes) == {"01", "02", 3}
    result = run("path", f, "--source", "01", "--target", "3")
    assert result.exit_code == 0 and "verified path: 01 02 3 (2 edges" in result.stdout


def test_graph_commands_read_stdin():
    text = open(PETERSEN).read()
    result = run("coloring", "-", "--format", "json", input=text)
    assert result.exit_code == 0 and json.loads(result.stdout)["num_colors"] == 3


def test_long_forced_routes_are_found():
    """A 24-edge chain between source and target, and a 31-node path graph with no end given: positions hold
    only nodes near enough to the pinned ends, and a node with one neighbour ends a Hamiltonian path."""
    chain = "\n".join(f"{i} {i + 1}" for i in range(1, 31))
    result = run("hamiltonian", "-", "--format", "json", input=chain)
    assert result.exit_code == 0 and json.loads(result.stdout)["path"] in (list(range(1, 32)), list(range(31, 0, -1)))
    result = run("path", "-", "--source", 1, "--target", 25, "--format", "json",
                 input="\n".join(f"{i} {i + 1}" for i in range(1, 25)))
    assert result.exit_code == 0 and json.loads(result.stdout)["path"] == list(range(1, 26))


def test_three_nodes_with_one_neighbour_rule_out_a_hamiltonian_path():
    result = run("hamiltonian", "-", input="1 2\n1 3\n1 4\n")
    assert result.exit_code == 1 and "3 nodes have one neighbour (2, 3, 4)" in result.stdout


def test_hamiltonian_start_and_end_on_one_node_is_bad_input():
    result = run("hamiltonian", PETERSEN, "--start", 1, "--end", 1)
    assert result.exit_code == 2 and "--cycle" in result.stderr


def test_countdown_file_with_a_bad_line_solves_the_others(tmp_path):
    f = tmp_path / "cd.jsonl"
    f.write_text('{"input": "4,6,2,12"}\nnot json\n{"input": "3,5,8,2,24"}\n')
    result = run("countdown", f, "--format", "json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1 and [r["line"] for r in rows] == [1, 2, 3]
    assert rows[0]["verified"] and rows[2]["verified"] and rows[1]["reason"].startswith("unreadable")
    assert f"{f}:2:" in result.stderr
    piped = run("countdown", "-", "--format", "json", input=f.read_text())
    assert [json.loads(line)["line"] for line in piped.stdout.splitlines()] == [1, 2, 3]
    assert run("countdown", "").exit_code == 2


@pytest.mark.parametrize("source", ["-", "fifo"])
def test_countdown_stdin_with_target_is_refused_without_waiting_for_stdin(source, tmp_path):
    """`-` with stdin left open, or a named pipe no one writes to (opening it would block): refused at once."""
    if source == "fifo":
        source = tmp_path / "numbers.jsonl"
        os.mkfifo(source)
    solve = Path(sys.executable).parent / "solve"
    child = subprocess.Popen([str(solve), "countdown", str(source), "--target", "5"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # stdin stays open
    try:
        child.wait(timeout=120)  # not communicate(), which closes stdin: reading first would hang here
        err = child.stderr.read()
    finally:
        child.kill()
        child.stdin.close()
    assert child.returncode == 2 and "--target applies to numbers given inline; in " in err


@pytest.mark.parametrize("args, message", [
    (["sudoku", SUDOKU, "--model-only", "--canvases", "4"], "--canvases 4: --model-only samples one canvas"),
    (["hamiltonian", PETERSEN, "--model-only", "--canvases", "2"], "--canvases 2: --model-only samples one canvas"),
    (["molecules", "-n", "1", "--format", "XML"], "--format must be smi, csv, sdf or json, not 'XML'"),
    (["coloring", PETERSEN, "--format", "yaml"], "--format must be text or json, not 'yaml'"),
    (["sudoku", SUDOKU, "-f", "csv"], "--format must be text, line or json, not 'csv'"),
])
def test_options_that_cannot_apply_are_refused_by_name_before_a_model_loads(args, message):
    result = run(*args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_ctrl_c_during_a_colouring_search_prints_the_colouring_verified_so_far(tmp_path):
    f = tmp_path / "g120.txt"
    nx.write_edgelist(nx.gnp_random_graph(120, 0.5, seed=2), f, data=False)  # DSATUR 21; 21, 20, 19 verify
    status, out, err = ctrl_c_when(["coloring", str(f), "--threads", "1", "-f", "json"],
                                   ready=r"21-colouring verified")
    printed = json.loads(out)
    assert status == 130 and printed["verified"] and printed["num_colors"] == 21, err
    assert all(printed["coloring"][str(u)] != printed["coloring"][str(v)] for u, v in nx.read_edgelist(f).edges)
    assert "interrupted: the 21-colouring printed was verified; the search for fewer colours was stopped" in err


def test_a_reader_that_stops_early_ends_solve_with_the_sigpipe_status_not_unsolved(tmp_path):
    """`solve ... | head -1`: exit 141 as for `cat` (the shell's status for SIGPIPE), not 1 (some unsolved)."""
    f = tmp_path / "many.jsonl"  # unsolvable instances are answered without sampling: output faster than a pipe
    f.write_text("".join(json.dumps({"input": f"1,1,1,{500 + k % 400}"}) + "\n" for k in range(3000)))
    solve = Path(sys.executable).parent / "solve"
    child = subprocess.Popen([str(solve), "countdown", str(f), "--format", "json"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
    first = child.stdout.readline()
    child.stdout.close()  # the reader goes away, as `head -1` does
    assert json.loads(first)["line"] == 1 and child.wait(timeout=120) == 128 + signal.SIGPIPE
    f.write_text("not an instance\n" * 3000)  # an error per line on stderr: `2>&1 | head -1` ends it the same way
    child = subprocess.Popen([str(solve), "countdown", str(f)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = child.stdout.readline()
    child.stdout.close()
    assert first.startswith(b"error: ") and child.wait(timeout=120) == 128 + signal.SIGPIPE


def test_an_output_that_cannot_be_written_is_said_and_a_closed_stderr_stops_nothing(tmp_path):
    """A full disk: one line and status 74 (EX_IOERR), not a traceback and 1 ('some unsolved'); a closed stdout is
    refused at once when the results would go there; with stderr closed the results still come."""
    f = tmp_path / "two.jsonl"
    f.write_text(json.dumps({"input": "1,1,1,900"}) + "\n" + json.dumps({"input": "3,4,7"}) + "\n")
    solve = f"'{Path(sys.executable).parent / 'solve'}' countdown '{f}' --format json"
    full = subprocess.run(f"{solve} > /dev/full", shell=True, capture_output=True, text=True, timeout=120)
    assert full.returncode == 74 and full.stderr == "error: cannot write the output: No space left on device\n"
    closed = subprocess.run(f"{solve} >&-", shell=True, capture_output=True, text=True, timeout=120)
    assert closed.returncode == 2 and "stdout is closed: the results would be lost" in closed.stderr
    elsewhere = subprocess.run(f"'{Path(sys.executable).parent / 'solve'}' molecules -n 1 --budget 8 --seed 0 --out "
                               f"'{tmp_path / 'm.smi'}' >&-", shell=True, capture_output=True, text=True, timeout=120)
    assert elsewhere.returncode in (0, 1) and "stdout is closed" not in elsewhere.stderr  # --out: not needed
    trained = subprocess.run(f"'{Path(sys.executable).parent / 'solve'}' train sorting --out '{tmp_path / 'run'}' "
                             "--steps 2 --batch-size 2 --threads 1 >&-", shell=True, capture_output=True, text=True,
                             timeout=120)  # its summary goes to stdout: refused before it trains, not after
    assert trained.returncode == 2 and "stdout is closed" in trained.stderr and not (tmp_path / "run").exists()
    quiet = subprocess.run(f"{solve} 2>&-", shell=True, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 1 and [json.loads(line)["verified"] for line in quiet.stdout.splitlines()] == [
        False, True]  # 1, 1, 1 cannot make 900


# ------------------------------------------------------------------------------------------ timing
def test_finish_clock_gives_each_instance_the_time_its_last_canvas_stopped():
    clock = FinishClock(4, canvases=2)
    empty = torch.zeros(4, 1)

    def step(finished: list[bool]) -> None:
        flags = torch.tensor(finished)
        clock(StepInfo(0, 1, torch.arange(4), empty, empty, empty.bool(), empty.bool(), flags, flags))

    step([True, False, False, False])
    clock.began -= 1.0  # one second later
    step([True, True, False, False])
    seconds = clock.latency()
    assert seconds[0] >= 1.0 and seconds[1] >= seconds[0] and not math.isnan(seconds[1])
    assert clock.stopped_at[0] < 1.0  # the first stop keeps its time


def test_a_failed_write_leaves_no_temporary_file_and_the_old_output_intact(tmp_path):
    target = tmp_path / "out.smi"
    target.write_text("old\n")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError):
        write_output(target, broken)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.smi"]


def test_a_one_node_graph_is_its_own_hamiltonian_path():
    result = run("hamiltonian", "-", "--start", "a", "--end", "a", input="a\n")
    assert result.exit_code == 0 and "verified Hamiltonian path: a" in result.stdout


def test_a_csv_line_without_a_header_gets_a_hint():
    puzzle = [line for line in open(SUDOKU).read().splitlines() if not line.startswith("#")][0]
    result = run("sudoku", "-", input=f"{puzzle},{puzzle}\n")
    assert result.exit_code == 2 and "<stdin>:1: expected 81 cells, got 163 (CSV? the first line" in result.stderr


def test_molecules_found_none_leaves_the_out_file_alone(tmp_path):
    out = tmp_path / "keep.smi"
    out.write_text("CCO\n")
    result = run("molecules", "-n", 3, "--budget", 1, "--logp", "5.5:6", "--seed", 0, "--out", out)
    assert result.exit_code == 1 and "not written" in result.stderr and out.read_text() == "CCO\n"


def test_sigterm_counts_as_ctrl_c_and_the_handlers_come_back():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with CtrlC() as ctrl_c:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs in the main thread between bytecodes
        assert ctrl_c.asked and ctrl_c.terminated
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.stop_if_asked()
        with pytest.raises(KeyboardInterrupt):  # work whose safe points are far apart stops sooner
            ctrl_c.stop_if_terminated()
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with CtrlC() as ctrl_c:  # at a terminal, whoever pressed Ctrl-C can press it again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert ctrl_c.asked and not ctrl_c.terminated
        ctrl_c.stop_if_terminated()
    hup = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, also when the tests run under nohup
    with CtrlC() as ctrl_c:  # systemd and closing terminals send SIGTERM and SIGHUP together: still one clean stop
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)  # raised KeyboardInterrupt here: a stop with no checkpoint
        time.sleep(0.05)
        assert ctrl_c.asked and ctrl_c.terminated
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C after it: someone at the terminal wants it now
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    signal.signal(signal.SIGHUP, hup)


def _sighup_action(_) -> str:
    return str(signal.getsignal(signal.SIGHUP))


def test_pool_workers_die_quietly_on_sighup():
    import multiprocessing

    before = signal.signal(signal.SIGHUP, signal.default_int_handler)  # as the CLI sets it
    try:
        with multiprocessing.get_context("fork").Pool(1, initializer=quiet_worker) as pool:
            assert pool.map(_sighup_action, [0]) == [str(signal.SIG_DFL)]  # was a KeyboardInterrupt traceback each
    finally:
        signal.signal(signal.SIGHUP, before)


def test_an_interrupt_prints_every_record_in_order_the_unfinished_as_such():
    printed = []
    order = InOrder([True, True, False, True, True], lambda k, result: printed.append((k, result)),
                    lambda k: printed.append((k, "unreadable")))
    order.add(1, "second")  # entry 1 is done, entry 0 is not: nothing can be printed yet
    assert printed == []
    said = order.interrupt(lambda k: printed.append((k, "interrupted")), "puzzle")
    assert printed == [(0, "interrupted"), (1, "second"), (2, "unreadable"), (3, "interrupted"), (4, "interrupted")]
    assert said == "1 of 5 puzzles done; 3 unfinished, printed as interrupted; 1 unreadable"


def test_an_interrupt_before_the_work_begins_still_exits_130():
    solve = Path(sys.executable).parent / "solve"
    child = subprocess.Popen([str(solve), "sudoku", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # waits for stdin, which never comes
    try:
        deadline = time.monotonic() + 120
        while not _catches(child.pid, signal.SIGTERM):  # the CLI's handler is in place
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, err


def test_a_closed_stdin_is_an_unreadable_input_not_a_crash():
    solve = Path(sys.executable).parent / "solve"
    for command in (["sudoku", "-"], ["path", "-", "--source", "1", "--target", "2"]):
        done = subprocess.run([str(solve), *command], stdin=None, capture_output=True, text=True, timeout=300,
                              preexec_fn=lambda: os.close(0))  # as '<&-' in a shell: Python's sys.stdin is None
        assert done.returncode == 2 and "<stdin>: cannot" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_weights_that_load_but_overflow_end_in_one_line_not_a_traceback(tmp_path):
    from safetensors.torch import load_file, save_file

    checkpoint = tmp_path / "overflowing"
    checkpoint.mkdir()
    for name in os.listdir(default_checkpoint("sorting")):
        (checkpoint / name).write_bytes((default_checkpoint("sorting") / name).read_bytes())
    weights = load_file(str(checkpoint / "model.safetensors"))
    query = next(name for name in weights if "q_proj" in name)
    weights[query] = weights[query] * 1e38  # finite, as flipped bytes left them: attention overflows to NaN
    save_file(weights, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    solve = Path(sys.executable).parent / "solve"
    done = subprocess.run([str(solve), "demo", "--checkpoint", str(checkpoint)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "error: the model's output holds NaN or infinite values: its weights may be damaged" in done.stderr


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler for `sig` (Linux: the SigCgt mask in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask >> (sig - 1) & 1)


def test_a_stop_while_writing_the_model_leaves_no_card_of_other_weights(tmp_path, monkeypatch):
    from diffsolve.core import DiffusionGemma

    args = ("train", "sorting", "--out", tmp_path / "run", "--batch-size", 2, "--threads", torch.get_num_threads())
    assert run(*args, "--steps", 1).exit_code == 0
    card = tmp_path / "run" / "model" / "README.md"
    assert card.is_file()

    def stopped(self, path, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DiffusionGemma, "save_pretrained", stopped)
    result = run(*args, "--steps", 2)
    assert result.exit_code == 130 and "was not completely written" in result.stderr
    assert not card.exists()  # the card of step 1's weights went before step 2's were written


SOLVE = Path(sys.executable).parent / "solve"


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_command_starts_is_status_130_without_a_traceback(sent):
    """torch and RDKit take seconds to import: Ctrl-C right after a mistyped command printed a traceback, and
    SIGTERM or SIGHUP gave 143 or 129, where the README promises 130."""
    child = subprocess.Popen([str(SOLVE), "sudoku", SUDOKU], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT,
                                                                                            signal.SIGHUP)])
    time.sleep(0.5)  # inside the imports
    child.send_signal(sent)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and b"Traceback" not in err, err[-500:]


def test_results_still_come_when_only_the_reader_of_stderr_goes(tmp_path):
    """`solve ... 2>&1 >results.txt | true`: the first warning killed the run (141) with nothing solved."""
    puzzles = tmp_path / "p.txt"
    puzzles.write_text("12345\n" + Path(SUDOKU).read_text().splitlines()[1] + "\n")
    results = tmp_path / "results.txt"
    with results.open("w") as out:
        child = subprocess.Popen([str(SOLVE), "sudoku", str(puzzles), "-f", "line", "--threads", "1"], stdout=out,
                                 stderr=subprocess.PIPE)
        child.stderr.close()  # the reader of stderr is gone before the first warning
        assert child.wait(timeout=300) == 1  # one puzzle unreadable, the other solved
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("# line 1: unreadable") and re.fullmatch("[1-9]{81}", lines[1])


def test_names_the_encoding_lacks_print_escaped_and_threads_are_bounded(tmp_path):
    graph = tmp_path / "städte.txt"
    graph.write_text("München Berlin\nBerlin Köln\nKöln München\n")
    done = subprocess.run([str(SOLVE), "coloring", str(graph), "--threads", "1"], capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"}, timeout=300)
    assert done.returncode == 0 and b"st\\xe4dte.txt: 3-colouring verified" in done.stderr, done.stderr[-500:]
    assert b"M\\xfcnchen " in done.stdout  # a label, as the text output prints it (was a traceback, exit 1)
    assert run("sudoku", SUDOKU, "--threads", 4096).exit_code == 2  # 4,096 crashed torch


def test_countdown_names_stdin_and_takes_one_file_at_a_time(tmp_path):
    assert "error: <stdin>: no usable instance" in run("countdown", "-", input="garbage\n").output
    jsonl = tmp_path / "cd.jsonl"
    jsonl.write_text('{"input": "4,7,8,8,24"}\n')
    said = run("countdown", str(jsonl), str(jsonl))
    assert said.exit_code == 2 and "one FILE at a time" in said.output


def test_a_checkpoint_of_another_task_is_refused_before_its_weights_are_read(tmp_path):
    """The released model's weights are 50 GB: its config and tokenizer say it is no Sudoku model first."""
    from diffsolve.solvers import SudokuSolver

    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.json", "tokenizer.json", "generation_config.json"):
        (other / name).write_bytes((default_checkpoint("molecules") / name).read_bytes())
    (other / "model.safetensors").write_bytes(b"weights that were never read")
    said = run("sudoku", SUDOKU, "--checkpoint", other)
    assert said.exit_code == 2 and "not a sudoku checkpoint (vocabulary of 55 tokens" in said.stderr, said.stderr
    with pytest.raises(CheckpointError, match="not a sudoku checkpoint"):
        SudokuSolver.from_pretrained(other)


def test_a_ctrl_c_while_the_handlers_go_back_leaves_no_signal_on_the_finished_handler():
    """CtrlC put SIGINT's handler back first: a Ctrl-C right then raised out of the restoring loop and left
    SIGTERM and SIGHUP on the finished handler, which ignored them from then on (kill and timeout no longer
    worked). The signals now wait until every handler is back."""
    from diffsolve.core import CtrlC

    real = signal.signal

    def signal_then_ctrl_c(sig, handler):
        previous = real(sig, handler)
        if sig == signal.SIGINT and handler is signal.default_int_handler:
            os.kill(os.getpid(), signal.SIGINT)
        return previous

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    stop = CtrlC()
    stop.__enter__()
    stop.asked = True  # a first Ctrl-C was noted
    signal.signal = signal_then_ctrl_c
    try:
        with pytest.raises(KeyboardInterrupt):
            stop.__exit__(None, None, None)
    finally:
        signal.signal = real
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_console_script_starts_where_there_is_no_sighup(monkeypatch):
    """Windows has no SIGHUP: the `solve` script's start-up named signal.SIGHUP and every command failed with an
    AttributeError before doing anything."""
    from diffsolve import entry

    monkeypatch.delattr(signal, "SIGHUP")
    monkeypatch.setattr(sys, "argv", ["solve", "--help"])
    with pytest.raises(SystemExit) as done:
        entry.main()
    assert done.value.code == 0
