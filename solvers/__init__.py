"""Public solvers and the `solve` command line."""

from .molecules import DesignResult, Molecule, MoleculeDesigner
from .sudoku import SudokuResult, SudokuSolver

__all__ = ["DesignResult", "Molecule", "MoleculeDesigner", "SudokuResult", "SudokuSolver"]
