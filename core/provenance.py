"""Where a result came from: the diffsolve version and commit, the machine and the library versions, for the
benchmarks' JSON and the model cards `solve train` writes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the repository in a source checkout; site-packages/diffsolve else


def _git(*args: str) -> str | None:
    try:  # no optional locks: `status` must not rewrite the index of a checkout others are using
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(SOURCE_ROOT), *args], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_commit() -> str | None:
    """The commit of the diffsolve checkout this code runs from, '+changes' when tracked files differ from it
    ('+unknown' when git cannot say); None for an installed wheel (whose folder may sit inside some other
    repository, hence the top-level check) and where git or the history is missing."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != SOURCE_ROOT or not (SOURCE_ROOT / "pyproject.toml").is_file():
        return None
    commit = _git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return None
    changed = _git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+unknown" if changed is None else "+changes" if changed else "")


def source_description() -> str:
    """'diffsolve 0.1.0 at commit ...', or what is known where there is no commit to name."""
    from .. import __version__

    commit = source_commit()
    if commit is not None:
        return f"diffsolve {__version__} at commit {commit}"
    copy = (SOURCE_ROOT / "pyproject.toml").is_file()
    return f"diffsolve {__version__} ({'a source copy whose commit git could not name' if copy else 'installed'})"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, where platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """diffsolve version and commit, date, machine and library versions, as one JSON-ready record."""
    from .. import __version__

    record = {
        "diffsolve": __version__, "commit": source_commit(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": cpu_name(), "cores": os.cpu_count(),
    }
    torch = sys.modules.get("torch")  # recorded where the caller uses it; never imported just for this
    if torch is not None:
        record["torch"] = torch.__version__
        if torch.cuda.is_initialized():  # this run used the GPU (one merely present is not named)
            record["gpu"] = torch.cuda.get_device_name()
    return record
