"""`python -m diffsolve ...` is the `solve` command."""

from diffsolve.entry import main

main()
