import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from diffsolve.tasks.sudoku_data import (
    augment, conflicts, count_solutions, generate_examples, generate_examples_parallel, is_valid_solution, make_puzzle,
    random_grid, solve,
)
from diffsolve.tasks.sudoku_files import ParsedPuzzle, PuzzleFormatError, format_grid, parse_puzzles

# A classic unique puzzle and its solution.
PUZZLE = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"

seeds = st.integers(0, 2**32 - 1)


def grid_and_puzzle(seed: int, givens: int = 30) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    grid = random_grid(rng)
    return grid, make_puzzle(grid, givens, rng, unique=False)


@settings(max_examples=40, deadline=None)
@given(seeds)
def test_random_grid_is_valid(seed):
    assert is_valid_solution("0" * 81, random_grid(np.random.default_rng(seed)))


def test_a_grid_whose_boxes_repeat_a_digit_is_not_a_solution():
    latin = "".join("123456789"[r:] + "123456789"[:r] for r in range(9))  # rows and columns fine, boxes not
    assert not is_valid_solution("0" * 81, latin)
    assert not is_valid_solution("0" * 81, latin[9:] + latin[:9])  # nor with the rows shifted


def test_random_grids_differ():
    rng = np.random.default_rng(0)
    assert len({random_grid(rng) for _ in range(50)}) == 50


def test_solver_on_known_puzzle():
    assert solve(PUZZLE) == SOLUTION
    assert count_solutions(PUZZLE) == 1
    assert count_solutions(SOLUTION) == 1


def test_solver_detects_multiple_and_no_solutions():
    assert count_solutions("0" * 81) == 2
    assert count_solutions("0" * 81, limit=5) == 5
    assert count_solutions("0" + PUZZLE[1:]) == 1
    assert count_solutions("5" * 2 + "0" * 79) == 0
    assert solve("5" * 2 + "0" * 79) is None
    # Consistent clues with no completion: 1-8 in row 1 and a 9 in the remaining cell's column.
    assert solve("123456780" + "0" * 8 + "9" + "0" * 63) is None


def test_solver_non_unique_puzzle():
    rng = np.random.default_rng(3)
    grid = random_grid(rng)
    puzzle = make_puzzle(grid, 17, rng, unique=False)
    assert count_solutions(puzzle) == 2  # 17 random clues almost never pin a grid down
    assert is_valid_solution(puzzle, solve(puzzle))


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(17, 60))
def test_make_puzzle_not_unique_has_exact_givens(seed, givens):
    grid, puzzle = grid_and_puzzle(seed, givens)
    assert 81 - puzzle.count("0") == givens
    assert is_valid_solution(puzzle, grid)


@settings(max_examples=10, deadline=None)
@given(seeds, st.integers(17, 40))
def test_make_puzzle_unique(seed, givens):
    rng = np.random.default_rng(seed)
    grid = random_grid(rng)
    puzzle = make_puzzle(grid, givens, rng, unique=True)
    assert 81 - puzzle.count("0") >= givens
    assert is_valid_solution(puzzle, grid)
    assert count_solutions(puzzle) == 1
    assert solve(puzzle) == grid


def test_make_puzzle_unique_low_target_is_minimal():
    rng = np.random.default_rng(7)
    grid = random_grid(rng)
    puzzle = make_puzzle(grid, 17, rng, unique=True)
    for i in range(81):
        if puzzle[i] != "0":
            assert count_solutions(puzzle[:i] + "0" + puzzle[i + 1:]) == 2


@settings(max_examples=40, deadline=None)
@given(seeds)
def test_augment_maps_consistently(seed):
    grid, puzzle = grid_and_puzzle(seed)
    new_puzzle, new_grid = augment(puzzle, grid, np.random.default_rng(seed + 1))
    assert is_valid_solution(new_puzzle, new_grid)
    assert new_puzzle.count("0") == puzzle.count("0")
    # Blanks stay aligned with each other: every clue is the solution's digit at that cell.
    assert all(p in ("0", s) for p, s in zip(new_puzzle, new_grid))
    assert sorted(new_grid) == sorted(grid)


def test_augment_reaches_transposes_and_relabels():
    rng = np.random.default_rng(0)
    outputs = {augment(PUZZLE, SOLUTION, rng)[1] for _ in range(20)}
    assert len(outputs) == 20


