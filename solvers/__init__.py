"""Public solvers and the `solve` command line."""

from .sudoku import SudokuResult, SudokuSolver

__all__ = ["SudokuResult", "SudokuSolver"]
