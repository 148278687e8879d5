"""scripts/gpu_stage.sh: the package as the lent GPU machine imports it (linked, not installed), and the two
device calls' bookkeeping: both runs come back as tars whatever happened to them, and unpacking replaces
nothing before both tars read. The training itself is `solve train` (tests/test_training.py); here a stand-in
interpreter plays it, so the steps' logic runs in seconds."""

import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_stage.sh"

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="the script needs tomllib and PYTHONSAFEPATH")

# `python -m diffsolve ... train TASK --out DIR` writes what a finished run writes (a model, a log, the summary).
# With STAND_IN_SLEEP_<TASK> it first sleeps; SIGTERM then leaves a checkpoint and exit 130, as `solve train`
# does, while SIGINT is ignored, as `solve train` leaves it outside its training loop in a background job.
# Anything else runs the real interpreter (the script also runs Python of its own).
STAND_IN = textwrap.dedent(f"""\
    #!{sys.executable}
    import json, os, signal, sys, time
    from pathlib import Path

    args = sys.argv[1:]
    if args[:2] != ["-m", "diffsolve"] or "train" not in args:
        os.execv({sys.executable!r}, [{sys.executable!r}, *args])
    task, out = args[args.index("train") + 1], Path(args[args.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)

    def stopped(*_):
        (out / "checkpoint").mkdir()
        for name in ("model.safetensors", "config.json", "training_state.json", "training_state.safetensors"):
            (out / "checkpoint" / name).write_text(name)
        (out / "model").mkdir()  # as a save cut short leaves it
        print("interrupted at step 3 (checkpointed)", file=sys.stderr)
        sys.exit(130)

    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(float(os.environ.get(f"STAND_IN_SLEEP_{{task.upper()}}", "0")))
    (out / "model").mkdir()
    (out / "model" / "model.safetensors").write_text(task)
    (out / "train_log.jsonl").write_text("{{}}\\n")
    print(json.dumps({{"task": task, "steps": 7}}))
""")