def test_generate_examples_deterministic_and_bounded():
    examples = generate_examples(20, seed=5, min_givens=20, max_givens=35, unique_fraction=0.25)
    assert examples == generate_examples(20, seed=5, min_givens=20, max_givens=35, unique_fraction=0.25)
    assert examples != generate_examples(20, seed=6, min_givens=20, max_givens=35, unique_fraction=0.25)
    assert len(examples) == 20
    assert all(is_valid_solution(p, s) and 20 <= 81 - p.count("0") <= 35 for p, s in examples)
    assert sum(count_solutions(p) == 1 for p, _ in examples) >= 5  # at least the unique_fraction share


def test_generate_examples_parallel_deterministic():
    first = generate_examples_parallel(6, seed=1, workers=2, max_givens=30)
    assert first == generate_examples_parallel(6, seed=1, workers=2, max_givens=30)
    assert len(first) == 6
    assert all(is_valid_solution(p, s) for p, s in first)


def check_parsed(results, puzzles, solutions=None):
    assert [type(r) for r in results] == [ParsedPuzzle] * len(puzzles)
    assert [r.puzzle for r in results] == puzzles
    assert [r.index for r in results] == list(range(len(puzzles)))
    if solutions is not None:
        assert [r.solution for r in results] == solutions


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(1, 81), st.sampled_from(".0-"))
def test_line_format_round_trip(seed, givens, blank):
    _, puzzle = grid_and_puzzle(seed, givens)
    text = f"# comment\n\n{puzzle.replace('0', blank)}\n{PUZZLE}\n"
    results = parse_puzzles(text)
    check_parsed(results, [puzzle, PUZZLE])
    assert [r.line for r in results] == [3, 4]


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(0, 81))
def test_grid_format_round_trip(seed, givens):
    _, puzzle = grid_and_puzzle(seed, givens)
    results = parse_puzzles(format_grid(puzzle) + "\n\n" + format_grid(PUZZLE) + "\n" + format_grid(SOLUTION))
    check_parsed(results, [puzzle, PUZZLE, SOLUTION])
    assert [r.line for r in results] == [1, 13, 24]


def test_grid_format_without_separators():
    plain = "\n".join(" ".join(PUZZLE[r * 9: r * 9 + 9]) for r in range(9))
    compact = "\n".join(PUZZLE[r * 9: r * 9 + 9].replace("0", ".") for r in range(9))
    check_parsed(parse_puzzles(plain + "\n\n" + compact), [PUZZLE, PUZZLE])


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(0, 81), st.sampled_from(["puzzle,solution", "id,quizzes,solutions"]))
def test_csv_round_trip(seed, givens, header):
    grid, puzzle = grid_and_puzzle(seed, givens)
    rows = [f"{puzzle},{grid}", f"{PUZZLE},{SOLUTION}"]
    if header.startswith("id"):
        rows = [f"{k},{row}" for k, row in enumerate(rows)]
    results = parse_puzzles("\n".join([header, *rows]))
    check_parsed(results, [puzzle, PUZZLE], [grid, SOLUTION])
    assert [r.line for r in results] == [2, 3]


def test_csv_without_solution_column():
    results = parse_puzzles(f"Puzzle\n{PUZZLE}\n")
    check_parsed(results, [PUZZLE], [None])


def assert_error(result, line, message, path="puzzles.txt"):
    assert isinstance(result, PuzzleFormatError)
    assert (result.path, result.line, result.message) == (path, line, message)
    assert str(result) == f"{path}:{line}: {message}"


