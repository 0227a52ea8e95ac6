"""The saturation rule of Gradient Dissent §2, as pure functions over numpy arrays.

A mean loss ``L_s`` at step s is *improving* when it is lower than the best loss of all earlier
steps plus a tolerance, ``L_s < (1 + tol) · min_{s' < s} L_{s'}``, and *saturated* otherwise.
The first step has no earlier step and is improving. Steps with no loss (NaN: a bin without
tokens) are neither and do not count as a best loss. A model's saturation step is the first step
from which the overall loss stays saturated; there is none if the last step is improving.
"""

from __future__ import annotations

import numpy as np


def improving(loss: np.ndarray, axis: int = 0, tolerance: float = 0.01) -> np.ndarray:
    """Boolean mask, same shape as ``loss``: True where ``loss`` improves on all earlier steps
    along ``axis`` (which must be ordered by step) by more than ``tolerance``, relatively."""
    loss = np.moveaxis(np.asarray(loss, dtype=np.float64), axis, 0)
    best = np.fmin.accumulate(np.where(np.isnan(loss), np.inf, loss), axis=0)
    earlier = np.concatenate([np.full_like(best[:1], np.inf), best[:-1]], axis=0)
    mask = loss < (1.0 + tolerance) * earlier  # NaN compares False
    return np.moveaxis(mask, 0, axis)


def saturated(loss: np.ndarray, axis: int = 0, tolerance: float = 0.01) -> np.ndarray:
    """Boolean mask: True where ``loss`` is defined and not improving (see ``improving``)."""
    return ~improving(loss, axis, tolerance) & ~np.isnan(loss)


def saturation_step(loss: np.ndarray, steps: np.ndarray, tolerance: float = 0.01) -> float:
    """The first step from which a 1-D loss curve stays saturated; NaN if it never does.

    Parameters
    ----------
    loss : (step,) losses ordered by step; ``steps`` : (step,) the step numbers.
    """
    sat = saturated(np.asarray(loss, dtype=np.float64), 0, tolerance)
    if sat.size == 0 or not sat[-1]:
        return float("nan")
    not_sat = np.flatnonzero(~sat)
    first = 0 if not_sat.size == 0 else not_sat[-1] + 1
    return float(steps[first])
