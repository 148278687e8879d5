"""The benchmarks' --out handling: settled before a long run, never at its end."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffsolve.core.provenance import SOURCE_ROOT, source_commit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reporting import add_out_argument, count, names, output_path, write_results  # noqa: E402


def test_a_folder_gets_the_default_file_inside(tmp_path):
    out = output_path(tmp_path, "molecules.json")
    assert out == tmp_path / "molecules.json"
    write_results(out, {"x": 1}, "| x |")
    written = json.loads(out.read_text())
    assert written["x"] == 1 and out.with_suffix(".md").is_file()
    assert written["provenance"][-1]["commit"] == source_commit()
    assert written["provenance"][-1]["cores"] == os.cpu_count()


def test_a_source_checkout_knows_its_commit():
    """The tests run from the repository (pip install -e .), so results written here name their commit."""
    head = None
    if shutil.which("git") and (SOURCE_ROOT / ".git").exists():
        done = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True)
        head = done.stdout.strip() if done.returncode == 0 else None
    if head is None:  # no history here (an sdist, a git archive), or a git that cannot read it: nothing to name
        assert source_commit() is None
    else:
        assert source_commit().split("+")[0] == head


def test_results_written_again_keep_the_provenance_of_earlier_writes(tmp_path):
    """A --merge or --sections rerun rewrites the file with some parts from an earlier run: the earlier writes
    stay on record (one a day per code and machine: a run writes once per family), latest last; a file of the
    first version, with one record, is read too."""
    out = tmp_path / "r.json"
    earlier = {"commit": "abc", "cores": 64, "written": "2026-12-01T10:00:00+0000"}
    out.write_text(json.dumps({"x": 0, "provenance": earlier}))
    write_results(out, {"x": 1}, "| x |")
    write_results(out, {"x": 2}, "| x |")
    written = json.loads(out.read_text())
    assert written["x"] == 2 and len(written["provenance"]) == 2 and written["provenance"][0] == earlier
    assert written["provenance"][1]["commit"] == source_commit()
    out.write_text(json.dumps({"x": 0, "provenance": None}))  # neither a record nor a list: nothing to keep
    write_results(out, {"x": 3}, "| x |")
    assert len(json.loads(out.read_text())["provenance"]) == 1


def test_a_new_json_path_gets_its_folder(tmp_path):
    out = output_path(tmp_path / "new" / "r.json", "molecules.json")
    assert out.parent.is_dir() and not out.exists()


def test_anything_but_json_or_a_folder_is_refused_up_front(tmp_path):
    with pytest.raises(SystemExit, match="name a .json file"):
        output_path(tmp_path / "results.txt", "molecules.json")
    with pytest.raises(SystemExit, match="name a .json file"):
        output_path(tmp_path / "not-yet-a-folder", "molecules.json")


def test_out_is_settled_while_parsing(tmp_path):
    parser = argparse.ArgumentParser()
    add_out_argument(parser, "molecules.json")
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    assert parser.parse_args([]).out == results / "molecules.json"
    assert parser.parse_args(["--out", str(tmp_path)]).out == tmp_path / "molecules.json"
    with pytest.raises(SystemExit, match="name a .json file"):
        parser.parse_args(["--out", str(tmp_path / "table.md")])


def test_counts_and_names_are_refused_when_the_arguments_are_parsed(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-tier", type=count(0))
    parser.add_argument("--threads", type=count(1))
    parser.add_argument("--families", type=names(("path", "coloring")), default="path,coloring")
    args = parser.parse_args(["--per-tier", "0", "--threads", "2"])
    assert (args.per_tier, args.threads, args.families) == (0, 2, ["path", "coloring"])
    for argv, message in [(["--per-tier", "-1"], "must be at least 0, got -1"),  # was rows[:-1]: all but one
                          (["--threads", "0"], "must be at least 1, got 0"),  # was torch's RuntimeError
                          (["--threads", "x"], "invalid count value: 'x'"),
                          (["--families", "path,colring"], "expected some of path,coloring, got 'path,colring'")]:
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert message in capsys.readouterr().err