def _run(*args: str, runs: Path, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_STAGE_RUNS": str(runs), "PYTHON": env.pop("PYTHON", sys.executable), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


@pytest.fixture
def stand_in(tmp_path) -> str:
    path = tmp_path / "python"
    path.write_text(STAND_IN)
    path.chmod(0o755)
    return str(path)


def _members(tar: Path) -> set[str]:
    with tarfile.open(tar) as archive:
        return set(archive.getnames())


def test_check_imports_the_package_from_the_linked_folder(tmp_path):
    done = _run("check", runs=tmp_path)
    assert done.returncode == 0, done.stderr
    version, models, cli = done.stdout.split("\n")[:3]
    assert version.startswith("diffsolve ")
    src = tmp_path / "src" / "diffsolve"
    assert Path(models) == src / "models"  # not the editable install, not ./diffsolve (its top module only)
    assert Path(cli) == src / "solvers" / "cli.py"
    assert (src / "models" / "sudoku" / "model.safetensors").resolve() == ROOT / "models/sudoku/model.safetensors"
    assert not any(p.is_symlink() for p in (ROOT / "diffsolve").iterdir())  # nothing written through a link


def test_both_runs_come_back_and_unpack(tmp_path, stand_in):
    runs, out = tmp_path / "runs", tmp_path / "out"
    out.mkdir()
    started = _run("start", runs=runs, PYTHON=stand_in, START_WAIT="1")
    assert started.returncode == 1 and "ended already (exit 0)" in started.stdout  # the stand-in ends at once
    done = _run("finish", runs=runs, PYTHON=stand_in, OUT=str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    for task in ("sudoku", "molecules"):
        assert {f"{task}.out", f"{task}/model/model.safetensors", f"{task}/train_log.jsonl"} <= _members(
            out / f"{task}.tar")
    here = tmp_path / "here"
    unpacked = _run("unpack", str(out), runs=here)
    assert unpacked.returncode == 0, unpacked.stderr
    assert (here / "sudoku" / "model" / "model.safetensors").read_text() == "sudoku"
    assert '"task": "molecules"' in (here / "molecules.out").read_text()


def test_a_run_still_going_at_the_deadline_is_interrupted_and_its_checkpoint_comes_back(tmp_path, stand_in):
    runs, out = tmp_path / "runs", tmp_path / "out"
    out.mkdir()
    started = _run("start", runs=runs, PYTHON=stand_in, START_WAIT="1", STAND_IN_SLEEP_SUDOKU="600")
    assert started.returncode == 0 and "running" in started.stdout, started.stdout + started.stderr
    began = time.monotonic()
    done = _run("finish", runs=runs, PYTHON=stand_in, OUT=str(out), FINISH_DEADLINE="50")
    assert time.monotonic() - began < 50
    assert done.returncode == 1 and "interrupted" in done.stdout and "sudoku: exit 130" in done.stdout
    sudoku = _members(out / "sudoku.tar")
    assert "sudoku/checkpoint/model.safetensors" in sudoku and "sudoku/model" not in sudoku  # the one cut short
    assert not any(m.endswith("training_state.safetensors") for m in sudoku)  # twice the weights: too big
    assert "molecules/model/model.safetensors" in _members(out / "molecules.tar")


def test_finish_without_start_still_brings_back_molecules(tmp_path, stand_in):
    out = tmp_path / "out"
    out.mkdir()
    done = _run("finish", runs=tmp_path / "runs", PYTHON=stand_in, OUT=str(out))
    assert done.returncode == 1 and "no run: call start first" in done.stdout
    assert "molecules/model/model.safetensors" in _members(out / "molecules.tar")


def test_a_slow_molecule_run_is_stopped_in_time_and_its_checkpoint_comes_back(tmp_path, stand_in):
    out = tmp_path / "out"
    out.mkdir()
    began = time.monotonic()
    done = _run("finish", runs=tmp_path / "runs", PYTHON=stand_in, OUT=str(out), FINISH_DEADLINE="50",
                STAND_IN_SLEEP_MOLECULES="600")
    assert time.monotonic() - began < 50
    assert "molecules: exit 130" in done.stdout and done.returncode == 1
    molecules = _members(out / "molecules.tar")
    assert "molecules/checkpoint/model.safetensors" in molecules and "molecules/model" not in molecules
    assert _members(out / "sudoku.tar") == set()  # written all the same: no run, nothing in it


def _tar(path: Path, files: dict[str, str]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, text in files.items():
            (path.parent / "member").write_text(text)
            archive.add(path.parent / "member", arcname=name)


def test_unpack_replaces_only_runs_that_came_back(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for run in ("sudoku", "molecules"):
        (runs / run).mkdir(parents=True)
        (runs / run / "kept").write_text("earlier results")
    out.mkdir()
    _tar(out / "sudoku.tar", {"sudoku.out": "{}", "sudoku/model/model.safetensors": "new"})
    done = _run("unpack", "out", runs=runs, cwd=tmp_path)  # DIR relative to where it is run
    assert done.returncode == 0, done.stderr
    assert "molecules.tar: missing" in done.stdout
    assert (runs / "sudoku" / "model" / "model.safetensors").read_text() == "new"
    assert not (runs / "sudoku" / "kept").exists()
    assert (runs / "molecules" / "kept").read_text() == "earlier results"

    _tar(out / "molecules.tar", {})  # empty: what finish writes when a run left nothing
    (out / "sudoku.tar").write_text("not a tar")
    done = _run("unpack", str(out), runs=runs)
    assert done.returncode == 1 and "holds no molecules run" in done.stdout and "unreadable" in done.stdout
    assert (runs / "molecules" / "kept").read_text() == "earlier results"
    assert (runs / "sudoku" / "model" / "model.safetensors").read_text() == "new"


def test_unknown_step_prints_the_usage(tmp_path):
    done = _run("train", runs=tmp_path)
    assert done.returncode == 2
    assert "scripts/gpu_stage.sh bundle" in done.stdout and "finish" in done.stdout


def test_the_gpu_checks_pass_as_a_dry_run_on_the_cpu(tmp_path):
    """scripts/gpu_check.py, prepared for a session lent a GPU, runs its checks on the CPU with GPU_CHECK_DEVICE=cpu
    (from another folder, with the package linked from the working tree as on the GPU machine): all pass."""
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("PASS ") for line in lines) == 6 and lines[-1] == "0 failed"
