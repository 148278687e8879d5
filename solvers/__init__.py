"""Public solvers and the `solve` command line."""

from .graphs import ColoringResult, CountdownResult, CountdownSolver, GraphSolver, RouteResult
from .molecules import DesignResult, Molecule, MoleculeDesigner
from .sudoku import SudokuResult, SudokuSolver

__all__ = [
    "ColoringResult", "CountdownResult", "CountdownSolver", "DesignResult", "GraphSolver", "Molecule",
    "MoleculeDesigner", "RouteResult", "SudokuResult", "SudokuSolver",
]