def test_line_format_errors_keep_other_puzzles():
    conflicting = "5" + PUZZLE[1:6] + "5" + PUZZLE[7:]
    text = "\n".join([PUZZLE, PUZZLE[:80], PUZZLE[:40] + "x" + PUZZLE[41:], conflicting, SOLUTION])
    results = parse_puzzles(text, "puzzles.txt")
    assert_error(results[1], 2, "expected 81 cells, got 80")
    assert_error(results[2], 3, "bad character 'x' at column 41")
    assert_error(results[3], 4, "clues conflict: 5 at r1c1 and r1c7")
    assert [(r.puzzle, r.line, r.index) for r in (results[0], results[4])] == [(PUZZLE, 1, 0), (SOLUTION, 5, 4)]
    assert isinstance(results[1], ValueError)
    twice = "0" * 81
    for cell, digit in ((0, "5"), (8, "5"), (40, "3"), (44, "3")):
        twice = twice[:cell] + digit + twice[cell + 1:]
    assert_error(parse_puzzles(twice, "puzzles.txt")[0], 1, "clues conflict: 5 at r1c1 and r1c9; 3 at r5c5 and "
                                                             "r5c9")  # every conflict, not the first alone
    assert parse_puzzles("1" * 81, "puzzles.txt")[0].message.endswith("; and 807 more pairs")  # not 16 kB


def test_grid_format_errors():
    good = format_grid(PUZZLE)
    bad_char = good.replace("5 3 .", "5 3 ?", 1)
    short_row = good.replace(". 9 8", ". 9", 1)
    truncated = "\n".join(good.splitlines()[:9])  # 7 rows and 2 separators
    results = parse_puzzles("\n\n".join([bad_char, short_row, truncated, good]), "puzzles.txt")
    assert_error(results[0], 1, "bad character '?' at column 5")
    assert_error(results[1], 15, "expected 9 cells in grid row, got 8")
    assert_error(results[2], 25, "expected 9 grid rows, got 7")
    assert (results[3].puzzle, results[3].line, results[3].index) == (PUZZLE, 35, 3)


def test_csv_errors():
    swapped = SOLUTION[1] + SOLUTION[0] + SOLUTION[2:]
    rows = [f"{PUZZLE},{SOLUTION}", f"{PUZZLE},{SOLUTION[:80]}", f"{PUZZLE},{'1' * 81}", f"{PUZZLE},{swapped}",
            PUZZLE, f"{PUZZLE[:79]}!0,{SOLUTION}", f"{PUZZLE}, {SOLUTION}"]
    results = parse_puzzles("\n".join(["puzzle,solution", *rows]), "puzzles.txt")
    assert results[0].solution == SOLUTION and results[0].warning is None
    for result, problem in zip(results[1:4], ["expected 81 cells, got 80", "not a valid complete grid",
                                              "not a valid complete grid"]):  # the puzzle is kept, not its solution
        assert (result.puzzle, result.solution) == (PUZZLE, None)
        assert result.warning == f"solution column ignored: {problem}"
    assert (results[4].puzzle, results[4].solution, results[4].line) == (PUZZLE, None, 6)  # the solution is optional
    assert_error(results[5], 7, "bad character '!' at column 80")
    assert (results[6].solution, results[6].line, results[6].index) == (SOLUTION, 8, 6)


def test_a_quoted_csv_field_may_hold_line_breaks_and_an_unquoted_one_a_quote():
    """As spreadsheets and pandas write a multi-line note: the row goes on to the closing quote; '5" screen' in an
    unquoted field is an inch mark, not the start of a quoted field that would swallow the rows below."""
    text = (f'id;puzzle;note\n1;"{PUZZLE}";"a note\non two lines"\n2;{PUZZLE};5" screen\n3;{PUZZLE};"x"\n'
            '4\n')
    results = parse_puzzles(text, "puzzles.txt")
    assert [(r.puzzle, r.line) for r in results[:3]] == [(PUZZLE, 2), (PUZZLE, 4), (PUZZLE, 5)]
    assert_error(results[3], 6, "1 field, but the header puts the puzzle in field 2")
    # a quote that never closes is a stray character: the rows below it are still read (they were swallowed)
    unclosed = parse_puzzles(f'puzzle,note\n{PUZZLE},"oops\n{PUZZLE},fine\n{PUZZLE},fine\n', "puzzles.txt")
    assert [(r.puzzle, r.line) for r in unclosed] == [(PUZZLE, 2), (PUZZLE, 3), (PUZZLE, 4)]
    # a bad cell is placed on the line of the row where it is, after a note of two lines
    bad = PUZZLE[:10] + "x" + PUZZLE[11:]
    assert_error(parse_puzzles(f'note,puzzle\n"first line\nsecond line",{bad}\n', "puzzles.txt")[0], 3,
                 "bad character 'x' at column 24")


