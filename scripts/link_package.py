"""The diffsolve package without installing it, for a machine where pip cannot build it (a lent GPU machine):
`python scripts/link_package.py ROOT` makes ROOT/diffsolve, a real folder per package of pyproject.toml's
package-dir with the repository's files linked (never written through); ROOT then goes on the import path."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def link_package(root: Path) -> None:
    packages = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, source in packages.items():
        here = root.joinpath(*package.split("."))
        here.mkdir(parents=True, exist_ok=True)
        for entry in (REPOSITORY / source).iterdir():
            if entry.name != "__pycache__" and f"{package}.{entry.name}" not in packages:
                (here / entry.name).symlink_to(entry)


if __name__ == "__main__":
    link_package(Path(sys.argv[1]))
