"""`python -m diffsolve ...` is the `solve` command."""

from diffsolve.solvers.cli import main

main()