def test_csv_files_joined_keep_their_rows_and_two_puzzle_columns_are_named():
    joined = f"puzzle,solution\n{PUZZLE},{SOLUTION}\n\ufeffpuzzle,solution\n{PUZZLE},\n"  # `cat a.csv b.csv`
    assert [(r.puzzle, r.line) for r in parse_puzzles(joined, "puzzles.txt")] == [(PUZZLE, 2), (PUZZLE, 4)]
    both = parse_puzzles(f"quizzes,Puzzle,solution\n{PUZZLE},{PUZZLE},{SOLUTION}\n", "puzzles.txt")
    assert_error(both[0], 1, "a CSV header with 2 puzzle columns (quizzes, Puzzle): keep one, or rename the others")


def test_digits_of_other_scripts_read_as_ascii_digits():
    full_width = "".join(chr(0xFF10 + int(c)) for c in PUZZLE)  # as a Japanese puzzle site writes them
    arabic_indic = "".join(chr(0x0660 + int(c)) for c in PUZZLE)
    for text in (full_width, arabic_indic, f"très difficile\n{full_width[:40]}x{full_width[41:]}"):
        result = parse_puzzles(text, "puzzles.txt")[0]
        assert result.puzzle == PUZZLE if "x" not in text else result.message == "bad character 'x' at column 41"


def test_a_lone_short_line_is_a_short_puzzle_and_dashes_can_be_a_row_of_blanks():
    results = parse_puzzles(f"{PUZZLE}\n12345\n", "puzzles.txt")
    assert_error(results[1], 2, "expected 81 cells (or a 9-row grid), got 5")
    blank_top = "0" * 9 + SOLUTION[9:]
    rows = ["-" * 9] + [SOLUTION[9 * r: 9 * r + 9] for r in range(1, 9)]  # first row all '-' blanks
    results = parse_puzzles("\n".join(rows), "g.txt")
    assert results[0].puzzle == blank_top and results[0].line == 1


def test_an_empty_solution_field_means_no_solution_given():
    results = parse_puzzles(f"id,puzzle,solution\n1,{PUZZLE},\n2,{PUZZLE},{SOLUTION}\n", "q.csv")
    assert (results[0].puzzle, results[0].solution) == (PUZZLE, None)
    assert results[1].solution == SOLUTION


@settings(max_examples=60, deadline=None)
@given(seeds, st.integers(0, 80), st.sampled_from(["drop", "add", "char", "clash"]))
def test_corrupted_puzzles_give_one_clean_error_and_the_others_still_parse(seed, at, how):
    _, puzzle = grid_and_puzzle(seed)
    if how == "drop":
        bad, message = puzzle[:at] + puzzle[at + 1:], "expected 81 cells"
    elif how == "add":
        bad, message = puzzle[:at] + "1" + puzzle[at:], "expected 81 cells"
    elif how == "char":
        bad, message = puzzle[:at] + "x" + puzzle[at + 1:], f"bad character 'x' at column {at + 1}"
    else:  # copy a clue into a blank cell of its own row
        row = at // 9
        clue = next((c for c in puzzle[9 * row: 9 * row + 9] if c != "0"), None)
        blank = next((k for k in range(9 * row, 9 * row + 9) if puzzle[k] == "0"), None)
        assume(clue is not None and blank is not None)
        bad, message = puzzle[:blank] + clue + puzzle[blank + 1:], "clues conflict"
    results = parse_puzzles("\n".join([puzzle, bad, puzzle]), "p.txt")
    assert [type(r).__name__ for r in results] == ["ParsedPuzzle", "PuzzleFormatError", "ParsedPuzzle"]
    assert results[1].line == 2 and results[1].message.startswith(message) and str(results[1]).startswith("p.txt:2: ")
    assert results[0].puzzle == results[2].puzzle == puzzle and results[2].index == 2


def test_csv_solution_contradicting_clues():
    other = SOLUTION[::-1]  # a valid grid (180 degree rotation) that breaks the clues
    results = parse_puzzles(f"quizzes,solutions\n{PUZZLE},{other}\n", "p.csv")
    assert (results[0].puzzle, results[0].solution) == (PUZZLE, None)
    assert results[0].warning == "solution column ignored: it contradicts the clues"


