"""The Sudoku solver and `solve sudoku` with the shipped checkpoint."""

import copy
import json
import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from diffsolve.core import SamplingConfig
from diffsolve.solvers.cli import app
from diffsolve.solvers.cli_common import InOrder
from diffsolve.solvers.sudoku_cli import _solve_sudokus
from diffsolve.solvers import BatchInterrupted, SudokuSolver
from diffsolve.solvers.checkpoints import default_checkpoint
from diffsolve.tasks.sudoku import SAMPLER
from diffsolve.tasks.sudoku_data import is_valid_solution, make_puzzle, random_grid
from diffsolve.tasks.sudoku_files import ParsedPuzzle, format_grid
from interrupt import ctrl_c_when


@pytest.fixture(scope="module")
def solver():
    return SudokuSolver.from_pretrained(canvases=4, max_steps=32)


def easy_puzzle(seed: int, givens: int = 46) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    grid = random_grid(rng)
    return make_puzzle(grid, givens, rng, unique=False), grid


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10**6), st.integers(44, 60))
def test_generated_puzzles_get_verified_solutions_that_keep_the_clues(solver, seed, givens):
    puzzle, _ = easy_puzzle(seed, givens)
    result = solver.solve(puzzle)
    assert result.verified and is_valid_solution(puzzle, result.solution)
    assert all(p == "0" or p == s for p, s in zip(puzzle, result.solution))
    assert result.forward_passes >= result.steps >= 1


@pytest.fixture(scope="module")
def default_solver():
    return SudokuSolver.from_pretrained()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10**6), st.integers(17, 43), st.booleans())
def test_sparse_puzzles_get_verified_solutions_with_the_default_search(default_solver, seed, givens, unique):
    # unique=True: clues removed only while the solution stays unique (minimal puzzles stop above 17 givens)
    rng = np.random.default_rng(seed)
    puzzle = make_puzzle(random_grid(rng), givens, rng, unique=unique)
    result = default_solver.solve(puzzle)
    assert result.verified and is_valid_solution(puzzle, result.solution)
    assert all(p == "0" or p == s for p, s in zip(puzzle, result.solution))


ESCARGOT = "1....7.9..3..2...8..96..5....53..9...1..8...26....4...3......1..4......7..7...3.."  # "AI Escargot"


def test_backtracking_solves_a_famously_hard_puzzle():
    result = SudokuSolver.from_pretrained(canvases=2, max_steps=64, backtrack=True).solve(ESCARGOT)
    assert result.verified and is_valid_solution(result.puzzle, result.solution)
    assert all(p == "0" or p == s for p, s in zip(result.puzzle, result.solution))


def test_bad_puzzles_get_reasons_not_answers(solver):
    clash = "55" + "0" * 79
    results = solver.solve_many([clash, "123"])
    assert [r.solution for r in results] == [None, None] and [r.to_array() for r in results] == [None, None]
    assert results[0].reason == "clues conflict: 5 at r1c1 and r1c2"
    assert results[1].reason == "expected 81 cells (or a 9-row grid), got 3" and results[1].puzzle == "123"
    # printed: the reason over the puzzle as a grid, or over the text when it is no grid
    assert str(results[0]) == "no verified solution -- clues conflict: 5 at r1c1 and r1c2\n" + format_grid(clash)
    assert str(results[1]).splitlines() == ["no verified solution -- expected 81 cells (or a 9-row grid), got 3",
                                            "123"]
    assert solver.solve("x" * 81).reason.startswith("bad character 'x'")
    grid = format_grid("8" + ESCARGOT[1:7] + "8" + ESCARGOT[8:])  # the same clue twice in row 1
    result = solver.solve(grid)
    assert result.reason == "line 1: clues conflict: 8 at r1c1 and r1c8; 8 at r1c8 and r2c9"  # each pair named
    assert result.puzzle == grid.strip()
    assert solver.solve(ESCARGOT + "\n" + ESCARGOT).reason == "one puzzle expected, found 2"
    with pytest.raises(TypeError, match="for one puzzle use solve"):
        solver.solve_many(clash)  # a bare string would be 81 one-character puzzles
    with pytest.raises(TypeError, match="81-character string"):
        solver.solve(list(clash))


