"""The LM head as a gradient bottleneck (Godey & Artzi 2026): ranks and suppressed fractions.

The logit-gradient matrix G (N × V) has rows ``g_i = p_i − e_{t_i}``; each row sums to 0, so
rank(G) ≤ min(N, V − 1). What the output layer passes back to the body is ``∇h_i = Uᵀg_i``,
which sees only the projection of g_i onto U's column space: with Q an orthonormal basis of it,
``GQ = ∇H Rᵀ`` (``R = Σ⁻¹Wᵀ`` from U = QΣWᵀ, ``pipeline.maths.decomposition``), of rank ≤ d. A
logit update the model can make, ΔU h + U Δh over tokens, has rank ≤ 2d: a third bound, of
neither matrix.

Ranks are counted as ``torch.linalg.matrix_rank`` counts them with ``rtol = max(rows, cols) ·
ε_float32`` (the inputs are float32 quantities; the sums are float64): singular values above
``σ_max · max(rows, cols) · ε_float32``. G is never formed: its Gram matrix ``G Gᵀ`` (N × N,
float64) is accumulated one vocabulary chunk at a time, and σ = sqrt(λ) of the leading n × n
block; GQ (N × r) is small and decomposed directly.

``suppressed_forms`` reduces the per-token kept fraction κ_i = ‖Qᵀg_i‖² / ‖g_i‖² to the forms
"the share of the gradient suppressed" may mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the reductions read only numpy here
    import torch


def logit_gradient_gram(
    h: torch.Tensor,
    U: torch.Tensor,
    b: torch.Tensor | None,
    targets: torch.Tensor,
    lse: torch.Tensor,
    vocab_chunk: int,
) -> torch.Tensor:
    """``G Gᵀ`` in float64 for N positions, G = softmax(hUᵀ + b) − onehot(targets).

    Parameters
    ----------
    h : (N, d); U : (V, d); b : (V,) or None; targets : (N,); lse : (N,) log-sum-exp of logits.
    """
    import torch

    from pipeline.maths.decomposition import vocab_blocks

    N = h.shape[0]
    gram = torch.zeros(N, N, dtype=torch.float64, device=h.device)
    rows = torch.arange(N, device=h.device)
    for lo, hi, logits in vocab_blocks(h, U, b, vocab_chunk):
        G = logits.sub_(lse[:, None]).exp_().double()  # (N, chunk)
        here = (targets >= lo) & (targets < hi)
        G[rows[here], targets[here] - lo] -= 1.0
        gram += G @ G.T
    return gram


#: Relative tolerance per row or column of a rank: float32's epsilon (see the module docstring).
RANK_EPS = float(np.finfo(np.float32).eps)


def rank_curve(gram: torch.Tensor, sizes: list[int], vocab_size: int) -> list[int]:
    """Rank of the first n rows of G for each n in ``sizes``, from its Gram matrix."""
    import torch

    eps = RANK_EPS
    ranks = []
    for n in sizes:
        lam = torch.linalg.eigvalsh(gram[:n, :n]).clamp_min(0.0)
        sigma = lam.sqrt()
        tol = sigma.max() * max(n, vocab_size) * eps
        ranks.append(int((sigma > tol).sum()))
    return ranks


def rank_sizes(limit: int) -> list[int]:
    """Powers of two up to ``limit`` (and ``limit`` itself)."""
    sizes = [2**i for i in range(limit.bit_length()) if 2**i <= limit]
    return sizes if sizes[-1] == limit else [*sizes, limit]


def kept_rank_curve(grad_h: torch.Tensor, R: torch.Tensor, sizes: list[int]) -> list[int]:
    """Rank of GQ, the first n logit gradients projected onto U's column space, for each n in
    ``sizes``: ``GQ = ∇H Rᵀ`` from the gradients at h ``grad_h`` (N, d) and the bottleneck
    projector ``R`` (r, d)."""
    import torch

    GQ = grad_h.double() @ R.T.double()  # (N, r)
    ranks = []
    for n in sizes:
        sigma = torch.linalg.svdvals(GQ[:n])
        tol = sigma.max() * max(n, GQ.shape[1]) * RANK_EPS
        ranks.append(int((sigma > tol).sum()))
    return ranks


def suppressed_forms(kappa: np.ndarray, g_sq: np.ndarray) -> dict[str, float]:
    """The share of the logit gradient lost in the output layer, from the tokens' kept fractions
    κ_i and squared logit-gradient norms ‖g_i‖² (tokens where κ is undefined are left out):

    * ``suppressed_squared``: mean of 1 − κ_i (squared norms, per token);
    * ``suppressed_norm``: mean of √(1 − κ_i) = ‖g_i − QQᵀg_i‖ / ‖g_i‖ (norms, per token);
    * ``kept_cosine``: mean of √κ_i = cos(g_i, QQᵀg_i);
    * ``suppressed_batch``: 1 − Σ κ_i ‖g_i‖² / Σ ‖g_i‖² = 1 − Σ‖Qᵀg_i‖² / Σ‖g_i‖² (one batch).
    """
    ok = np.isfinite(kappa) & np.isfinite(g_sq)
    k = np.clip(kappa[ok].astype(np.float64), 0.0, 1.0)
    w = g_sq[ok].astype(np.float64)
    if not k.size:
        return dict.fromkeys(
            ("suppressed_squared", "suppressed_norm", "kept_cosine", "suppressed_batch"), np.nan
        )
    return {
        "suppressed_squared": float(np.mean(1.0 - k)),
        "suppressed_norm": float(np.mean(np.sqrt(1.0 - k))),
        "kept_cosine": float(np.mean(np.sqrt(k))),
        "suppressed_batch": float(1.0 - (k * w).sum() / w.sum()) if w.sum() > 0 else np.nan,
    }
