"""scripts/gpu_stage.sh: the package as the lent GPU machine imports it (linked, not installed)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_stage.sh"


def _run(*args: str, runs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_STAGE_RUNS": str(runs), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_check_imports_the_package_from_the_linked_folder(tmp_path):
    done = _run("check", runs=tmp_path)
    assert done.returncode == 0, done.stderr
    version, models = done.stdout.split("\n")[:2]
    assert version.startswith("diffsolve ")
    assert Path(models) == tmp_path / "src" / "diffsolve" / "models"  # not the editable install, not ./diffsolve
    assert (Path(models) / "sudoku" / "model.safetensors").resolve() == ROOT / "models" / "sudoku" / "model.safetensors"
    assert not any(p.is_symlink() for p in (ROOT / "diffsolve").iterdir())  # nothing written through a link


def test_unknown_step_prints_the_usage(tmp_path):
    done = _run("train", runs=tmp_path)
    assert done.returncode == 2
    assert "scripts/gpu_stage.sh bundle" in done.stdout and "finish" in done.stdout