def test_a_result_prints_as_a_grid_and_gives_its_solution_as_an_array(solver):
    puzzle, _ = easy_puzzle(7)
    result = solver.solve(np.array([int(ch) for ch in puzzle]).reshape(9, 9))
    assert result.verified and str(result).splitlines()[0] == result.summary()
    assert re.fullmatch(r"verified in \d+ pass(es)? \(\d+\.\d\d s\)", result.summary())
    assert str(result).split("\n", 1)[1] == format_grid(result.solution)
    array = result.to_array()
    assert array.shape == (9, 9) and "".join(map(str, array.ravel())) == result.solution
    assert solver.solve(array).solution == result.solution  # what solve takes


def test_a_checkpoint_of_another_task_is_refused_before_sampling():
    from diffsolve.core import CheckpointError
    from diffsolve.solvers.checkpoints import default_checkpoint

    with pytest.raises(CheckpointError, match="not a sudoku checkpoint .*canvas of 16.* at least 81"):
        SudokuSolver.from_pretrained(str(default_checkpoint("sorting")))


def test_a_checkpoint_whose_tokens_mean_other_things_is_refused(tmp_path):
    """Same vocabulary size, two digits' ids swapped in tokenizer.json: the model would read other clues."""
    import shutil

    from diffsolve.core import CheckpointError

    shutil.copytree(default_checkpoint("sudoku"), tmp_path / "swapped")
    path = tmp_path / "swapped" / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["1"], vocab["2"] = vocab["2"], vocab["1"]
    path.write_text(json.dumps(tokenizer))
    with pytest.raises(CheckpointError, match="not a sudoku checkpoint .*other ids to '1', '2'"):
        SudokuSolver.from_pretrained(str(tmp_path / "swapped"))


def test_batches_split_by_rows_per_batch_and_the_same_seed_repeats(solver):
    puzzles = [easy_puzzle(seed)[0] for seed in range(3)]
    split = SudokuSolver(solver.model, canvases=4, max_steps=32, rows_per_batch=4)  # one puzzle per batch
    results = split.solve_many(puzzles)
    assert [r.puzzle for r in results] == puzzles and all(r.verified for r in results)
    assert all(is_valid_solution(p, r.solution) for p, r in zip(puzzles, results))
    again = split.solve_many(puzzles)
    assert [(r.solution, r.steps) for r in again] == [(r.solution, r.steps) for r in results]


def test_a_budget_too_short_says_so_and_returns_no_grid(solver):
    seventeen = "000000010400000000020000000000050407008000300001090000300400200050100000000806000"  # 17 givens
    result = SudokuSolver(solver.model, guided=False, max_steps=1).solve(seventeen)  # the model alone, one pass
    assert not result.verified and result.solution is None and result.steps == 1
    assert result.reason == "the budget of 1 pass ran out"
    guided = SudokuSolver(solver.model, canvases=1, max_steps=1).solve(seventeen)  # propagation solves it in one
    assert guided.verified and is_valid_solution(seventeen, guided.solution) and guided.steps == 1