def test_comments_titles_and_other_delimiters():
    grid = "\n".join(PUZZLE[r * 9: r * 9 + 9] for r in range(9))
    text = f"\ufeffGrid 01\n{grid}\nGrid 02  # Project Euler's layout\n{grid}\n{PUZZLE}   # inline comment\n"
    results = parse_puzzles(text, "p.txt")
    check_parsed(results, [PUZZLE] * 3)
    assert [r.line for r in results] == [2, 12, 21]
    titled = parse_puzzles(f"Easy puzzles, set 1\n{PUZZLE}\n{SOLUTION}\n")  # a comma in a title is not CSV
    check_parsed(titled, [PUZZLE, SOLUTION])
    for header, sep in [("puzzle;solution", ";"), ("puzzles\tsolutions", "\t"), ("Puzzles,Solutions", ",")]:
        rows = [header, "# a comment in the body", f"{PUZZLE}{sep}{SOLUTION}"]
        check_parsed(parse_puzzles("\n".join(rows)), [PUZZLE], [SOLUTION])
    assert_error(parse_puzzles(f"id;grid\n1;{PUZZLE}\n", "q.csv")[0], 1,
                 "a CSV header needs a puzzle (or puzzles, quizzes) column, found 'id;grid'", path="q.csv")


def test_labelled_puzzle_lines_are_errors_not_titles_and_titles_end_grids():
    results = parse_puzzles(f"Puzzle 1: {PUZZLE}\n{PUZZLE} ED=9.0/1.2/1.2\n{PUZZLE}\n", "p.txt")
    assert_error(results[0], 1, "bad character 'P' at column 1", path="p.txt")
    assert_error(results[1], 2, "bad character 'E' at column 83", path="p.txt")
    assert results[2].puzzle == PUZZLE
    rows = [PUZZLE[r * 9: r * 9 + 9] for r in range(9)]
    results = parse_puzzles("\n".join(["Grid 01", *rows[:8], "Grid 02", *rows]), "g.txt")
    assert_error(results[0], 2, "expected 9 grid rows, got 8", path="g.txt")
    assert results[1].puzzle == PUZZLE and results[1].line == 11
    titled = parse_puzzles(f"Easy, set 1\nHard, set 2\n{PUZZLE}\n")  # two titles sharing a comma: not CSV
    check_parsed(titled, [PUZZLE])
    csv_below_title = parse_puzzles(f"My puzzles\npuzzle,solution # from Kaggle\n{PUZZLE},{SOLUTION}  # one\n")
    check_parsed(csv_below_title, [PUZZLE], [SOLUTION])
    assert csv_below_title[0].line == 3


def test_grid_rows_that_do_not_make_whole_grids_are_refused_together():
    rows = [PUZZLE[r * 9: r * 9 + 9] for r in range(9)]
    ten = rows[:4] + ["........."] + rows[4:]  # a row of blanks too many: rows 1-9 were read as a wrong puzzle
    on_top = ["........."] + rows  # was 'clues conflict' between cells that do not conflict in the file
    glued = rows[:8] + rows  # an 8-row grid glued to a whole one
    for grid, count in [(ten, 10), (on_top, 10), (glued, 17)]:
        results = parse_puzzles("\n".join([PUZZLE, *grid, "", PUZZLE]), "g.txt")
        assert_error(results[1], 2, f"expected 9 grid rows (or 18, 27, ... for grids one after another), got {count}",
                     path="g.txt")
        assert [r.puzzle for r in (results[0], results[2])] == [PUZZLE, PUZZLE] and len(results) == 3
    check_parsed(parse_puzzles("\n".join(rows + rows)), [PUZZLE, PUZZLE])  # whole grids one after another


def test_a_grid_that_writes_blanks_as_letters_is_named_not_skipped_as_titles():
    rows = [PUZZLE[r * 9: r * 9 + 9].replace("0", "x") for r in range(9)]  # '53xx7xxxx' read as a title
    results = parse_puzzles("\n".join([PUZZLE, "", *rows, "", PUZZLE]), "g.txt")
    assert_error(results[1], 3, "bad character 'x' at column 3", path="g.txt")
    assert len(results) == 3


