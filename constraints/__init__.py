"""Declarative constraints compiled into the sampler's per-pass hooks (masks, re-noising, verification)."""

from .model import CompiledConstraints, ConstraintModel, Predicate, tabu_tenure

__all__ = ["CompiledConstraints", "ConstraintModel", "Predicate", "tabu_tenure"]
