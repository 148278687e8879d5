"""Sudoku puzzle files: one puzzle per line, 9-line grids (with or without separators), CSV with a puzzle column;
each record read or refused with its file, line and problem (`parse_puzzles`), and grids written for people."""

from __future__ import annotations

import csv
import heapq
import itertools
import math
import re
import unicodedata
from dataclasses import dataclass

from .sudoku_data import BLANKS, DIGITS, conflicts, is_valid_solution
from .text import BAD_BYTE, UNDECODABLE, plural, split_lines


class PuzzleFormatError(ValueError):
    """A puzzle that could not be read; str() gives 'path:line: message' ('path: message' for a whole file, whose
    line is None)."""

    def __init__(self, path: str, line: int | None, message: str):
        super().__init__(f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")
        self.path, self.line, self.message = path, line, message


@dataclass(frozen=True)
class ParsedPuzzle:
    """One puzzle read from a file: canonical puzzle, optional solution, start line, position in the results;
    `warning` says why a solution given in the file was set aside (the puzzle itself is fine)."""

    puzzle: str
    solution: str | None
    line: int
    index: int
    warning: str | None = None


Cell = tuple[int, int, str]  # (line, column, char), both 1-based


@dataclass
class _Record:
    """An entry's cells before validation; `start` is the line it begins on."""

    start: int
    cells: list[Cell]
    solution: str | None = None
    warning: str | None = None


class _Invalid(Exception):
    """Internal: why one entry is bad, and on which line."""

    def __init__(self, line: int, message: str):
        self.line, self.message = line, message


def _cells(text: str, line: int, skip: str = " \t|", offset: int = 0) -> list[Cell]:
    return [(line, offset + col, ch) for col, ch in enumerate(text, 1) if ch not in skip]


def _bad_byte(cells) -> _Invalid | None:
    """The error for the first cell holding a byte that was not UTF-8 (binary junk), else None."""
    return next((_Invalid(line, BAD_BYTE.format(column=col)) for line, col, ch in cells if ch == UNDECODABLE), None)


def _check(record: _Record) -> str:
    """The canonical puzzle of `record`; raises _Invalid if it is bad. A bad solution is set aside with a warning."""
    start, cells, solution = record.start, record.cells, record.solution
    if (bad := _bad_byte(cells)) is not None:  # first: in a file that is not text, nothing else is worth saying
        raise bad
    if len(cells) > 81 and any(ch in DELIMITERS for _, _, ch in cells):
        raise _Invalid(start, f"expected 81 cells, got {len(cells)} (CSV? the first line must name the columns, "
                              "e.g. 'puzzle,solution')")
    for line, col, ch in cells:  # before the length: a label or a stray letter is the likelier mistake
        if ch in "\r\n":  # a spreadsheet cell holding the grid's nine lines
            raise _Invalid(line, "the puzzle field spans several lines; write it as 81 characters on one line")
        if ch not in DIGITS and ch not in BLANKS:
            raise _Invalid(line, f"bad character {ch!r} at column {col}")
    if len(cells) != 81:
        raise _Invalid(start, f"expected 81 cells, got {len(cells)}")
    puzzle = "".join(ch if ch in DIGITS else "0" for _, _, ch in cells)
    clash = conflicts(puzzle)
    if clash:  # several pairs, so that one fix is more likely to make the line usable
        named = [f"{d} at r{i // 9 + 1}c{i % 9 + 1} and r{j // 9 + 1}c{j % 9 + 1}" for i, j, d in clash[:3]]
        raise _Invalid(start, "clues conflict: " + "; ".join(named) + (f"; and {plural(len(clash) - 3, 'more pair')}"
                                                                        if len(clash) > 3 else ""))
    if solution is not None and not is_valid_solution(puzzle, solution):
        problem = (f"expected 81 cells, got {len(solution)}" if len(solution) != 81
                   else "not a valid complete grid" if not is_valid_solution("0" * 81, solution)
                   else "it contradicts the clues")
        record.solution, record.warning = None, f"solution column ignored: {problem}"
    return puzzle


MAX_LINE = 131_072  # characters: a puzzle line holds 81 cells and their separators, a CSV row a few fields more
DELIMITERS = ",;\t"  # comma first; semicolons (spreadsheets in comma-decimal locales) and tabs too
GRID_ROW = 18  # a line of at most this many cells is a grid row (or a short puzzle), never a whole puzzle


def _fields(line: str, delimiter: str, strict: bool = False) -> list[str] | None:
    """The CSV fields of `line`, or None when it cannot be one (a field beyond the csv module's limit; `strict`:
    also a quote out of place)."""
    try:  # skipinitialspace: '1, "5300..."' is quoted
        return next(csv.reader([line], delimiter=delimiter, skipinitialspace=True, strict=strict))
    except csv.Error:
        return None


PUZZLE_COLUMNS = ("puzzle", "puzzles", "quizzes")


def _csv_columns(header: str) -> tuple[int, int | None, str] | None:
    """(puzzle column, solution column or None, delimiter) if `header` is a puzzle CSV header. A comment may
    follow a name; a column named '#' alone (a spreadsheet's row numbers) is a name."""
    for delimiter in [d for d in DELIMITERS if d in header] or [","]:
        names = [_column_name(name) for name in _fields(header, delimiter) or []]
        puzzle = next((k for k, name in enumerate(names) if name in PUZZLE_COLUMNS), None)
        solution = next((k for k, name in enumerate(names) if name in ("solution", "solutions")), None)
        if puzzle is not None:
            return puzzle, solution, delimiter
    return None


def _csv_rows(lines: list[str], first: int, delimiter: str):
    """(line number, text) of each CSV row from line index `first` on: a quoted field may hold line breaks (as
    spreadsheets and pandas write a multi-line note), so a row that ends inside one goes on into the next lines
    (a quote inside an unquoted field, as in '5" screen', is only a character)."""
    k = first
    while k < len(lines):
        raw, end = lines[k], k
        if _ends_in_quotes(raw, delimiter):  # the row goes on to its closing quote, if it comes soon
            joined = raw
            for j in range(k + 1, min(len(lines), k + MAX_ROW_LINES)):
                joined += "\n" + lines[j]
                if len(joined) > MAX_LINE:
                    break
                if not _ends_in_quotes(joined, delimiter):
                    raw, end = joined, j
                    break
        yield k + 1, raw
        k = end + 1


# A quoted field spans a few lines at most; a quote that does not close within these is a stray character (an
# unclosed '"oops' must not swallow the rows below it).
MAX_ROW_LINES = 64


def _ends_in_quotes(row: str, delimiter: str) -> bool:
    """Whether `row` ends inside a quoted field: it is no CSV row as it stands, and would be with a closing quote."""
    return ('"' in row and _fields(row, delimiter, strict=True) is None
            and _fields(row + '"', delimiter, strict=True) is not None)


def _csv_records(lines: list[str], header: int, columns: tuple[int, int | None, str]):
    """Rows below `header`. '#' starts a comment at the start of a line and inside the puzzle and solution
    fields only (other columns, such as names, may hold one); rows with every field empty are skipped."""
    puzzle_col, solution_col, delimiter = columns
    header_text = lines[header].strip().lstrip("\ufeff")
    for number, raw in _csv_rows(lines, header + 1, delimiter):
        if not raw.strip() or (raw.lstrip().startswith("#") and not lines[header].lstrip().startswith("#")):
            continue
        if raw.strip().lstrip("\ufeff") == header_text:  # the header again: CSV files joined with `cat` (each may
            continue  # begin with a byte-order mark)
        fields = _fields(raw, delimiter)
        if fields is None:
            yield _Invalid(number, f"a field is longer than {csv.field_size_limit():,} characters")
            continue
        if not any(field.strip() for field in fields):
            continue
        if len(fields) <= puzzle_col:
            yield _Invalid(number, f"{len(fields)} {'field' if len(fields) == 1 else 'fields'}, but the header puts "
                                   f"the puzzle in field {puzzle_col + 1}")
            continue
        field = _uncommented(fields[puzzle_col]).strip()
        solution = None
        if solution_col is not None and solution_col < len(fields):  # empty or missing: none given
            solution = _uncommented(fields[solution_col]).strip() or None
        start = max(raw.find(field), 0)  # where the field begins, on a later line of a row that spans several
        line, column = number + raw.count("\n", 0, start), start - (raw.rfind("\n", 0, start) + 1)
        yield _Record(number, _cells(field, line, " \t", column), solution)


def _uncommented(line: str) -> str:
    return line.split("#", 1)[0]


def _is_title(line: str) -> bool:
    """A label such as 'Grid 01' or 'Easy puzzles, set 1': a word (two letters or more) and fewer than five digits
    and dots, or a word of four letters on a short line that is not a grid row's nine cells and has at most three
    blanks ('Sudoku 2024-06-15', 'Puzzle 10452'; not 'Hard 4.....8.5.3'), so that a puzzle line with a label or a
    mistyped letter is still read (and its letters named); a line of exactly 81 cells is always read as a puzzle,
    and so is a grid row of nine cells whose letters are one letter repeated ('53xx7xxxx': blanks written 'x')."""
    if re.search(r"[^\W\d_]{2}", line) is None:
        return False
    cells = len(_cells(line, 0))
    if cells == 9 and len({ch for ch in line if not ch.isdigit() and ch not in " \t|.-"}) == 1:
        return False
    return (sum(ch in DIGITS or ch in "0." for ch in line) < 5
            or re.search(r"[^\W\d_]{4}", line) is not None and cells <= GRID_ROW and cells != 9
            and sum(ch in "0." for ch in line) <= 3)


def _dashes_are_blanks(lines: list[str]) -> bool:
    """Whether the text writes blanks as '-': some puzzle line (not a title such as 'Puzzle 1 - easy') has a '-'
    beside a digit or another blank, or none writes a blank otherwise ('.' or '0')."""
    lines = [line for line in map(_uncommented, lines) if not _is_title(line.strip())]
    return (any("-" in line and any(ch in DIGITS or ch in ".0" for ch in line) for line in lines)
            or not any(ch in ".0" for line in lines for ch in line))


def _bands_continue(lines: list[str], below: int, rows: int, dash_blanks: bool, breaks: frozenset[int]) -> bool:
    """Whether a grid of `rows` rows (3 or 6) that meets a blank line goes on below it: the lines from index
    `below` hold exactly its missing rows, in bands of three split by blank lines, and then the grid ends."""
    return _grid_rows(lines, below, rows, dash_blanks, 10, breaks) == 9


def _grid_rows(lines: list[str], below: int, rows: int, dash_blanks: bool, limit: float,
               breaks: frozenset[int] = frozenset()) -> int:
    """How many grid rows a block of `rows` rows reaches, read from line index `below`: lines of at most GRID_ROW
    cells, through separator lines and the blank lines between bands (after rows 3 and 6 of each grid), up to a
    blank line, a title, a longer line, a column-number line above a next grid, a line numbered in `breaks`, or
    `limit` rows."""
    for number, raw in enumerate(itertools.islice(lines, below, None), below + 1):  # no copy
        if number in breaks:
            return rows
        text = _uncommented(raw)
        stripped, cells = text.strip(), _cells(text, 0)
        if _is_separator(stripped, len(cells), dash_blanks):
            continue
        if not stripped and rows % 9 in (3, 6):
            continue
        if (not stripped or len(cells) > GRID_ROW or (len(cells) != 81 and _is_title(stripped))
                or (rows and rows % 9 == 0 and _is_column_header(cells))):
            return rows
        rows += 1
        if rows >= limit:
            return rows
    return rows


def _is_separator(stripped: str, cells: int, dash_blanks: bool) -> bool:
    """A line of '-', '=', '+' and '|' between bands; nine '-' (with or without '|') are a row of blanks in a
    text that writes blanks as '-' elsewhere."""
    return (bool(stripped) and set(stripped) <= set("-=+| ") and cells != 81
            and ("+" in stripped or "=" in stripped or cells != 9 or not dash_blanks))


def _is_column_header(cells: list[Cell]) -> bool:
    return "".join(ch for _, _, ch in cells) == "123456789"


def _text_records(lines: list[str], breaks: frozenset[int] = frozenset()):
    """One-line puzzles and 9-row grids (separator lines are skipped; blank lines, comments and title lines end a
    grid, except blank lines between its bands; a line '1 2 3 4 5 6 7 8 9' above whole grids numbers the columns).
    '#' starts a comment anywhere on a line. The lines numbered in `breaks` (blanked) end a grid."""
    block: list[tuple[int, list[Cell]]] = []
    glued: list[_Record | _Invalid] = []  # the grids of a run of rows not yet ended: it may not hold whole grids
    dash_blanks = _dashes_are_blanks(lines)
    for number, raw in enumerate(lines + [""], 1):  # the extra blank line closes a trailing grid
        raw = _uncommented(raw)
        stripped = raw.strip()
        cells = _cells(raw, number)
        if _is_separator(stripped, len(cells), dash_blanks):
            continue
        if (not stripped and number not in breaks and len(block) in (3, 6) and all(len(row) == 9 for _, row in block)
                and _bands_continue(lines, number, len(block), dash_blanks, breaks)):
            continue  # a blank line between bands
        skip = not stripped or (len(cells) != 81 and _is_title(stripped))
        ends = skip or len(cells) > GRID_ROW
        if glued and ends and block:  # 10 rows, or 17: no row can be trusted to belong to the grid it lands in
            rows = 9 * len(glued) + len(block)
            yield _Invalid(glued[0].line if isinstance(glued[0], _Invalid) else glued[0].start,
                           f"expected 9 grid rows (or 18, 27, ... for grids one after another), got {rows}")
            glued, block = [], []
        elif glued and ends:
            yield from glued
            glued = []
        if block and ends:
            if (bad := _bad_byte(cell for _, row in block for cell in row)) is not None:  # not that it was short
                yield bad
            elif len(block) == 1:  # a lone short line: a one-line puzzle that is too short
                yield _Invalid(block[0][0], f"expected 81 cells (or a 9-row grid), got {len(block[0][1])}")
            else:
                yield _Invalid(block[0][0], f"expected 9 grid rows, got {len(block)}")
            block = []
        if skip:
            continue
        if len(cells) > GRID_ROW:  # too long for a grid row: a whole puzzle on one line
            yield _Record(number, cells)
            continue
        if not block and _is_column_header(cells):  # above whole grids (glued ones too), not a grid's first row
            below = _grid_rows(lines, number, 0, dash_blanks, math.inf, breaks)
            if below and below % 9 == 0:
                continue
        block.append((number, cells))
        if len(block) == 9:
            short = [(n, len(row)) for n, row in block if len(row) != 9]
            stray = next(((n, col, ch) for n, row in block for _, col, ch in row  # '5,3,0,...': name the comma
                          if ch not in DIGITS and ch not in BLANKS), None)
            if short and stray is not None:
                line, col, ch = stray
                glued.append(_Invalid(line, BAD_BYTE.format(column=col) if ch == UNDECODABLE else
                                      f"bad character {ch!r} at column {col} (grid rows hold 9 cells: digits and "
                                      "blanks)"))
            elif short:
                glued.append(_Invalid(short[0][0], f"expected 9 cells in grid row, got {short[0][1]}"))
            else:
                glued.append(_Record(block[0][0], [cell for _, row in block for cell in row]))
            block = []


def parse_puzzles(text: str, path: str = "<input>") -> list[ParsedPuzzle | PuzzleFormatError]:
    """Read puzzles (one per line, 9-line grids, or CSV with a puzzle/quizzes column), auto-detected.

    Bad entries come back inline, in file order, as PuzzleFormatError so the good ones can still be used."""
    lines = split_lines(_ascii_digits(text.removeprefix("\ufeff")))
    # Each character of a line costs a hundred bytes or more to parse, so lines longer than any puzzle line are
    # errors of their own, read as lines that end a grid. In text '#' starts a comment anywhere, and a long
    # comment is dropped first; in a CSV only the puzzle and solution fields take comments.
    long = [k for k, line in enumerate(lines, 1) if len(line) > MAX_LINE]
    text_lines = lines.copy()
    for k in long:
        text_lines[k - 1] = _uncommented(lines[k - 1])
    try:
        header, columns = _find_csv_header([line if len(line) <= MAX_LINE else "" for line in text_lines])
    except _Invalid as bad:
        return [PuzzleFormatError(path, bad.line, bad.message)]
    read = lines.copy() if columns else text_lines
    breaks = frozenset(k for k in long if len(read[k - 1]) > MAX_LINE)
    too_long = [_Invalid(k, f"{len(read[k - 1]):,} characters: longer than any puzzle line ({MAX_LINE:,} at most)")
                for k in sorted(breaks)]
    for k in breaks:
        read[k - 1] = ""
    records = heapq.merge(_csv_records(read, header, columns) if columns else _text_records(read, breaks),
                          too_long, key=lambda r: r.line if isinstance(r, _Invalid) else r.start)
    results: list[ParsedPuzzle | PuzzleFormatError] = []
    for record in records:
        try:
            if isinstance(record, _Invalid):
                raise record
            puzzle = _check(record)
            results.append(ParsedPuzzle(puzzle, record.solution, record.start, len(results), record.warning))
        except _Invalid as bad:
            results.append(PuzzleFormatError(path, bad.line, bad.message))
    return results


def _ascii_digits(text: str) -> str:
    """Other scripts' decimal digits ('３' full width, '٣' Arabic-Indic) as ASCII ones, a character for a character
    (so columns stay)."""
    return text if text.isascii() else re.sub(r"(?![0-9])\d", lambda m: str(unicodedata.decimal(m[0])), text)


def _find_csv_header(lines: list[str]):
    """(header line index, columns) of a CSV, or (None, None) for text; raises _Invalid for a header without a
    puzzle column. The header is the first line that is neither blank, a comment nor a title; a one-word header
    such as 'Puzzle' above a grid row is a title."""
    content = [k for k, raw in enumerate(lines) if _uncommented(raw).strip() or ("#" in raw and _csv_columns(raw))]
    for at, k in enumerate(content):
        line = lines[k] if _csv_columns(lines[k]) else _uncommented(lines[k])
        following = _uncommented(lines[content[at + 1]]) if at + 1 < len(content) else ""
        columns = _csv_columns(line)
        if columns is not None and not any(d in line for d in DELIMITERS) and len(_cells(following, 0)) <= GRID_ROW:
            columns = None  # 'Puzzle' above a grid: a title
        if columns is None and following and _looks_like_csv(line, following):
            raise _Invalid(k + 1, f"a CSV header needs a puzzle (or puzzles, quizzes) column, found {line.strip()!r}")
        if columns is not None and len(named := _puzzle_columns(line, columns[2])) > 1:
            raise _Invalid(k + 1, f"a CSV header with {len(named)} puzzle columns ({', '.join(named)}): keep one, "
                                  "or rename the others")
        if columns is not None or not _is_title(line.strip()):
            return k, columns
    return None, None


def _puzzle_columns(header: str, delimiter: str) -> list[str]:
    """The header's column names that name a puzzle column, as written."""
    return [name.strip() for name in _fields(header, delimiter) or [] if _column_name(name) in PUZZLE_COLUMNS]


def _column_name(name: str) -> str:
    """A header field as a column name: lower case, without a comment after it ('#' alone is a name)."""
    name = name.strip().lower()
    return name if name == "#" else _uncommented(name).strip()


def _looks_like_csv(header: str, second: str) -> bool:
    """A header with names above a row whose delimiter it shares and that has a field of puzzle length (a title
    such as 'Easy, set 1' above puzzles, or above another title, is not one)."""
    return any(c.isalpha() for c in header) and any(
        d in header and d in second
        and any(sum(ch in DIGITS or ch in BLANKS for ch in field) >= 17 for field in second.split(d))
        for d in DELIMITERS)


def format_grid(s: str) -> str:
    """A 9-line grid with band separators and '.' for blanks; parse_puzzles reads it back."""
    cells = [ch if ch in DIGITS else "." for ch in s]
    rows = [" | ".join(" ".join(cells[r * 9 + c: r * 9 + c + 3]) for c in (0, 3, 6)) for r in range(9)]
    for r in (6, 3):
        rows.insert(r, "------+-------+------")
    return "\n".join(rows)
