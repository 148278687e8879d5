"""Public solvers and the `solve` command line.

Every error a caller can fix is a ValueError (`GraphError`, `CountdownError`, `RequestError`) or a TypeError
that names the argument; an unusable checkpoint raises `CheckpointError`."""

from ..core import CheckpointError
from ..tasks.countdown import CountdownError
from ..tasks.graphs import GraphError
from ..tasks.molecules import MoleculeRequest, RequestError
from .graphs import ColoringResult, CountdownResult, CountdownSolver, GraphSolver, RouteResult
from .molecules import DesignInterrupted, DesignResult, Molecule, MoleculeDesigner
from .sudoku import SudokuResult, SudokuSolver

__all__ = [
    "CheckpointError", "ColoringResult", "CountdownError", "CountdownResult", "CountdownSolver", "DesignInterrupted",
    "DesignResult", "GraphError", "GraphSolver", "Molecule", "MoleculeDesigner", "MoleculeRequest", "RequestError",
    "RouteResult", "SudokuResult", "SudokuSolver",
]