def test_cli_json_in_input_order_with_errors_named(tmp_path):
    first, _ = easy_puzzle(1)
    second, _ = easy_puzzle(2)
    path = tmp_path / "puzzles.txt"
    path.write_text(f"12345\n{first}\n{first[:80]}\n{second.replace('0', '.')}\n")
    result = CliRunner().invoke(app, ["sudoku", str(path), "--format", "json", "--canvases", "4"])
    assert result.exit_code == 1  # unreadable lines
    assert f"{path}:3: expected 81 cells, got 80" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["line"] for line in lines] == [1, 2, 3, 4]  # one record per entry, unreadable ones too
    assert [line["puzzle"] for line in lines] == [None, first, None, second]
    assert lines[2]["reason"] == "unreadable: expected 81 cells, got 80" and not lines[2]["verified"]
    solved = [lines[1], lines[3]]
    assert all(line["verified"] and is_valid_solution(line["puzzle"], line["solution"]) for line in solved)
    assert {"steps", "forward_passes", "seconds"} <= set(lines[1])
    traced = CliRunner().invoke(app, ["sudoku", str(path), "--trace", "--canvases", "2", "--format", "json"])
    assert traced.exit_code == 1  # unreadable lines, as without --trace
    assert "pass 1:" in traced.stderr  # the trace goes to stderr: stdout stays one JSON object per line
    assert "(. = not settled, * = re-noised)" in traced.stderr  # no colours off a terminal: marks instead
    assert [json.loads(line)["line"] for line in traced.stdout.splitlines()] == [1, 2, 3, 4]
    last_pass = traced.output.rindex("pass ")  # stdout and stderr as a terminal shows them
    assert last_pass < traced.output.index('"line": 2')  # the traced puzzle's result follows its last pass


def test_a_ctrl_c_in_the_traced_puzzles_last_pass_keeps_its_answer(solver):
    _, grid = easy_puzzle(3)
    puzzle = "0" + grid[1:]  # one blank: verified in the first pass
    printed = []
    order = InOrder([True], lambda k, result: printed.append(result), printed.append)

    def stop_if_asked():  # Ctrl-C was pressed during the first pass
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _solve_sudokus(solver, [ParsedPuzzle(puzzle, None, 1, 0)], order, True, stop_if_asked)
    assert len(printed) == 1 and printed[0].verified and printed[0].solution == grid


def test_cli_reads_several_files_in_order_and_names_each_entrys_file(tmp_path):
    first, _ = easy_puzzle(3)
    second, _ = easy_puzzle(4)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(f"{first}\n")
    b.write_text(f"{first[:80]}\n{second}\n")
    result = CliRunner().invoke(app, ["sudoku", str(a), str(b), "--format", "json", "--canvases", "2"])
    assert result.exit_code == 1 and f"{b}:1: expected 81 cells, got 80" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["file"], r["line"], r["puzzle"]) for r in records] == [(str(a), 1, first), (str(b), 1, None),
                                                                      (str(b), 2, second)]
    assert records[0]["verified"] and records[2]["verified"]
    text = CliRunner().invoke(app, ["sudoku", str(a), str(b), "--canvases", "2"])
    assert f"{b}:2: verified in" in text.stdout and "line 2" not in text.stdout
    absent = tmp_path / "absent.txt"  # a file that cannot be read is set aside like a bad line: the rest is solved
    missing = CliRunner().invoke(app, ["sudoku", str(a), str(absent), "--format", "json", "--canvases", "2"])
    assert missing.exit_code == 1 and f"error: {absent}: cannot be read: No such file or directory" in missing.stderr
    records = [json.loads(line) for line in missing.stdout.splitlines()]
    assert [(r["file"], r["line"], r["verified"]) for r in records] == [(str(a), 1, True), (str(absent), None, False)]
    assert records[1]["reason"] == "unreadable: cannot be read: No such file or directory"
    empty = tmp_path / "empty.txt"  # nor is a file with no puzzle in it skipped in silence
    empty.write_text("# only a comment\n")
    blank = CliRunner().invoke(app, ["sudoku", str(a), str(empty), "--format", "json", "--canvases", "2"])
    assert blank.exit_code == 1 and f"error: {empty}: no puzzle in it" in blank.stderr
    assert [json.loads(line)["file"] for line in blank.stdout.splitlines()] == [str(a), str(empty)]
    empty.write_bytes(b"Puzzles \xff\n")  # nothing but a title, and not UTF-8: the bad byte is the likelier story
    binary = CliRunner().invoke(app, ["sudoku", str(a), str(empty), "--canvases", "2"])
    assert f"error: {empty}: no puzzle in it; line 1: bad byte at column 9" in binary.stderr


