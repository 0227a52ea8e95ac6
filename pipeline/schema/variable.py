"""A stored variable's declaration, and the papers the variables serve."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    """One stored variable: its name, dimensions, units, one-line meaning, and what it serves."""

    name: str
    dims: tuple[str, ...]
    units: str
    meaning: str
    serves: str = ""
    optional: bool = False  # absent when its measurement is switched off (or needs two steps)


GD = "Gradient Dissent"
ZSL = "Zero-sum learning"
GA = "Godey & Artzi"
GS = "Godey et al. 2024"

#: The per-token measurements of one checkpoint (``pipeline.maths.decomposition``), in order.
