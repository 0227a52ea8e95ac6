"""Statistics per token-frequency bin: numpy kernels over a token axis, no labels, no I/O.

``Bins`` arranges the evaluation tokens' bins once; ``bin_statistics`` gives each bin's
NaN-skipping mean and quantiles, ``bin_change`` each bin's loss-change sums (Σ Δℓ, Σ |Δℓ|, N)
from which ``pipeline.maths.interference.from_sums`` gives D and M. Each returns one row per bin
plus a last row over all tokens. ``pipeline.reduce`` applies them to one step's tokens at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bins:
    """The evaluation tokens' frequency bins, arranged for grouped statistics."""

    present: np.ndarray  # (n_bins,) the bin values that occur
    index: np.ndarray  # (token,) each token's position in ``present``
    order: np.ndarray  # (token,) the tokens sorted by bin
    bounds: np.ndarray  # (n_bins + 1,) each bin's run in ``order``

    @classmethod
    def of(cls, bins: np.ndarray) -> Bins:
        present, index = np.unique(bins, return_inverse=True)
        order = np.argsort(index, kind="stable")
        bounds = np.searchsorted(index[order], np.arange(present.size + 1))
        return cls(present, index, order, bounds)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.bounds)


def bin_statistics(values: np.ndarray, bins: Bins, q: list[float]) -> np.ndarray:
    """NaN-skipping mean, then quantiles ``q``, of each bin's values (pure numpy).

    values : (..., token). Returns (..., n_bins + 1, 1 + len(q)); the last row is over all tokens.
    The means are one ``bincount`` pass; each quantile is a linear-time selection.
    """
    nb = bins.present.size
    out = np.full((*values.shape[:-1], nb + 1, 1 + len(q)), np.nan)
    for idx in np.ndindex(values.shape[:-1]):
        x = values[idx].astype(np.float64)
        finite = ~np.isnan(x)
        sums = np.bincount(bins.index, weights=np.where(finite, x, 0.0), minlength=nb)
        n = np.bincount(bins.index, weights=finite, minlength=nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[idx][:nb, 0] = sums / n
            out[idx][nb, 0] = sums.sum() / n.sum()
        if not q:
            continue
        grouped = x[bins.order]
        for i, (lo, hi) in enumerate(zip(bins.bounds[:-1], bins.bounds[1:])):
            seg = grouped[lo:hi]
            seg = seg[~np.isnan(seg)]
            if seg.size:
                out[idx][i, 1:] = np.quantile(seg, q)
        if finite.any():
            out[idx][nb, 1:] = np.quantile(x[finite], q)
    return out


def bin_change(loss: np.ndarray, later: np.ndarray, bins: Bins) -> np.ndarray:
    """Per bin and overall (last row): ``Σ Δℓ``, ``Σ |Δℓ|`` and the token count, for the per-token
    loss changes ``Δℓ = later − loss`` along the last axis. Returns (..., n_bins + 1, 3)."""
    nb = bins.present.size
    delta = later.astype(np.float64) - loss
    out = np.empty((*delta.shape[:-1], nb + 1, 3))
    for idx in np.ndindex(delta.shape[:-1]):
        d = delta[idx]
        out[idx][:nb, 0] = np.bincount(bins.index, weights=d, minlength=nb)
        out[idx][:nb, 1] = np.bincount(bins.index, weights=np.abs(d), minlength=nb)
        out[idx][:nb, 2] = bins.counts
        out[idx][nb] = out[idx][:nb].sum(axis=0)
    return out
