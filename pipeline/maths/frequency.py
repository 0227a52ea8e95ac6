"""Token-frequency bins (Gradient Dissent §2), a pure function of a counts vector.

``f_j = count_j / Σ count`` and ``bin_j = floor(log2 f_j)``; ids never seen in the training data
have no log2 frequency and form their own bin, ``UNSEEN_BIN``.
"""

from __future__ import annotations

import numpy as np

#: The bin of ids that never occur in the training data (no log2 frequency exists for them).
UNSEEN_BIN = -64


def frequency_bins(count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative frequencies and log2 frequency bins of a counts vector (Gradient Dissent §2).

    Parameters
    ----------
    count : (vocab,) non-negative integer counts.

    Returns
    -------
    frequency : (vocab,) float64, ``count / count.sum()``.
    bin : (vocab,) int64, ``floor(log2(frequency))``; ``UNSEEN_BIN`` where the count is 0.
    """
    count = np.asarray(count)
    if count.ndim != 1 or count.size == 0:
        raise ValueError(f"counts must be a non-empty vector, got shape {count.shape}")
    if (count < 0).any():
        raise ValueError("counts must be non-negative")
    total = count.sum()
    if total == 0:
        raise ValueError("counts are all zero: no token was seen in the training data")
    frequency = count / total
    with np.errstate(divide="ignore"):
        bins = np.floor(np.log2(frequency))
    bins = np.where(count > 0, bins, UNSEEN_BIN).astype(np.int64)
    return frequency, bins


def rank_frequency(count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1, 2, … and normalised frequencies ``count / Σ count`` of the ids that occur,
    most frequent first (Gradient Dissent Fig. 4)."""
    count = np.asarray(count, dtype=np.float64)
    seen = np.sort(count[count > 0])[::-1]
    return np.arange(1, seen.size + 1, dtype=np.float64), seen / seen.sum()


def zipf_fit(
    rank: np.ndarray, frequency: np.ndarray, head: float = 0.01, tail: float = 0.05
) -> tuple[float, float]:
    """Exponent s and constant C of ``f ≈ C · rank^(−s)``, fitted by least squares in log-log
    space to the ranks between the first ``head`` and the last ``tail`` shares of the ids that
    occur: the rarest ids (Gradient Dissent's "non-Zipfian outliers") are left out."""
    n = rank.size
    lo, hi = int(np.floor(head * n)), int(np.ceil((1 - tail) * n))
    if hi - lo < 2:
        lo, hi = 0, n
    slope, intercept = np.polyfit(np.log(rank[lo:hi]), np.log(frequency[lo:hi]), 1)
    return float(-slope), float(np.exp(intercept))
