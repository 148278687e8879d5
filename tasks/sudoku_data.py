"""Sudoku data: random grids, puzzle generation, augmentation and an exact checker (files: `sudoku_files`).

Grids are 81-character row-major strings of '1'-'9'; puzzles use '0' for blanks. The bitmask solver here
only checks uniqueness while generating data and in tests; it is not part of the product's solving pipeline.
"""

from __future__ import annotations

import multiprocessing
from functools import partial

import numpy as np

from ..core import quiet_worker

ALL = 0x1FF
BITS = [1 << k for k in range(9)]
BIT_DIGIT = {1 << k: str(k + 1) for k in range(9)}
POPCOUNT = [bin(m).count("1") for m in range(512)]
# Unit ids of each cell: row 0-8, column 9-17, box 18-26.
CELL_UNITS = [(i // 9, 9 + i % 9, 18 + (i // 27) * 3 + (i % 9) // 3) for i in range(81)]
UNITS = [[i for i in range(81) if u in CELL_UNITS[i]] for u in range(27)]
PEERS = [sorted({j for u in CELL_UNITS[i] for j in UNITS[u]} - {i}) for i in range(81)]
DIGITS = set("123456789")
BLANKS = set(".0-")


# ---------------------------------------------------------------- solver


def _state(digits: list[int]) -> tuple[list[int], list[int]] | None:
    """Cell bits and per-unit used masks for a digit list (0 = blank); None if two clues clash."""
    g, used = [0] * 81, [0] * 27
    for i, d in enumerate(digits):
        if d:
            bit, (r, c, b) = BITS[d - 1], CELL_UNITS[i]
            if (used[r] | used[c] | used[b]) & bit:
                return None
            g[i] = bit
            used[r] |= bit
            used[c] |= bit
            used[b] |= bit
    return g, used


def _propagate(g: list[int], used: list[int]) -> int | None:
    """Place naked and hidden singles in place. Returns the blank cell with fewest candidates,
    -1 when the grid is full, or None on a contradiction."""
    blanks = [i for i in range(81) if not g[i]]
    cand = [0] * 81
    while True:
        best, best_n, placed = -1, 10, False
        for i in blanks:
            if g[i]:
                continue
            r, c, b = CELL_UNITS[i]
            m = cand[i] = ALL ^ (used[r] | used[c] | used[b])
            if not m:
                return None
            if m & (m - 1) == 0:
                g[i] = m
                used[r] |= m
                used[c] |= m
                used[b] |= m
                placed = True
            elif POPCOUNT[m] < best_n:
                best, best_n = i, POPCOUNT[m]
        blanks = [i for i in blanks if not g[i]]
        if placed:
            continue
        for u, cells in enumerate(UNITS):
            if used[u] == ALL:
                continue
            # cand may be stale after a placement in this pass, but only ever too permissive
            once = twice = 0
            for i in cells:
                if not g[i]:
                    m = cand[i]
                    twice |= once & m
                    once |= m
            if once | used[u] != ALL:
                return None  # some digit has no place left in this unit
            single = once & ~twice
            while single:
                bit = single & -single
                single ^= bit
                for i in cells:
                    r, c, b = CELL_UNITS[i]
                    if not g[i] and not (used[r] | used[c] | used[b]) & bit:
                        g[i] = bit
                        used[r] |= bit
                        used[c] |= bit
                        used[b] |= bit
                        placed = True
                        break
        if not placed:
            return best


def _search(g: list[int], used: list[int], limit: int, out: list[list[int]], order: list[list[int]]) -> int:
    """Count solutions up to `limit`, appending each one found to `out`."""
    i = _propagate(g, used)
    if i is None:
        return 0
    if i < 0:
        out.append(g)
        return 1
    r, c, b = CELL_UNITS[i]
    m = ALL ^ (used[r] | used[c] | used[b])
    found = 0
    for bit in order[i]:
        if m & bit:
            g2, u2 = g.copy(), used.copy()
            g2[i] = bit
            u2[r] |= bit
            u2[c] |= bit
            u2[b] |= bit
            found += _search(g2, u2, limit - found, out, order)
            if found >= limit:
                break
    return found


_FIXED_ORDER = [BITS] * 81


def _count(digits: list[int], limit: int, out: list[list[int]] | None = None,
           order: list[list[int]] = _FIXED_ORDER) -> int:
    state = _state(digits)
    return 0 if state is None else _search(*state, limit, [] if out is None else out, order)


def _digits(puzzle: str) -> list[int]:
    if len(puzzle) != 81:
        raise ValueError(f"expected 81 cells, got {len(puzzle)}")
    return [int(ch) if ch in DIGITS else 0 for ch in puzzle]


def count_solutions(puzzle: str, limit: int = 2) -> int:
    """Number of solutions of `puzzle`, counting no further than `limit`."""
    return _count(_digits(puzzle), limit)


def solve(puzzle: str) -> str | None:
    """One solution of `puzzle`, or None if it has none."""
    out: list[list[int]] = []
    _count(_digits(puzzle), 1, out)
    return "".join(BIT_DIGIT[bit] for bit in out[0]) if out else None


def is_valid_solution(puzzle: str, solution: str) -> bool:
    """True if `solution` is a complete valid grid that keeps every clue of `puzzle`."""
    if len(puzzle) != 81 or len(solution) != 81 or not set(solution) <= DIGITS:
        return False
    if any(len({solution[i] for i in cells}) != 9 for cells in UNITS):
        return False
    return all(p == s for p, s in zip(puzzle, solution) if p in DIGITS)


def conflicts(puzzle: str) -> list[tuple[int, int, int]]:
    """Pairs of clue cells (i < j) that share a unit and a digit, as (i, j, digit)."""
    return [(i, j, int(puzzle[i])) for i in range(81) if puzzle[i] in DIGITS
            for j in PEERS[i] if j > i and puzzle[j] == puzzle[i]]


# ---------------------------------------------------------------- generation


def random_grid(rng: np.random.Generator) -> str:
    """A random complete grid: random diagonal boxes, then a search that tries digits in random order."""
    digits = [0] * 81
    # Boxes 1, 5 and 9 share no row or column, so any fill of them is consistent (and always completable).
    for box, perm in zip((18, 22, 26), rng.permuted(np.tile(np.arange(1, 10), (3, 1)), axis=1).tolist()):
        for i, d in zip(UNITS[box], perm):
            digits[i] = d
    order = rng.permuted(np.tile(np.array(BITS), (81, 1)), axis=1).tolist()
    out: list[list[int]] = []
    _count(digits, 1, out, order)
    return "".join(BIT_DIGIT[bit] for bit in out[0])


def _removable(digits: list[int], cell: int, digit: int) -> bool:
    """Whether blanking `cell` keeps a unique puzzle unique: no solution may put another digit there."""
    digits[cell] = 0
    taken = {digits[j] for j in PEERS[cell]}
    for other in range(1, 10):
        if other != digit and other not in taken:
            digits[cell] = other
            if _count(digits, 1):
                digits[cell] = digit
                return False
    digits[cell] = 0
    return True


def make_puzzle(grid: str, givens: int, rng: np.random.Generator, unique: bool) -> str:
    """Blank cells of `grid` in random order down to `givens` clues. With `unique`, a removal is kept
    only if the solution stays unique, so the result may keep more clues (a minimal puzzle)."""
    order = rng.permutation(81).tolist()
    if not unique:
        keep = set(order[:givens])
        return "".join(ch if i in keep else "0" for i, ch in enumerate(grid))
    digits, clues = _digits(grid), 81
    for cell in order:
        if clues <= givens:
            break
        if _removable(digits, cell, digits[cell]):
            clues -= 1
    return "".join(map(str, digits))


def _line_permutation(rng: np.random.Generator) -> np.ndarray:
    """Rows (or columns) reordered by shuffling the three bands and the lines within each band."""
    return (rng.permutation(3)[:, None] * 3 + rng.permuted(np.tile(np.arange(3), (3, 1)), axis=1)).ravel()


def augment(puzzle: str, solution: str, rng: np.random.Generator) -> tuple[str, str]:
    """Apply one random Sudoku symmetry (relabel, row/column shuffles, transpose) to both strings."""
    rows, cols = _line_permutation(rng), _line_permutation(rng)
    relabel = np.concatenate(([0], rng.permutation(9) + 1)).astype(np.uint8)
    transpose = bool(rng.integers(2))

    def apply(s: str) -> str:
        a = (np.frombuffer(s.encode(), np.uint8) - 48).reshape(9, 9)[rows][:, cols]
        return (relabel[a.T if transpose else a] + 48).tobytes().decode()

    return apply(puzzle), apply(solution)


def generate_examples(n: int, seed: int, min_givens: int = 17, max_givens: int = 40,
                      unique_fraction: float = 0.3) -> list[tuple[str, str]]:
    """n augmented (puzzle, solution) pairs; round(n * unique_fraction) of them are unique-solution."""
    rng = np.random.default_rng(seed)
    unique = np.arange(n) < round(n * unique_fraction)
    rng.shuffle(unique)
    examples = []
    for want_unique in unique.tolist():
        grid = random_grid(rng)
        puzzle = make_puzzle(grid, int(rng.integers(min_givens, max_givens + 1)), rng, want_unique)
        examples.append(augment(puzzle, grid, rng))
    return examples


def generate_examples_parallel(n: int, seed: int, workers: int, **kwargs) -> list[tuple[str, str]]:
    """generate_examples split over worker processes; worker k uses a seed derived from (seed, k)."""
    sizes = [n // workers + (k < n % workers) for k in range(workers)]
    jobs = [(size, int(np.random.SeedSequence([seed, k]).generate_state(1)[0])) for k, size in enumerate(sizes)]
    if workers == 1:
        parts = [generate_examples(*jobs[0], **kwargs)]
    else:
        with multiprocessing.Pool(workers, initializer=quiet_worker) as pool:
            parts = pool.starmap(partial(generate_examples, **kwargs), jobs)
    return [example for part in parts for example in part]
