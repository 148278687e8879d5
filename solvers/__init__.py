"""diffsolve.solvers."""
