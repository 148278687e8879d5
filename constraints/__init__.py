"""Declarative constraints compiled into the sampler's per-pass hooks (masks, re-noising, verification)."""

from .model import CompiledConstraints, ConstraintModel, Predicate

__all__ = ["CompiledConstraints", "ConstraintModel", "Predicate"]