def test_cli_unusable_input_exits_2(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("hello\n")  # a title line and nothing else
    result = CliRunner().invoke(app, ["sudoku", str(path)])
    assert result.exit_code == 2 and "no usable puzzle" in result.stderr
    missing = CliRunner().invoke(app, ["sudoku", str(tmp_path / "absent.txt")])
    assert missing.exit_code == 2 and "absent.txt" in missing.output
    twice = CliRunner().invoke(app, ["sudoku", "-", "-"], input="0" * 81 + "\n")  # stdin read once, not twice
    assert twice.exit_code == 2 and "'-' (stdin) is given more than once" in twice.stderr and not twice.stdout
    path.write_text("12345\n")
    lines = CliRunner().invoke(app, ["sudoku", str(path), "--format", "json"])  # records even when none is usable
    assert lines.exit_code == 2 and json.loads(lines.stdout)["reason"].startswith("unreadable: ")


def test_a_byte_order_mark_and_a_separated_grid_read_as_the_cli_reads_them(tmp_path, solver):
    puzzle, solution = easy_puzzle(3)
    path = tmp_path / "excel.csv"
    path.write_text(f"\ufeffpuzzle,solution\n{puzzle},{solution}\n")
    result = CliRunner().invoke(app, ["sudoku", str(path), "--format", "json", "--canvases", "2"])
    assert result.exit_code == 0, result.output
    assert is_valid_solution(puzzle, json.loads(result.stdout)["solution"])  # several solutions may exist
    assert is_valid_solution(puzzle, solver.solve(format_grid(puzzle)).solution)  # `|`, `+`, `-` lines as printed


def test_a_puzzle_without_a_solution_is_proved_so_early(solver):
    """No two clues clash, but r1c1 can only be 9 and column 1 has a 9: the search proves it impossible
    and stops instead of spending its budget."""
    puzzle = ".12345678" + "9" + "." * 71
    result = solver.solve(puzzle)
    assert not result.verified and result.solution is None
    assert "no solution" in result.reason and result.steps < 32


def test_cli_exits_1_when_a_readable_puzzle_goes_unsolved(tmp_path):
    path = tmp_path / "puzzles.txt"
    path.write_text(f"{easy_puzzle(1)[0]}\n.12345678{'9' + '.' * 71}\n")  # the second has no solution
    result = CliRunner().invoke(app, ["sudoku", str(path), "--format", "json", "--canvases", "2"])
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert result.exit_code == 1 and first["verified"] and not second["verified"] and second["solution"] is None
    assert "no solution" in second["reason"]


def test_an_empty_grid_is_a_puzzle_too():
    result = SudokuSolver.from_pretrained(canvases=4, max_steps=128).solve("0" * 81)  # ~45 passes
    assert result.verified and is_valid_solution("0" * 81, result.solution)


def test_cli_rejects_bad_options(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text(easy_puzzle(3)[0] + "\n")
    assert CliRunner().invoke(app, ["sudoku", str(path), "--canvases", "0"]).exit_code == 2
    assert CliRunner().invoke(app, ["sudoku", str(path), "--format", "xml"]).exit_code == 2
    assert CliRunner().invoke(app, ["sudoku", str(path), "--model-only", "--backtrack"]).exit_code == 2
    for args, message in ((["--device", "gpu"], "--device gpu: expected cpu, cuda or cuda:N"),
                          (["--checkpoint", str(default_checkpoint("graphs"))], "not a sudoku checkpoint")):
        result = CliRunner().invoke(app, ["sudoku", str(path), *args])
        assert result.exit_code == 2 and message in result.stderr and not result.stdout


def test_cli_names_a_missing_checkpoint_or_device_before_reading_the_puzzles(tmp_path):
    """A large file takes seconds to parse: a mistyped --checkpoint or --device is said first, and alone."""
    path = tmp_path / "p.txt"
    path.write_text("not a puzzle\n")
    for args, message in ((["--checkpoint", str(tmp_path / "absent")], f"--checkpoint {tmp_path / 'absent'}: no such"),
                          (["--device", "gpu"], "--device gpu: expected cpu, cuda or cuda:N")):
        result = CliRunner().invoke(app, ["sudoku", str(path), *args])
        assert result.exit_code == 2 and message in result.stderr
        assert "p.txt:1" not in result.stderr and not result.stdout


def test_cli_names_a_csv_header_without_a_puzzle_column(tmp_path):
    path = tmp_path / "grids.csv"
    path.write_text("id,grid\n1," + easy_puzzle(4)[0] + "\n")
    result = CliRunner().invoke(app, ["sudoku", str(path)])
    assert result.exit_code == 2
    assert f"{path}:1: a CSV header needs a puzzle (or puzzles, quizzes) column" in result.stderr


def test_model_only_keeps_the_clues_and_is_checked_like_the_full_system():
    """guided=False: one canvas of the stock sampler, clues pinned; its grid is returned only if verified."""
    model_only = SudokuSolver.from_pretrained(guided=False)
    assert model_only.canvases == 1 and "model only" in repr(model_only)
    puzzle, grid = easy_puzzle(5, givens=60)
    result = model_only.solve(puzzle)  # the model alone solves easy puzzles (98-100 % of the easy tiers)
    assert result.verified and result.forward_passes == result.steps  # one canvas
    assert is_valid_solution(puzzle, result.solution) and result.solution == grid  # 60 givens: one solution


def test_a_checkpoint_with_a_longer_canvas_solves_on_one_81_cell_canvas():
    """A canvas of at least 81 is accepted; the solver denoises one grid-sized canvas (a 256-token canvas met the
    81 pinned clues and raised), and a generation_config asking for more tokens adds no blocks."""
    from diffsolve.core import new_model
    from diffsolve.tasks import sudoku

    model = new_model(replace(sudoku.model_config(), canvas_length=128), seed=0)
    model.generation_config = replace(model.generation_config or SamplingConfig(), max_new_tokens=256)
    puzzle, grid = easy_puzzle(3, givens=60)
    for guided in (True, False):
        result = SudokuSolver(model, guided=guided, max_steps=8).solve(puzzle)
        assert result.solution in (None, grid) and result.forward_passes <= 8 * (8 if guided else 1)
    assert SudokuSolver(model, max_steps=8).solve(puzzle).solution == grid  # 21 blanks: propagation alone


def test_model_only_samples_with_the_checkpoints_own_settings():
    """The stock sampler means the checkpoint's generation_config.json (as in transformers), whatever it says;
    the full system keeps its own schedule (T = 2 guesses)."""
    model = SudokuSolver.from_pretrained(guided=False).model
    shipped = model.generation_config
    assert {"t_max": shipped.t_max, "t_min": shipped.t_min} == SAMPLER  # what `solve train sudoku` writes
    model.generation_config = replace(shipped, t_max=1.7, t_min=0.3, entropy_bound=0.2)
    try:
        config = SudokuSolver(model, guided=False, max_steps=77).config
        guided = SudokuSolver(model).config
    finally:
        model.generation_config = shipped
    assert (config.t_max, config.t_min, config.entropy_bound, config.max_denoising_steps) == (1.7, 0.3, 0.2, 77)
    assert not config.keep_accepted and config.stability_threshold == shipped.stability_threshold
    assert (guided.t_max, guided.t_min, guided.keep_accepted) == (2.0, 2.0, True)


def test_cli_demo_sorts_and_verifies():
    out = CliRunner().invoke(app, ["demo", "--digits", "3141592653589793"])
    assert out.exit_code == 0, out.output
    assert "output    1123334555678999  verified" in out.output


def test_cli_reports_the_files_solutions_and_sets_a_bad_one_aside(tmp_path):
    rng = np.random.default_rng(3)
    grid = random_grid(rng)
    first, (second, _) = make_puzzle(grid, 30, rng, unique=True), easy_puzzle(4)  # first: one solution
    path = tmp_path / "p.csv"
    path.write_bytes(f"puzzle;solution\r\n{first};{grid}\r\n{second};{'1' * 81}\r\n".encode("utf-16"))
    result = CliRunner().invoke(app, ["sudoku", str(path), "--format", "json", "--canvases", "4"])
    assert result.exit_code == 0, result.output
    assert f"\n{path}:3: warning: solution column ignored: not a valid complete grid" in "\n" + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(line["verified"] for line in lines)
    assert lines[0]["expected"] == grid and lines[0]["matches_expected"] is True
    assert lines[1]["expected"] is None and lines[1]["matches_expected"] is None
    assert lines[0]["warning"] is None  # the JSON says why, for a grader who reads no stderr
    assert lines[1]["warning"] == "solution column ignored: not a valid complete grid"


def test_cli_names_the_line_of_a_byte_that_is_not_utf8_and_solves_the_rest(tmp_path):
    first, _ = easy_puzzle(5)
    path = tmp_path / "p.txt"
    path.write_bytes(f"{first}\n{first[:10]}\xff{first[11:]}\n".encode("latin-1"))
    result = CliRunner().invoke(app, ["sudoku", str(path), "--format", "line", "--canvases", "4"])
    assert result.exit_code == 1
    assert f"{path}:2: bad byte at column 11: the file is not UTF-8 text" in result.stderr
    assert is_valid_solution(first, result.stdout.splitlines()[0])


def test_the_api_reads_a_puzzle_as_the_cli_does(solver):
    puzzle, _ = easy_puzzle(6)
    piped = "\ufeff" + "|".join(puzzle[k:k + 3] for k in range(0, 81, 3)) + "  # from a newspaper"
    result = solver.solve(piped)
    assert result.puzzle == puzzle and result.verified


def test_each_result_comes_as_soon_as_its_puzzles_canvases_stop(solver):
    puzzles = [easy_puzzle(seed, givens)[0] for seed, givens in ((7, 50), (8, 30), (9, 26))]
    passes, arrived = [0], {}
    results = solver.solve_many(puzzles, callback=lambda info: passes.__setitem__(0, info.step),
                                on_result=lambda i, result: arrived.__setitem__(i, passes[0] + 1))
    assert all(r.verified for r in results) and len({r.steps for r in results}) > 1
    assert arrived == {i: r.steps for i, r in enumerate(results)}  # during the pass that finished it


def test_ctrl_c_in_a_batch_keeps_the_puzzles_solved(solver):
    puzzles = [easy_puzzle(seed, givens)[0] for seed, givens in ((7, 50), (8, 30), (9, 26))] + ["123"]
    done = {}

    def stop_after_the_first(i: int, result) -> None:  # as Ctrl-C in a notebook, once a puzzle is solved
        done[i] = result
        if result.verified:
            raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted, match="stopped with 2 of 4 done") as stop:
        solver.solve_many(puzzles, on_result=stop_after_the_first)
    results = stop.value.results  # in input order: the unreadable one, the solved one, the rest unfinished
    assert [r.puzzle for r in results[:3]] == puzzles[:3] and results[3] is done[3]
    assert copy.copy(stop.value).results == results  # as multiprocessing and joblib pass it on
    solved = next(i for i in done if done[i].verified)
    assert results[solved] is done[solved] and is_valid_solution(puzzles[solved], results[solved].solution)
    assert all(r.reason == "interrupted before it was solved" and r.solution is None
               for i, r in enumerate(results[:3]) if i != solved)


def test_ctrl_c_keeps_the_grids_printed_and_says_how_many(tmp_path):
    """SIGTERM takes the same path (test_cli: test_sigterm_counts_as_ctrl_c_and_the_handlers_come_back, and
    test_an_interrupt_before_the_work_begins_still_exits_130 on the real command)."""
    rng = np.random.default_rng(3)
    puzzles = [make_puzzle(random_grid(rng), 30, rng, unique=False) for _ in range(64)]  # two batches
    path = tmp_path / "many.txt"
    path.write_text("\n".join(puzzles) + "\n")
    status, out, err = ctrl_c_when(["sudoku", str(path), "-f", "line"], ready=r"[1-9]{81}")
    printed = out.splitlines()
    assert status == 130, err
    said = re.search(r"interrupted: (\d+) of 64 puzzles done; (\d+) unfinished, printed as interrupted", err)
    assert said and 0 < int(said[1]) < 64 and int(said[1]) + int(said[2]) == 64
    assert len(printed) == 64  # one record per puzzle, in order: every solved one, the rest marked
    solved = [(p, s) for p, s in zip(puzzles, printed) if not s.startswith("#")]
    assert len(solved) == int(said[1]) and all(is_valid_solution(p, s) for p, s in solved)
    assert all(s == f"# line {k}: interrupted before it was solved"
               for k, s in enumerate(printed, 1) if s.startswith("#"))


def test_the_sorting_demo_allows_each_row_only_its_own_digits():
    import torch

    from diffsolve.tasks import sorting

    digits = torch.tensor([[1] * 8 + [2] * 8, [7] * 16])
    compiled = sorting.constraints(digits)
    canvas = torch.zeros(2, sorting.LENGTH, dtype=torch.long)
    allowed = compiled.allowed(canvas, torch.zeros_like(canvas, dtype=torch.bool))
    ids = torch.tensor(sorting.DIGIT_IDS)
    assert allowed[0, :, ids].sum(-1).eq(2).all() and allowed[0, :, ids[[1, 2]]].all()
    assert allowed[1, :, ids].sum(-1).eq(1).all() and allowed[1, :, ids[7]].all()  # was 1, 2 and 7 for both rows


def test_a_solvers_sampling_config_can_be_replaced_between_calls():
    """benchmarks/sudoku_sampler.py tries several samplers on one model-only solver this way."""
    solver = SudokuSolver.from_pretrained(guided=False, max_steps=64)
    solver.config = replace(solver.config, max_denoising_steps=2, stability_threshold=None)
    result = solver.solve(easy_puzzle(0)[0])
    assert result.steps == 2 and (result.verified or result.reason == "the budget of 2 passes ran out")
    assert "model only, canvases=1, max_steps=2, seed=0, rows_per_batch=256)" in repr(solver)  # what it samples with
    assert repr(SudokuSolver(solver.model)).endswith("seed=0, rows_per_batch=256, temperature=2.0)")
    solver.config = replace(solver.config, t_min=0.4, t_max=0.8)  # what benchmarks/sudoku_sampler.py does
    assert "temperature" not in repr(solver)  # model only: the checkpoint's own schedule, not a setting
    guided = SudokuSolver(solver.model)
    guided.config = replace(guided.config, t_min=0.4, t_max=0.8)
    assert repr(guided).endswith("temperature=0.8->0.4)")


def test_sudoku_solver_arguments_are_judged_in_the_order_they_were_before_it_shared_the_solver_base():
    model = SudokuSolver.from_pretrained().model
    assert SudokuSolver(model, temperature=None).config == SudokuSolver(model).config  # None: the default (T = 2)
    with pytest.raises(TypeError, match="temperature must be a number, got 'hot'"):
        SudokuSolver(model, temperature="hot", canvases=0)  # judged before the canvases, as always
    with pytest.raises(ValueError, match="backtrack is a guided search"):
        SudokuSolver(model, guided=False, backtrack=True, canvases=4)


def test_a_grid_as_nine_row_strings_is_one_puzzle(solver):
    """A common way to write a grid in Python; solve_many refuses it as one grid, not nine bad puzzles."""
    puzzle, _ = easy_puzzle(6)
    rows = [puzzle[9 * r:9 * r + 9].replace("0", ".") for r in range(9)]
    result = solver.solve(rows)
    assert result.verified and is_valid_solution(puzzle, result.solution)
    assert solver.solve([" ".join(row) for row in rows[:8]] + ["\t".join(rows[8])]).verified  # spaced, tabbed
    with pytest.raises(TypeError, match="got one 9 x 9 grid"):
        solver.solve_many(rows)
