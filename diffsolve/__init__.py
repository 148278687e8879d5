"""diffsolve: constraint-guided block text diffusion with verified answers."""

__version__ = "0.1.0"
