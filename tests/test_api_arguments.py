"""The public API refuses bad arguments up front, with errors that name them, and takes numpy's integers."""

import json
import re
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pytest
import torch

from diffsolve.core import CheckpointError, check_device, load_model
from diffsolve.solvers import (CountdownError, CountdownSolver, GraphError, GraphSolver, MoleculeDesigner,
                               RequestError, SudokuSolver)
from diffsolve.solvers.checkpoints import default_checkpoint

PUZZLE = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"


@pytest.fixture(scope="module")
def models():
    return {task: load_model(default_checkpoint(task)) for task in ("sudoku", "molecules", "graphs")}


@pytest.mark.parametrize("make, kwargs, error, message", [
    (SudokuSolver, {"canvases": 0}, ValueError, "canvases must be at least 1, got 0"),
    (SudokuSolver, {"max_steps": 0}, ValueError, "max_steps must be at least 1"),
    (SudokuSolver, {"seed": "x"}, TypeError, "seed must be a whole number, got 'x'"),
    (SudokuSolver, {"seed": 2**70}, ValueError, "seed must be below 2\\*\\*63"),
    (SudokuSolver, {"temperature": 0}, ValueError, "temperature must be a finite number above 0"),
    (SudokuSolver, {"rows_per_batch": 1.5}, TypeError, "rows_per_batch must be a whole number"),
    (GraphSolver, {"canvases": -1}, ValueError, "canvases must be at least 1"),
    (GraphSolver, {"max_steps": 0}, ValueError, "max_steps must be at least 1"),
    (SudokuSolver, {"max_steps": 2**31}, ValueError, "max_steps must be below 2\\*\\*31"),  # named max_denoising_steps
    (MoleculeDesigner, {"max_steps": 2**31}, ValueError, "max_steps must be below 2\\*\\*31"),
    (GraphSolver, {"seed": None}, TypeError, "seed must be a whole number"),
    (GraphSolver, {"temperature": float("nan")}, ValueError, "temperature must be a finite number above 0"),
    (CountdownSolver, {"canvases": 0}, ValueError, "canvases must be at least 1"),
    (MoleculeDesigner, {"canvases_per_round": 0}, ValueError, "canvases_per_round must be at least 1"),
    (MoleculeDesigner, {"canvases_per_round": 10**9}, ValueError, "canvases_per_round must be at most 1024"),
    (MoleculeDesigner, {"max_steps": 0}, ValueError, "max_steps must be at least 1"),
    (SudokuSolver, {"guided": "no"}, TypeError, "guided must be True or False, got 'no'"),
    (SudokuSolver, {"guided": False, "canvases": 8}, ValueError, "the model alone samples one canvas, got 8"),
    (SudokuSolver, {"guided": False, "backtrack": True}, ValueError, "the model alone .* does not backtrack"),
    (SudokuSolver, {"guided": False, "temperature": "hot"}, TypeError, "temperature must be a number, got 'hot'"),
    (GraphSolver, {"guided": 0}, TypeError, "guided must be True or False, got 0"),
    (CountdownSolver, {"guided": False, "canvases": 16}, ValueError, "the model alone samples one canvas"),
    (MoleculeDesigner, {"novel": "yes"}, TypeError, "novel must be True or False"),
])
def test_constructors_check_their_arguments(models, make, kwargs, error, message):
    task = {SudokuSolver: "sudoku", MoleculeDesigner: "molecules"}.get(make, "graphs")
    with pytest.raises(error, match=message):
        make(models[task], **kwargs)


def test_numpy_integers_work_as_seeds_and_counts(models):
    sudoku = SudokuSolver(models["sudoku"], seed=np.int64(3), canvases=np.int32(2), max_steps=np.int64(64))
    assert sudoku.solve(PUZZLE).verified
    graphs = GraphSolver(models["graphs"], seed=np.int64(1), max_steps=64)
    result = graphs.color(nx.petersen_graph(), k=np.int64(3))
    assert result.verified and result.num_colors == 3
    assert CountdownSolver(models["graphs"], seed=np.int64(2)).solve([4, 6, 1, 1], 24).verified
    designer = MoleculeDesigner(models["molecules"])
    found = designer.generate(np.int64(1), seed=np.int64(0), budget=np.int64(64))
    assert len(found) == 1 and found[0].verified


