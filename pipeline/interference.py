"""Destructive interference (Zero-sum learning, Mircea et al. 2025), as pure functions.

* Per-token gradient interference of a weight W (ZSL App. B.4): with per-position inputs x_i and
  output gradients δ_i, ``S = Σ_i δ_i x_iᵀ`` and ``A = Σ_i |δ_i| |x_i|ᵀ``;
  ``D_W = mean over entries with A > 0 of (1 − |S| / A)``. D_W = 0 when every position pushes
  each entry the same way, 1 when they cancel exactly.
* Loss-change interference (ZSL Eq. 2-4) over per-token loss changes Δℓ_i between two
  checkpoints: ``D = 1 − |Σ Δℓ_i| / Σ |Δℓ_i|``, ``M = Σ |Δℓ_i| / N``, so that
  ``|ΔL| = M (1 − D)`` exactly.
"""

from __future__ import annotations

import numpy as np
import torch


def weight_interference(S: torch.Tensor, A: torch.Tensor) -> float:
    """D_W from the summed gradient ``S`` and the summed absolute outer products ``A`` (same
    shape); NaN when A vanishes everywhere (a weight no position touched)."""
    used = A > 0
    if not used.any():
        return float("nan")
    return float((1.0 - S[used].abs() / A[used]).mean())


def loss_change_interference(delta: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """D and M of per-token loss changes ``delta`` along ``axis`` (the tokens).

    Returns
    -------
    D : ``1 − |Σ Δℓ| / Σ |Δℓ|`` (NaN where every change is 0).
    M : ``Σ |Δℓ| / N``, the mean magnitude.
    """
    delta = np.asarray(delta, dtype=np.float64)
    total = np.abs(delta).sum(axis=axis)
    net = np.abs(delta.sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        D = np.where(total > 0, 1.0 - net / total, np.nan)
    return D, total / delta.shape[axis]
