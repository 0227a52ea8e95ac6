"""The saturation rule of Gradient Dissent §2, as pure functions over numpy arrays.

A mean loss ``L_s`` at step s is *improving* when it is lower than the best loss of all earlier
steps plus a tolerance, ``L_s < (1 + tol) · min_{s' < s} L_{s'}``, and *saturated* otherwise.
The first step has no earlier step and is improving. Steps with no loss (NaN: a bin without
tokens) are neither and do not count as a best loss. A model's saturation step is the first step
from which the overall loss stays saturated; there is none if the last step is improving. The
same rule per bin gives each bin's saturation step: Gradient Dissent's small models saturate on the
long tail of rare tokens long before (or without) their overall loss doing so.
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


def saturation_step(
    loss: np.ndarray, steps: np.ndarray, tolerance: float = 0.01, axis: int = 0
) -> float | np.ndarray:
    """The first step from which a loss curve stays saturated; NaN if it never does.

    Parameters
    ----------
    loss : losses ordered by step along ``axis`` (a 1-D curve, or e.g. (step, bin) for one curve
        per bin); ``steps`` : (step,) the step numbers.

    Returns
    -------
    A float for a 1-D curve, else an array of the shape of ``loss`` without ``axis``.
    """
    loss = np.asarray(loss, dtype=np.float64)
    sat = np.moveaxis(saturated(loss, axis, tolerance), axis, 0)
    if sat.shape[0] == 0:
        out = np.full(sat.shape[1:], np.nan)
    else:
        index = np.arange(sat.shape[0]).reshape((-1,) + (1,) * (sat.ndim - 1))
        first = np.where(sat, -1, index).max(axis=0) + 1  # after the last unsaturated step
        last_saturated = sat[-1]
        out = np.where(
            last_saturated,
            np.asarray(steps, np.float64)[np.minimum(first, sat.shape[0] - 1)],
            np.nan,
        )
    return float(out) if out.ndim == 0 else out