def test_a_letter_inside_a_grid_or_an_81_cell_line_is_still_a_bad_character():
    rows = [PUZZLE[r * 9: r * 9 + 9] for r in range(9)]
    for r in (0, 3):
        bad = list(rows)
        bad[r] = "ab" + rows[r][2:]
        assert_error(parse_puzzles("\n".join(bad), "g.txt")[0], r + 1, "bad character 'a' at column 1", path="g.txt")
    assert_error(parse_puzzles("ab" + PUZZLE[2:], "l.txt")[0], 1, "bad character 'a' at column 1", path="l.txt")
    assert_error(parse_puzzles(PUZZLE[:5] + "\ufffd" + PUZZLE[6:], "u.txt")[0], 1,
                 "bad byte at column 6: the file is not UTF-8 text", path="u.txt")


def test_a_line_with_a_byte_that_is_not_utf8_is_named_so_whatever_its_length():
    """Binary junk decoded with replacement characters: short lines and long ones with commas. A title line with
    such a byte stays a title (a Latin-1 'tres difficile' above good puzzles is no reason to fail the file)."""
    junk = "5\ufffd3\n1,2,3" + "\ufffd" * 90 + "\nPuzzles \ufffd\n12\ufffd\n"
    errors = parse_puzzles(junk, "j.bin")
    assert [(e.line, e.message) for e in errors] == [
        (line, f"bad byte at column {column}: the file is not UTF-8 text") for line, column in [(1, 2), (2, 6), (4, 3)]]
    check_parsed(parse_puzzles(f"Grille tr\ufffds difficile\n{PUZZLE}\n"), [PUZZLE])


def test_conflicts_and_validity():
    assert conflicts(PUZZLE) == []
    assert conflicts("55" + "0" * 79) == [(0, 1, 5)]
    assert conflicts("5" + "0" * 9 + "5" + "0" * 70) == [(0, 10, 5)]  # same box only, reported once
    assert not is_valid_solution(PUZZLE, PUZZLE)
    assert not is_valid_solution("1" + PUZZLE[1:], SOLUTION)


def test_count_solutions_rejects_bad_length():
    with pytest.raises(ValueError, match="expected 81 cells, got 80"):
        count_solutions(PUZZLE[:80])


def _rows(puzzle: str, blank: str = ".") -> list[str]:
    """The grid's rows, bands split by '|'."""
    cells = puzzle.replace("0", blank)
    return ["|".join(cells[r * 9 + c: r * 9 + c + 3] for c in (0, 3, 6)) for r in range(9)]


@pytest.mark.parametrize("separator", ["---|---|---", "|---|---|---|", "===========", "---+---+---", "-----------"])
def test_band_separators_are_not_read_as_rows_of_blanks(separator):
    rows = _rows(PUZZLE)
    text = "\n".join([*rows[:3], separator, *rows[3:6], separator, *rows[6:]])
    check_parsed(parse_puzzles(text), [PUZZLE])
    titled = parse_puzzles("\n".join(["Puzzle 1 - easy", *rows[:3], separator, *rows[3:6], separator, *rows[6:]]))
    check_parsed(titled, [PUZZLE])  # a dash in a title says nothing about blanks
    # where blanks are written as '-', nine of them are a row of blanks
    dashed = _rows("0" * 9 + SOLUTION[9:], "-")
    check_parsed(parse_puzzles("\n".join(dashed)), ["0" * 9 + SOLUTION[9:]])


def test_blank_lines_between_bands_and_a_title_word_above_a_grid():
    rows = [PUZZLE[r * 9: r * 9 + 9] for r in range(9)]
    banded = "\n".join([*rows[:3], "", *rows[3:6], "", *rows[6:], "", *rows])
    check_parsed(parse_puzzles(banded), [PUZZLE, PUZZLE])
    broken = parse_puzzles("\n".join([*rows[:3], "", PUZZLE]), "g.txt")
    assert_error(broken[0], 1, "expected 9 grid rows, got 3", path="g.txt")
    assert broken[1].puzzle == PUZZLE
    cut_short = parse_puzzles("\n".join(["." * 9] * 3 + ["", *rows]), "g.txt")  # not glued to the next grid
    assert_error(cut_short[0], 1, "expected 9 grid rows, got 3", path="g.txt")
    assert cut_short[1].puzzle == PUZZLE and cut_short[1].line == 5
    for title in ("Puzzle", "Puzzles", "Quizzes"):
        check_parsed(parse_puzzles("\n".join([title, *rows, "Solution", *SOLUTION_ROWS])), [PUZZLE, SOLUTION])
    check_parsed(parse_puzzles(f"puzzle\n{PUZZLE}\n"), [PUZZLE])  # a one-column CSV is still one


