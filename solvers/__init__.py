"""Public solvers and the `solve` command line.

Every error a caller can fix names the argument: in a graph, Countdown or molecule call it is the task's
ValueError (`GraphError`, `CountdownError`, `RequestError`), in a constructor a TypeError or ValueError;
`SudokuSolver` reports an unreadable puzzle in its result and a puzzle of the wrong type as a TypeError; an
unusable checkpoint raises `CheckpointError`."""

from ..core import CheckpointError
from ..tasks.countdown import CountdownError
from ..tasks.graphs import GraphError
from ..tasks.molecule_request import MoleculeRequest, RequestError, UnlikelyRequestWarning
from .base import BatchInterrupted
from .countdown import CountdownResult, CountdownSolver
from .graphs import ColoringResult, GraphSolver, RouteResult
from .molecules import DesignInterrupted, DesignResult, Molecule, MoleculeDesigner
from .sudoku import SudokuResult, SudokuSolver

__all__ = [
    "BatchInterrupted", "CheckpointError", "ColoringResult", "CountdownError", "CountdownResult", "CountdownSolver",
    "DesignInterrupted", "DesignResult", "GraphError", "GraphSolver", "Molecule", "MoleculeDesigner",
    "MoleculeRequest", "RequestError", "RouteResult", "SudokuResult", "SudokuSolver", "UnlikelyRequestWarning",
]
