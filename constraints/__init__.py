"""diffsolve.constraints."""