SOLUTION_ROWS = [SOLUTION[r * 9: r * 9 + 9] for r in range(9)]


def test_csv_fields_may_hold_a_hash_and_rows_may_be_empty_or_lack_the_solution():
    text = (f"name,puzzle,solution\nPuzzle #1,{PUZZLE},{SOLUTION}\n\"Grid #2\",{PUZZLE},{SOLUTION}  # a note\n"
            f"# a comment line\n,,\n{'x'},{PUZZLE}\n")
    results = parse_puzzles(text, "h.csv")
    check_parsed(results, [PUZZLE] * 3, [SOLUTION, SOLUTION, None])
    assert [r.line for r in results] == [2, 3, 6]
    numbered = parse_puzzles(f"#,puzzle,solution\n1,{PUZZLE},{SOLUTION}\n")  # a spreadsheet's row numbers
    check_parsed(numbered, [PUZZLE], [SOLUTION])


def test_a_line_longer_than_any_puzzle_line_is_an_error_and_costs_no_memory_per_character():
    import tracemalloc

    long = " ".join([PUZZLE] * 1500)  # 122,999 characters: still read, and named by its cells
    assert_error(parse_puzzles(long, "s.txt")[0], 1, "expected 81 cells, got 121500", path="s.txt")
    results = parse_puzzles(f"puzzle,solution\n{'.' * 200000},\n{PUZZLE},{SOLUTION}\n", "s.csv")
    assert_error(results[0], 2, "200,001 characters: longer than any puzzle line (131,072 at most)", path="s.csv")
    assert results[1].puzzle == PUZZLE
    lines = [PUZZLE, "1" * 10**7, *(PUZZLE[r * 9: r * 9 + 9] for r in range(9)), "5" * 200_000]
    tracemalloc.start()
    results = parse_puzzles("\n".join(lines), "s.txt")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [getattr(r, "puzzle", None) for r in results] == [PUZZLE, None, PUZZLE, None]
    assert_error(results[1], 2, "10,000,000 characters: longer than any puzzle line (131,072 at most)", path="s.txt")
    assert_error(results[3], 12, "200,000 characters: longer than any puzzle line (131,072 at most)", path="s.txt")
    assert peak < 50 * 10**6  # parsing the 10**7-character line cell by cell took 1.07 GB and 18 s


@pytest.mark.parametrize("junk", [131_072, 131_073])
def test_a_long_line_ends_a_grid_whatever_its_length(junk):
    """Between two bands, a line too long to parse is no blank line between bands (one just short enough never
    was): either way the grid is cut there."""
    rows = [PUZZLE[r * 9: r * 9 + 9] for r in range(9)]
    results = parse_puzzles("\n".join([*rows[:3], "5" * junk, *rows[3:]]), "g.txt")
    assert not any(isinstance(r, ParsedPuzzle) for r in results)
    assert [(r.line, r.message.split(":")[0]) for r in results][::2] == [(1, "expected 9 grid rows, got 3"),
                                                                         (5, "expected 9 grid rows, got 6")]


def test_a_long_comment_does_not_make_a_puzzle_line_too_long():
    results = parse_puzzles(f"{PUZZLE}  # {'x' * 200_000}\n{PUZZLE}\n", "c.txt")
    assert [r.puzzle for r in results] == [PUZZLE, PUZZLE]


def test_a_long_csv_row_is_never_cut_at_a_hash_outside_its_puzzle_and_solution():
    """'#' is a comment in a CSV's puzzle and solution fields only: a long row is refused whole, never read as
    the text before a '#' in a name (that lost the solution, or named the wrong problem)."""
    for row in (f"name#1 {'x' * 140_000},{PUZZLE},{SOLUTION}", f"{PUZZLE},{SOLUTION},note # {'x' * 140_000}"):
        results = parse_puzzles(f"name,puzzle,solution\n{row}\nshort,{PUZZLE},{SOLUTION}\n", "h.csv")
        assert_error(results[0], 2, f"{len(row):,} characters: longer than any puzzle line (131,072 at most)",
                     path="h.csv")
        assert (results[1].line, results[1].puzzle, results[1].solution) == (3, PUZZLE, SOLUTION)