def test_sudoku_inputs(models):
    solver = SudokuSolver(models["sudoku"], max_steps=64)
    with pytest.raises(TypeError, match="81-character string.*got None"):
        solver.solve(None)
    with pytest.raises(TypeError, match="callback must be a function"):
        solver.solve(PUZZLE, callback=5)
    grid = "\n".join(" ".join(PUZZLE[r * 9:(r + 1) * 9]) for r in range(9))  # whitespace inside is ignored
    assert solver.solve(grid).solution == solver.solve(PUZZLE).solution is not None
    results = solver.solve_many(p for p in [PUZZLE, "1" * 80])  # any iterable
    assert results[0].verified and results[1].reason == "expected 81 cells, got 80"
    assert solver.solve("  ").reason == "the puzzle text is empty"


def test_sudoku_puzzles_as_numbers(models):
    solver = SudokuSolver(models["sudoku"], max_steps=64)
    digits = [int(c) for c in PUZZLE]
    grid = np.array(digits).reshape(9, 9)
    as_numbers = [digits, tuple(digits), grid, grid.tolist(), grid.astype(np.float64), grid.astype(np.uint8)]
    results = solver.solve_many(as_numbers)
    assert all(r.puzzle == PUZZLE and r.verified for r in results)
    assert solver.solve(grid).solution == results[0].solution
    with pytest.raises(TypeError, match="got bytes"):
        solver.solve(PUZZLE.encode())
    with pytest.raises(TypeError, match=r"^puzzle 1: a puzzle is .*or 81 whole numbers 0-9 .*got NoneType"):
        solver.solve_many([PUZZLE, None])
    with pytest.raises(TypeError, match="got one 9 x 9 grid; for one puzzle use solve"):
        solver.solve_many(grid)
    with pytest.raises(TypeError, match="puzzles must be a list \\(or another iterable\\), got NoneType"):
        solver.solve_many(None)
    # numbers that are not a puzzle are reported in the result, as a string that is not one is
    with_nan = grid.astype(float)
    with_nan[4, 4] = np.nan  # an empty cell as pandas reads it
    unreadable = solver.solve_many([grid[:8], digits[:80], grid.reshape(3, 3, 9), np.where(grid == 9, 10, grid),
                                    grid + 0.5, with_nan, np.full(81, np.inf), [True] + [0] * 80,
                                    [[np.bool_(False)] + row[1:] for row in grid.tolist()], PUZZLE])
    missing = " (a missing value, which may be a lost clue; where it means a blank, write 0: np.nan_to_num)"
    assert [r.reason for r in unreadable[:9]] == [
        "expected 81 numbers (flat or 9 x 9), got shape (8, 9)", "expected 81 numbers (flat or 9 x 9), got shape (80,)",
        "expected 81 numbers (flat or 9 x 9), got shape (3, 3, 9)",
        *[f"a puzzle's numbers are whole numbers 0-9 (0 for blanks), got {bad}"
          for bad in ("10", "5.5", "nan" + missing, "inf", "True", "False")]]
    assert solver.solve(np.nan_to_num(with_nan)).verified  # the blank it meant
    # containers that iterate over something else than the puzzles are refused, not solved item by item
    for container, message in [({"p1": PUZZLE}, "not a mapping \\(it yields its keys\\): pass the items"),
                               ({PUZZLE}, "not a set \\(it has no order for the results to follow\\)")]:
        with pytest.raises(TypeError, match=message):
            solver.solve_many(container)
    assert solver.solve_many({"p1": PUZZLE}.values())[0].verified
    import pandas as pd  # a table yields its column names: the CLI's CSV layout, read by pandas

    table = pd.DataFrame({"quizzes": [PUZZLE], "solutions": [results[0].solution]})
    with pytest.raises(TypeError, match="not a table \\(it yields its columns\\): pass the items, such as one "
                                        "column"):
        solver.solve_many(table)
    assert solver.solve_many(table["quizzes"])[0].solution == table["solutions"][0]
    assert unreadable[1].puzzle == " ".join(map(str, digits[:80])) and unreadable[9].verified


