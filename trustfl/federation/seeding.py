"""Moved to :mod:`trustfl.seeding` (a leaf module any layer may use); kept as an alias."""

from trustfl.seeding import derive_seed, generator

__all__ = ["derive_seed", "generator"]
