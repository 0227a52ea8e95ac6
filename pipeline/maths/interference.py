"""Destructive interference (Zero-sum learning, Mircea et al. 2025), as pure functions.

* Loss-change interference (ZSL Eq. 2-4) over per-token loss changes Δℓ_i between two
  checkpoints: ``D = 1 − |Σ Δℓ_i| / Σ |Δℓ_i|`` and ``M = Σ |Δℓ_i| / N``, so that
  ``|ΔL| = M (1 − D)`` exactly. ``from_sums`` is the one implementation, from the sums
  (Σ Δℓ, Σ |Δℓ|, N) that the reductions accumulate per bin; ``loss_change_interference`` applies
  it to an array of changes.
* Per-token gradient interference of a weight W (ZSL App. B.4): with per-position inputs x_i and
  output gradients δ_i, ``S = Σ_i δ_i x_iᵀ`` and ``A = Σ_i |δ_i| |x_i|ᵀ``;
  ``D_W = mean over entries with A > 0 of (1 − |S| / A)``. D_W = 0 when every position pushes
  each entry the same way, 1 when they cancel exactly.

numpy arrays and torch tensors alike; nothing here imports torch.
"""

from __future__ import annotations

import numpy as np


def from_sums(net, total, n) -> tuple[np.ndarray, np.ndarray]:
    """D and M from ``net = Σ Δℓ``, ``total = Σ |Δℓ|`` and the token count ``n``.

    Returns
    -------
    D : ``1 − |net| / total`` (NaN where every change is 0, or there are no tokens).
    M : ``total / n``, the mean magnitude (NaN without tokens).
    """
    net, total, n = (np.asarray(x, dtype=np.float64) for x in (net, total, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        D = np.where(total > 0, 1.0 - np.abs(net) / np.where(total > 0, total, 1.0), np.nan)
        M = np.where(n > 0, total / np.where(n > 0, n, 1.0), np.nan)
    return D, M


def loss_change_interference(delta: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """D and M (``from_sums``) of per-token loss changes ``delta`` along ``axis`` (the tokens)."""
    delta = np.asarray(delta, dtype=np.float64)
    return from_sums(delta.sum(axis=axis), np.abs(delta).sum(axis=axis), delta.shape[axis])


def check_net_change(D, M, net_change, rtol: float = 1e-4, atol: float = 1e-7) -> None:
    """Raise ``AssertionError`` unless ``|ΔL| = M (1 − D)`` holds wherever D is defined."""
    check = np.asarray(M) * (1 - np.asarray(D))
    ok = np.isclose(check, np.abs(net_change), rtol=rtol, atol=atol) | np.isnan(check)
    if not ok.all():
        raise AssertionError("loss-change interference: |ΔL| = M (1 − D) does not hold")


def weight_interference(S, A) -> float:
    """D_W from the summed gradient ``S`` and the summed absolute outer products ``A`` (same
    shape); NaN when A vanishes everywhere (a weight no position touched)."""
    used = A > 0
    if not used.any():
        return float("nan")
    return float((1.0 - abs(S[used]) / A[used]).mean())