def test_graph_inputs(models):
    solver = GraphSolver(models["graphs"], max_steps=32)
    # in a call, every bad argument is a GraphError (a ValueError), wrong types included
    for call, message in [
        (lambda: solver.color([(0, 1), (1, 2)]), "colouring takes a networkx.Graph, got list"),
        (lambda: solver.hamiltonian_paths(nx.path_graph(4)), "for one graph use hamiltonian_path"),
        (lambda: solver.hamiltonian_path(nx.cycle_graph(4), cycle="no"), "cycle must be True or False, got 'no'"),
        (lambda: solver.paths([(nx.path_graph(4), 0)]), r"^expected \(graph, source, target\)"),
        (lambda: solver.paths([(nx.path_graph(4), 0, 3), (nx.path_graph(4), 0)]),
         r"^query 1: expected \(graph, source, target\)"),
        (lambda: solver.paths([(nx.path_graph(4), 0, 3), (nx.path_graph(4), 0, 9)]),
         r"^query 1: target node 9 is not in the graph"),
        (lambda: solver.hamiltonian_paths([nx.path_graph(4), None]), r"^graph 1: Hamiltonian takes a networkx.Graph"),
        (lambda: solver.hamiltonian_path(nx.path_graph(4), start=7), r"^start node 7 is not in the graph"),
        (lambda: solver.paths([(nx.path_graph(4), 0, 3)], batch=0), "batch must be at least 1"),
        (lambda: solver.path(nx.path_graph(4), 0, 3, shortest=True, rounds=0), "rounds must be at least 1"),
        (lambda: solver.path(nx.path_graph(4), 0, 3, rounds="2"), "rounds must be a whole number, got '2'"),
        (lambda: solver.path(nx.path_graph(40), 5, 7, shortest="no"), "shortest must be True or False, got 'no'"),
        (lambda: solver.color(nx.cycle_graph(5), backtrack="no"), "backtrack must be True or False, got 'no'"),
        (lambda: solver.color(nx.cycle_graph(5), tabu=1), "tabu must be True or False, got 1"),
        (lambda: solver.color(nx.cycle_graph(5), callback="x"), "callback must be a function"),
        (lambda: solver.paths(None), "queries must be a list \\(or another iterable\\), got NoneType"),
        (lambda: solver.hamiltonian_paths(None), "graphs must be a list \\(or another iterable\\), got NoneType"),
    ]:
        with pytest.raises(GraphError, match=message):
            call()
    weighted = nx.Graph()
    weighted.add_edge(0, 1, weight=-2.0)
    with pytest.raises(GraphError, match="0-1: weight -2.0 is not a finite non-negative number"):
        solver.path(weighted, 0, 1, weight="weight")
    weighted.add_edge(0, 1, weight=True)  # not a weight of 1
    with pytest.raises(GraphError, match="0-1: weight True is not a finite non-negative number"):
        solver.path(weighted, 0, 1, weight="weight")
    with pytest.raises(GraphError, match="end applies to paths"):
        solver.hamiltonian_path(nx.cycle_graph(6), cycle=True, start=3, end=1)
    with pytest.raises(GraphError, match="max_steps must be at least 1"):
        solver.color(nx.cycle_graph(5), max_steps=0)


def test_paths_answered_without_the_model_are_answered_on_graphs_of_any_size(models):
    solver = GraphSolver(models["graphs"], max_steps=32)
    big = nx.path_graph(40)  # beyond the route canvas's 31 nodes
    assert solver.path(big, 5, 5).path == [5] and solver.path(big, 5, 5, shortest=True).verified
    apart = nx.union(nx.path_graph(20), nx.path_graph(range(20, 40)))
    for shortest in (False, True):
        result = solver.path(apart, 0, 30, shortest=shortest)
        assert not result.verified and result.reason == "no path exists from 0 to 30"
        assert result.forward_passes == 0
    with pytest.raises(GraphError, match="40 nodes"):  # a real search still has to fit
        solver.path(big, 0, 3)


def test_two_colours_of_an_odd_cycle_are_refused_without_sampling(models):
    solver = GraphSolver(models["graphs"], max_steps=32)
    refused = solver.color(nx.cycle_graph(5), k=2)
    assert not refused.verified and "odd length" in refused.reason and refused.forward_passes == 0
    best = solver.color(nx.cycle_graph(7))  # DSATUR's 3 colours, then 2 is ruled out exactly: proved optimal
    assert best.verified and best.num_colors == 3 and best.optimal


def test_coloring_to_dict_keeps_labels_that_share_a_string(models):
    graph = nx.Graph([(1, "1"), ("1", 2)])
    result = GraphSolver(models["graphs"], max_steps=64).color(graph)
    assert result.verified
    assert result.to_dict()["coloring"] == {repr(node): colour for node, colour in result.coloring.items()}
    assert len(result.to_dict()["coloring"]) == 3


