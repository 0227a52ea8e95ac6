"""One optimizer step's effect on per-token losses (Zero-sum learning §3.2, Fig. 3b–10, App. C.4),
as pure numpy functions over a token axis.

* ``correlations``: Pearson and Spearman correlation of the actual change Δℓ_i with the
  first-order prediction Δ̃ℓ_i = ∇θℓ_i · Δθ (Fig. 4).
* ``coherence``: App. C.4's coordinate-sum forms. With u = Δθ, g_i = ∇θℓ_i and
  p_ij = u_j g_ij (i a token, j a parameter coordinate):

  - ``C_g  = Σ_j |Σ_i p_ij| / Σ_i Σ_j |p_ij|`` (coordinate-wise coherence of the gradients,
    weighted by |u_j|),
  - ``C_ug = Σ_i |Σ_j p_ij| / Σ_i Σ_j |p_ij|`` (how coherently each token's coordinates add up),
  - ``C_uG = |Σ_i Σ_j p_ij| / Σ_j |Σ_i p_ij|`` (the same for the summed gradient G = Σ_i g_i),

  and ``1 − D(Δ̃ℓ) = C_g · C_uG / C_ug`` exactly, since Σ_j p_ij = Δ̃ℓ_i. ``C_u = C_uG / C_ug``
  is the second factor (the authors' code plots C_g and this ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.maths.interference import loss_change_interference


def correlations(actual: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlation of two per-token arrays (NaN pairs dropped; NaN when
    fewer than 3 tokens remain or either array is constant)."""
    a, p = np.asarray(actual, np.float64), np.asarray(predicted, np.float64)
    keep = np.isfinite(a) & np.isfinite(p)
    a, p = a[keep], p[keep]
    if a.size < 3 or a.std() == 0 or p.std() == 0:
        return float("nan"), float("nan")
    return float(np.corrcoef(a, p)[0, 1]), float(np.corrcoef(ranks(a), ranks(p))[0, 1])


def ranks(x: np.ndarray) -> np.ndarray:
    """The ranks 1 … n of ``x``, ties given the mean of their ranks (what Spearman's correlation
    correlates; numpy, so that an update job need not import scipy.stats: 1 s of its start)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    first = np.r_[True, sorted_x[1:] != sorted_x[:-1]]  # the start of each run of ties
    run = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], x.size]
    out = np.empty(x.size)
    out[order] = ((starts + ends + 1) / 2)[run]  # mean of ranks start+1 … end
    return out


@dataclass(frozen=True)
class Coherence:
    """App. C.4's coordinate sums of one update over a set of tokens."""

    C_g: float
    C_ug: float
    C_uG: float

    @property
    def C_u(self) -> float:
        return self.C_uG / self.C_ug

    @property
    def one_minus_D(self) -> float:
        """``C_g · C_uG / C_ug``, which equals ``1 − D(Δ̃ℓ)``."""
        return self.C_g * self.C_u


def coherence(abs_p: np.ndarray, predicted: np.ndarray, uG: np.ndarray) -> Coherence:
    """App. C.4's sums from what per-token gradients give.

    abs_p : (token,) Σ_j |u_j g_ij| per token.
    predicted : (token,) Δ̃ℓ_i = Σ_j u_j g_ij.
    uG : (coordinate,) u_j G_j with G = Σ_i g_i (any flattening of the parameters), or the pair
         (Σ_j u_j G_j, Σ_j |u_j G_j|) when the coordinates were summed already.
    """
    total = float(np.sum(abs_p, dtype=np.float64))
    if isinstance(uG, tuple):
        net, coord = (float(x) for x in uG)
    else:
        uG = np.asarray(uG, np.float64)
        net, coord = float(uG.sum()), float(np.abs(uG).sum())
    return Coherence(
        C_g=coord / total,
        C_ug=float(np.abs(np.asarray(predicted, np.float64)).sum()) / total,
        C_uG=abs(net) / coord,
    )


def check_coherence(c: Coherence, predicted: np.ndarray, rtol: float = 1e-3) -> None:
    """Raise ``AssertionError`` unless ``C_g · C_uG / C_ug = 1 − D(Δ̃ℓ)`` (App. C.4) holds for the
    first-order predictions ``predicted`` (from a forward-mode pass: a check that the per-token
    gradients and the Jacobian-vector product agree)."""
    D, _ = loss_change_interference(predicted)
    if not np.isclose(c.one_minus_D, 1 - float(D), rtol=rtol, atol=1e-6):
        raise AssertionError(
            f"App. C.4 identity fails: C_g·C_uG/C_ug = {c.one_minus_D:.6g} but 1 − D(Δ̃ℓ) = "
            f"{1 - float(D):.6g}; the per-token gradients and the forward-mode pass disagree"
        )


def change_summary(loss_change: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """D, M and |ΔL| of the actual changes, D of the predicted ones, and their correlations,
    over one set of tokens (the last axis)."""
    D, M = loss_change_interference(loss_change)
    D_pred, _ = loss_change_interference(predicted)
    pearson, spearman = correlations(loss_change, predicted)
    return {
        "D": float(D),
        "M": float(M),
        "abs_change": float(abs(np.mean(loss_change, dtype=np.float64))),
        "D_pred": float(D_pred),
        "pearson": pearson,
        "spearman": spearman,
    }