def test_dated_titles_comma_rows_and_quoted_csv_fields_are_read_or_named():
    rows = [PUZZLE[r * 9: r * 9 + 9] for r in range(9)]
    for title in ("Sudoku 2024-06-15", "Puzzle 10452"):  # were read as grid row 1: two errors, the puzzle lost
        check_parsed(parse_puzzles("\n".join([title, *rows])), [PUZZLE])
    truncated = parse_puzzles(f"Hard 4.....8.5.3\n{PUZZLE}\n", "t.txt")  # a labelled short puzzle, not a title
    assert_error(truncated[0], 1, "expected 81 cells (or a 9-row grid), got 15", path="t.txt")
    assert truncated[1].puzzle == PUZZLE
    dotted = [row.replace("0", ".") for row in rows]  # the date's dashes no longer make '-' the blank
    check_parsed(parse_puzzles("\n".join(["Sudoku 2024-06-15", *dotted])), [PUZZLE])
    commas = [",".join(row) for row in rows]  # was "expected 9 cells in grid row, got 17"
    assert_error(parse_puzzles("\n".join(commas), "c.txt")[0], 1,
                 "bad character ',' at column 2 (grid rows hold 9 cells: digits and blanks)", path="c.txt")
    quoted = parse_puzzles(f'id,puzzle,solution\n1, "{PUZZLE}", "{SOLUTION}"\n')  # a space before the quotes
    check_parsed(quoted, [PUZZLE], [SOLUTION])


def test_a_column_numbering_line_above_a_grid_is_not_its_first_row():
    # '1 2 3 4 5 6 7 8 9' was read as row 1: the grid shifted down a row and its last row became an error
    grid = format_grid(PUZZLE)
    for header in ("1 2 3 4 5 6 7 8 9", "    1 2 3 | 4 5 6 | 7 8 9"):
        results = parse_puzzles(f"{header}\n{grid}\n")
        check_parsed(results, [PUZZLE])
        assert results[0].line == 2
    counting = ["123456789", "456789123", "789123456", "234567891", "567891234", "891234567", "345678912",
                "678912345", "912345678"]  # a solved grid whose first row reads 1 to 9
    check_parsed(parse_puzzles("\n".join(counting)), ["".join(counting)])
    check_parsed(parse_puzzles("\n".join(["1 2 3 4 5 6 7 8 9", *counting])), ["".join(counting)])
    rows = [PUZZLE[r * 9: r * 9 + 9] for r in range(9)]
    header = "1 2 3 4 5 6 7 8 9"
    for glued in ([header, *rows, header, *SOLUTION_ROWS], [header, *rows, *SOLUTION_ROWS]):  # was shifted a row
        check_parsed(parse_puzzles("\n".join(glued)), [PUZZLE, SOLUTION])
    check_parsed(parse_puzzles("\n".join([*counting, *rows])), ["".join(counting), PUZZLE])  # a first row 1-9


def test_a_csv_field_holding_a_grid_on_nine_lines_says_so():
    """A spreadsheet cell may hold the grid's nine lines: not 'bad character '\\n''."""
    grid = "\n".join(PUZZLE[9 * r:9 * r + 9] for r in range(9))
    (entry,) = [e for e in parse_puzzles(f'puzzle,solution\n"{grid}",\n') if isinstance(e, PuzzleFormatError)]
    assert entry.line == 2 and entry.message == ("the puzzle field spans several lines; write it as 81 characters "
                                                 "on one line")


def test_more_than_three_clashing_pairs_are_counted_in_words():
    four = ("11" + "0" * 7 + "22" + "0" * 7 + "33" + "0" * 7 + "44").ljust(81, "0")  # rows 1-4: one pair each
    assert len(conflicts(four)) == 4
    (entry,) = parse_puzzles(four)
    assert entry.message.endswith("; and 1 more pair")