@dataclass(frozen=True)
class Site:
    name: str


def test_results_of_graphs_with_dataclass_labels_convert_to_json(models):
    # dataclasses.asdict turns dataclass labels into dicts, which cannot be a colouring's keys
    graph = nx.relabel_nodes(nx.path_graph(3), {i: Site(str(i)) for i in range(3)})
    solver = GraphSolver(models["graphs"], max_steps=64)
    coloring, path = solver.color(graph), solver.path(graph, Site("0"), Site("2"))
    assert coloring.verified and path.verified
    assert json.loads(json.dumps(coloring.to_dict()))["coloring"] == {
        str(node): colour for node, colour in coloring.coloring.items()}
    assert json.loads(json.dumps(path.to_dict()))["path"] == [str(Site(str(i))) for i in range(3)]


def test_countdown_text_and_none_are_refused_clearly(models):
    solver = CountdownSolver(models["graphs"])
    with pytest.raises(CountdownError, match="got the text '86 28 13 31'"):
        solver.solve("86 28 13 31", 96)
    with pytest.raises(CountdownError, match="must be a sequence of whole numbers.*got None"):
        solver.solve(None, 96)
    with pytest.raises(CountdownError, match=r"a list or tuple; each used once\), got \{3, 5\}"):
        solver.solve({3, 3, 5}, 5)  # a set would drop the second 3
    with pytest.raises(CountdownError, match="a list or tuple"):
        solver.solve({3: "a", 5: "b"}.keys(), 8)
    with pytest.raises(CountdownError, match="batch must be at least 1"):
        solver.solve_many([([3, 5], 8)], batch=0)
    with pytest.raises(CountdownError, match="instances must be a list \\(or another iterable\\), got NoneType"):
        solver.solve_many(None)


def test_molecule_arguments(models):
    designer = MoleculeDesigner(models["molecules"])
    with pytest.raises(RequestError, match="max_ring_size must be a whole number, got '7'"):
        designer.generate(1, max_ring_size="7")
    with pytest.raises(RequestError, match="max_ring_size must be a whole number, got 5.5"):
        designer.generate(1, max_ring_size=5.5)
    with pytest.raises(RequestError, match="seed must be below"):
        designer.generate(1, seed=2**70)
    with pytest.raises(RequestError, match="on_molecule must be a function"):
        designer.generate(1, on_molecule=3)
    assert designer.generate(1, seed=0, budget=64).to_dict()["molecules"][0]["verified"] is True


def test_devices_and_paths_are_checked_before_loading(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="device gpu: expected cpu, cuda or cuda:N"):
        SudokuSolver.from_pretrained(device="gpu")
    with pytest.raises(ValueError, match="device cuda:99: (.* sees no CUDA device|this machine has)"):
        check_device("cuda:99")
    assert SudokuSolver.from_pretrained(device="cpu:0").model.device == torch.device("cpu")  # was 'damaged file'
    half = SudokuSolver.from_pretrained(dtype="bfloat16", canvases=2)  # as the CLI's --dtype; kwargs still pass on
    assert half.model.dtype == torch.bfloat16 and half.canvases == 2
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="no_such_model: no such directory"):
        SudokuSolver.from_pretrained("./no_such_model")
    with pytest.raises(CheckpointError, match="empty checkpoint path"):
        SudokuSolver.from_pretrained("")
    with pytest.raises(TypeError, match="checkpoint must be a directory path or a hub id 'owner/name', got 5"):
        SudokuSolver.from_pretrained(5)


