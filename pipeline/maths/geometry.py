"""The geometry behind saturation (Godey, de la Clergerie & Sagot 2024, "Why do small language
models underperform?"): the output layer's spectrum, the common direction of its rows, and the
anisotropy of the final hidden states; and the bottleneck a language imposes by construction.

* ``head_spectrum``: the singular values σ₁ ≥ … ≥ σ_r of the output layer U (V × d), from the
  eigenvalues of the d × d Gram matrix UᵀU in float64 (r = min(V, d)).
* ``kl_to_uniform``: the spectrum normalised to a distribution, p_i = σ_i / Σσ_j, and its
  Kullback-Leibler divergence from the uniform distribution over the r values,
  KL(p ‖ u) = Σ p_i log(r p_i) = log r − H(p). Godey et al. call the quantity they plot an
  entropy of the singular values; it is this divergence: 0 for a flat spectrum, log r for a
  single spike. (Their exact normalisation, σ_i or σ_i², is not confirmed here: the paper's
  text was not available.)
* ``common_direction_share``: ‖mean_j U_j‖ / mean_j ‖U_j‖ over U's rows: 1 when every row
  points the same way, about 1/√V for random rows. Total gradient dissent needs it near 1:
  ∇h⁺ = (p_t − 1)U_t and ∇h⁻ = Σ_{j≠t} p_j U_j, so cos(∇h⁺, ∇h⁻) = −cos(U_t, Σ_{j≠t} p_j U_j).
* ``Anisotropy``: the mean pairwise cosine of hidden states, mean_{i≠j} cos(h_i, h_j) =
  (‖Σ_i ĥ_i‖² − N) / (N(N − 1)) with ĥ = h / ‖h‖, accumulated batch by batch without forming
  the N × N matrix.
* ``w_error``: Godey et al.'s W-error(d) = ‖σ_{d+1:}‖₂ / ‖W‖_F of a log-probability matrix W
  (contexts × V), the relative error of its best rank-d approximation (Eckart-Young). A softmax
  ignores a constant added to a row, so the error that binds a model is that of W with each row
  centred; the uncentred W is dominated by one common component (every row's large negative
  log-probabilities), and its W-error is small for any d.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the data stage reads only numpy here
    import torch


def head_spectrum(U: torch.Tensor) -> np.ndarray:
    """The singular values of ``U`` (V × d), largest first, min(V, d) of them, in float64."""
    import torch

    A = U.detach().double()
    gram = A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T
    return _from_gram(torch.linalg.eigvalsh(gram).cpu().numpy())


def _from_gram(eigenvalues: np.ndarray) -> np.ndarray:
    """Singular values, largest first, from a Gram matrix's ascending eigenvalues."""
    return np.sqrt(np.clip(eigenvalues[::-1], 0.0, None))


def kl_to_uniform(s: np.ndarray) -> float:
    """KL(p ‖ uniform) of p_i = s_i / Σ s_j (natural log; 0 · log 0 = 0)."""
    s = np.asarray(s, dtype=np.float64)
    p = s / s.sum()
    nz = p > 0
    return float(np.sum(p[nz] * np.log(s.size * p[nz])))


def sigma_ratio(s: np.ndarray) -> float:
    """σ₁ / σ₂ of a spectrum sorted largest first (inf if σ₂ = 0; NaN with one value)."""
    if s.size < 2:
        return float("nan")
    return float(s[0] / s[1]) if s[1] > 0 else float("inf")


def common_direction_share(U: torch.Tensor) -> float:
    """‖mean_j U_j‖ / mean_j ‖U_j‖ over the rows of ``U`` (float64)."""
    A = U.detach().double()
    return float(A.mean(0).norm() / A.norm(dim=1).mean())


class Anisotropy:
    """The mean pairwise cosine of the rows of every batch added with ``add``."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.n = 0

    def add(self, h: torch.Tensor) -> None:
        """Add hidden states ``h`` (N, d); rows of norm 0 have no direction and are skipped."""
        h = h.detach().double()
        norms = h.norm(dim=1)
        unit = h[norms > 0] / norms[norms > 0, None]
        s = unit.sum(0)
        self.total = s if self.total is None else self.total + s
        self.n += unit.shape[0]

    def value(self) -> float:
        """mean_{i≠j} cos(h_i, h_j); NaN with fewer than two rows."""
        if self.n < 2:
            return float("nan")
        return float((self.total.square().sum() - self.n) / (self.n * (self.n - 1)))


def log_prob_spectra(W: np.ndarray) -> dict[str, np.ndarray]:
    """The singular values of a log-probability matrix W (contexts × V, at least V rows),
    largest first, as it is (``uncentred``) and with each row centred (``centred``), from the
    eigenvalues of the V × V Gram matrices in float64: WᵀW once, and the centred one from it,
    WcᵀWc = WᵀW − b1ᵀ − 1bᵀ + (mᵀm)11ᵀ with m the row means and b = Wᵀm."""
    W = np.asarray(W, dtype=np.float64)
    gram = W.T @ W
    m = W.mean(1)
    b = W.T @ m
    centred = gram - b[:, None] - b[None, :] + m @ m
    return {
        "uncentred": _from_gram(np.linalg.eigvalsh(gram)),
        "centred": _from_gram(np.linalg.eigvalsh(centred)),
    }


def w_error(s: np.ndarray, d: int) -> float:
    """‖σ_{d+1:}‖₂ / ‖W‖_F from W's singular values ``s`` (largest first): the relative error of
    the best rank-``d`` approximation of W."""
    s = np.asarray(s, dtype=np.float64)
    return float(np.sqrt(np.sum(s[d:] ** 2) / np.sum(s**2)))