def test_batched_calls_show_a_progress_bar_only_when_asked(models, capsys):
    sudoku = SudokuSolver(models["sudoku"], max_steps=64)
    sudoku.solve_many([PUZZLE, "1" * 80])
    assert capsys.readouterr().err == ""  # silent by default
    results = sudoku.solve_many([PUZZLE, "1" * 80], progress=True)
    verified = sum(r.verified for r in results)
    assert re.search(rf"sudoku: 100%.* 2/2 .*verified={verified}\]", capsys.readouterr().err)
    with pytest.raises(TypeError, match="progress must be True or False, got 'yes'"):
        sudoku.solve_many([PUZZLE], progress="yes")

    graphs = GraphSolver(models["graphs"], max_steps=64)
    routes = graphs.hamiltonian_paths([nx.cycle_graph(5), nx.star_graph(3)], progress=True)
    assert routes[1].forward_passes == 0 and not routes[1].verified  # refuted unsampled: counted from the start
    assert re.search(r"Hamiltonian path: 100%.* 2/2 ", capsys.readouterr().err)
    graphs.paths([(nx.path_graph(4), 0, 3)], progress=True)
    assert re.search(r"path: 100%.* 1/1 ", capsys.readouterr().err)
    with pytest.raises(GraphError, match="progress must be True or False"):
        graphs.paths([(nx.path_graph(4), 0, 3)], progress=1)
    with pytest.raises(GraphError, match="progress must be True or False"):
        graphs.hamiltonian_paths([nx.cycle_graph(5)], progress="yes")
    coloured = graphs.color(nx.petersen_graph(), progress=True)  # one bar per attempt, of its passes
    assert coloured.verified and [a["k"] for a in coloured.attempts] == [3]
    assert re.search(r"3 colours: .* [1-9]\d*/64 ", capsys.readouterr().err)
    with pytest.raises(GraphError, match="progress must be True or False"):
        graphs.color(nx.petersen_graph(), progress="yes")

    countdown = CountdownSolver(models["graphs"], max_steps=16)
    countdown.solve_many([([4, 6, 1, 1], 24), ([1, 1], 5)], progress=True)
    assert re.search(r"countdown: 100%.* 2/2 ", capsys.readouterr().err)
    with pytest.raises(CountdownError, match="progress must be True or False"):
        countdown.solve_many([([4, 6, 1, 1], 24)], progress=None)

    designer = MoleculeDesigner(models["molecules"])
    found = designer.generate(2, seed=0, budget=64, progress=True)
    assert re.search(rf"molecules: .* {len(found)}/2 .*canvases={found.canvases}/64\]", capsys.readouterr().err)
    with pytest.raises(RequestError, match="progress must be True or False"):
        designer.generate(1, progress="no")


def test_countdown_checks_every_instance_before_handing_over_any_result(models):
    handed = []
    with pytest.raises(CountdownError, match="instance 1: "):
        CountdownSolver(models["graphs"]).solve_many([([1, 1], 5), ([4], "x")], on_result=lambda *a: handed.append(a))
    assert handed == []  # the impossible first instance is answered only once the second has been checked


@pytest.mark.parametrize("solver", [SudokuSolver, GraphSolver, CountdownSolver, MoleculeDesigner])
def test_a_constructor_given_no_model_says_what_it_needs(solver):
    with pytest.raises(TypeError, match="model must be a DiffusionGemma .*got NoneType"):
        solver(None)


def test_a_misspelt_setting_is_named_before_any_checkpoint_is_read(monkeypatch):
    from diffsolve.solvers import checkpoints

    monkeypatch.setattr(checkpoints, "read_header", lambda path: pytest.fail("read before the settings were checked"))
    with pytest.raises(TypeError, match=r"SudokuSolver.from_pretrained: .*'max_step' \(settings: guided, canvases, "
                                        r"max_steps"):
        SudokuSolver.from_pretrained(max_step=3)
    with pytest.raises(TypeError, match=r"MoleculeDesigner.from_pretrained: .*'seed'"):  # a generate() argument
        MoleculeDesigner.from_pretrained(seed=3)


def test_countdown_names_itself_and_the_values_it_refuses(models):
    with pytest.raises(CheckpointError, match=r"not a graphs checkpoint .*; CountdownSolver needs 284 tokens"):
        CountdownSolver(models["sudoku"])
    solver = CountdownSolver(models["graphs"], max_steps=2)
    with pytest.raises(CountdownError, match=r"must be positive integers, got -1"):
        solver.solve([-1, 2, 3], 4)
    with pytest.raises(CountdownError, match=r"at most 999 \(the model's prompt\), got 1000"):
        solver.solve([1000, 2, 3], 4)
    impossible = solver.solve([1, 1], 100)
    assert str(impossible).startswith("1,1 -> 100: no verified answer: no solution that uses every number")


def test_reprs_show_the_settings_that_change_the_answers(models):
    designer = MoleculeDesigner(models["molecules"], novel=False)
    assert repr(designer).endswith("training_prior=True, match_training=True, novel=False)")
    assert "temperature" not in repr(GraphSolver(models["graphs"]))  # each problem's own
    assert repr(GraphSolver(models["graphs"], temperature=1.5)).endswith("seed=0, temperature=1.5)")
