"""The attractive/repulsive decomposition of the cross-entropy gradient at h (Gradient Dissent).

For one position with final hidden state ``h ∈ R^d`` (the output layer's input), output
embedding ``U ∈ R^{V×d}`` (optional bias ``b``), logits ``ℓ = U h + b``, ``p = softmax(ℓ)`` and
target ``t``, the logit gradient ``g = p − e_t`` splits into an attractive part
``g⁺ = (p_t − 1) e_t`` and a repulsive part ``g⁻ = p − p_t e_t``. At h, in closed form::

    ∇h⁺ = (p_t − 1) U_t        ∇h⁻ = Uᵀp − p_t U_t        ∇h = Uᵀp − U_t

``decompose_at_h`` computes, for N positions at once, the loss, ``p_t``, the three norms and five
cosines (Gradient Dissent Fig. 2, 3, 6), and the bottleneck's kept fraction (Godey & Artzi)
``κ = ‖Qᵀg‖² / ‖g‖²`` with Q an orthonormal basis of U's column space: the share of the logit
gradient's squared norm that survives back-propagation through the rank-d output layer.

κ costs no pass over the vocabulary: with ``U = Q Σ Wᵀ`` (thin SVD), ``Qᵀg = Σ⁻¹ Wᵀ Uᵀg`` and
``Uᵀg = ∇h``, so ``‖Qᵀg‖ = ‖R ∇h‖`` with the small (r × d) matrix ``R = Σ⁻¹ Wᵀ`` computed once per
checkpoint (``bottleneck_projector``, from the eigen-decomposition of UᵀU in float64). Its
relative error is float32's times U's condition number; ``‖g‖² = (1 − p_t)² + Σ_{j≠t} p_j²`` is
summed without cancellation.

Memory bound: the vocabulary is processed in chunks of ``vocab_chunk`` rows with an online
(running max) log-sum-exp, so no more than one (N × vocab_chunk) block of logits (and its
exponential) is held at a time: peak extra memory is about ``4·N·(2·vocab_chunk + 3·d)`` bytes
beside U, however large V is. Each batch reads U twice (logits, then Uᵀp): the forward matmul of
the output layer and the one of its backward pass to h, the least any gradient at h costs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


def bottleneck_projector(U: torch.Tensor) -> torch.Tensor:
    """The (r, d) float64 matrix R with ``‖Qᵀg‖ = ‖R Uᵀg‖`` for every logit gradient g, where Q
    is an orthonormal basis of the column space of U (V, d) and r = rank(U) ≤ d.

    From ``UᵀU = W Σ² Wᵀ``: ``R = Σ⁻¹ Wᵀ`` over the singular values above float32's rank
    tolerance, so a rank-deficient U (degenerate embeddings) gets its true rank.
    """
    U64 = U.double()
    lam, W = torch.linalg.eigh(U64.T @ U64)  # ascending eigenvalues σ²
    sigma = lam.clamp_min(0.0).sqrt()
    keep = sigma > sigma.max() * max(U.shape) * torch.finfo(torch.float32).eps
    return (W[:, keep] / sigma[keep]).T.contiguous()


def vocab_blocks(
    h: torch.Tensor, U: torch.Tensor, b: torch.Tensor | None, vocab_chunk: int
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The logits ``h Uᵀ + b`` one block of vocabulary rows at a time: ``(lo, hi, logits)`` with
    logits of shape (N, hi − lo), a fresh tensor that the caller may overwrite in place.

    Every pass over the vocabulary (the decomposition, the output layer's gradients, the
    logit-gradient rank) goes through here, so memory never holds more than one block.
    """
    for lo in range(0, U.shape[0], vocab_chunk):
        hi = min(lo + vocab_chunk, U.shape[0])
        Uc = U[lo:hi]
        yield lo, hi, (h @ Uc.T if b is None else torch.addmm(b[lo:hi], h, Uc.T))


@dataclass
class VocabSums:
    """What one chunked pass over the vocabulary yields for N positions."""

    lse: torch.Tensor  # (N,) log Σ_j exp ℓ_j
    logit_t: torch.Tensor  # (N,) ℓ_t, read from the same logits block as everything else
    rest: torch.Tensor  # (N,) Σ_{j≠t} p_j = 1 − p_t, summed without cancellation
    rep: torch.Tensor  # (N, d) Σ_{j≠t} p_j U_j = ∇h⁻, summed without the target's term
    rep_sq: torch.Tensor  # (N,) Σ_{j≠t} p_j², the squared norm of the repulsive logit gradient

    @property
    def log_pt(self) -> torch.Tensor:
        """log p_t: ``log1p(−(1 − p_t))`` for a confident token (no cancellation in the loss
        of a token the model already predicts), else ``ℓ_t − lse``."""
        return torch.where(
            self.rest < 0.5, torch.log1p(-self.rest.clamp_max(0.5)), self.logit_t - self.lse
        )


def vocab_pass(
    h: torch.Tensor,
    U: torch.Tensor,
    b: torch.Tensor | None,
    targets: torch.Tensor,
    vocab_chunk: int,
) -> VocabSums:
    """One pass over the vocabulary in chunks with a running max (numerically stable).

    The target's logit is taken from the same block of logits as the normaliser, and its term is
    left out of the repulsive sums rather than subtracted afterwards: where p_t is close to 1,
    ``Uᵀp − p_t U_t`` would cancel almost entirely and amplify any mismatch between the two.

    Parameters
    ----------
    h : (N, d) hidden states; U : (V, d) output embedding; b : (V,) bias or None;
    targets : (N,) ids.
    """
    N, d = h.shape
    kw = {"dtype": h.dtype, "device": h.device}
    m = torch.full((N,), -torch.inf, **kw)  # running max of the logits
    s = torch.zeros(N, **kw)  # Σ_{j≠t} exp(ℓ − m)
    s_t = torch.zeros(N, **kw)  # exp(ℓ_t − m)
    s2 = torch.zeros(N, **kw)  # Σ_{j≠t} exp(2(ℓ − m))
    v = torch.zeros(N, d, **kw)  # Σ_{j≠t} exp(ℓ − m) U_j
    logit_t = torch.zeros(N, **kw)
    rows = torch.arange(N, device=h.device)
    for lo, hi, e in vocab_blocks(h, U, b, vocab_chunk):
        here = (targets >= lo) & (targets < hi)
        at = (rows[here], targets[here] - lo)
        logit_t[here] = e[at]
        m_new = torch.maximum(m, e.amax(dim=1))
        scale = torch.exp(m - m_new)  # rescales what was summed under the old max
        e.sub_(m_new[:, None]).exp_()  # in place: one (N, chunk) block alive at a time
        e_t = torch.zeros(N, **kw)
        e_t[here] = e[at]
        e[at] = 0.0  # the repulsive sums leave the target out
        s = s * scale + e.sum(dim=1)
        s_t = s_t * scale + e_t
        s2 = s2 * scale**2 + torch.linalg.vector_norm(e, dim=1).square()
        v = torch.addmm(v * scale[:, None], e, U[lo:hi])
        m = m_new
    total = s + s_t
    return VocabSums(m + torch.log(total), logit_t, s / total, v / total[:, None], s2 / total**2)


def _cos(a: torch.Tensor, b: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    # cosine along the last axis; 0 where either vector vanishes
    denom = na * nb
    return torch.where(denom > 0, (a * b).sum(-1) / denom.clamp_min(torch.finfo(a.dtype).tiny), 0.0)


def grads_at_h(
    U: torch.Tensor, targets: torch.Tensor, sums: VocabSums
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log p_t``, ∇h⁺ and ∇h⁻, each for N positions: (N,), (N, d), (N, d)."""
    log_pt = sums.log_pt
    return log_pt, -sums.rest[:, None] * U[targets], sums.rep


@dataclass
class Decomposition:
    """``decompose_at_h``'s result for N positions."""

    measurements: dict[str, torch.Tensor]  # (N,) each, keyed by pipeline.schema.MEASUREMENTS
    grad_att: torch.Tensor  # (N, d) ∇h⁺, to back-propagate into the body
    grad_rep: torch.Tensor  # (N, d) ∇h⁻
    lse: torch.Tensor  # (N,) log-sum-exp of the logits
    log_pt: torch.Tensor  # (N,) log p_t


def decompose_at_h(
    h: torch.Tensor,
    U: torch.Tensor,
    b: torch.Tensor | None,
    R: torch.Tensor,
    targets: torch.Tensor,
    vocab_chunk: int = 8192,
) -> Decomposition:
    """Loss, the attractive/repulsive decomposition at h and κ for N positions.

    Parameters
    ----------
    h : (N, d) final hidden states (input of the output layer).
    U : (V, d) output embedding; ``b`` : (V,) output bias or None.
    R : (r, d) the bottleneck projector of U (``bottleneck_projector``).
    targets : (N,) target ids, each in ``[0, V)``.
    vocab_chunk : vocabulary rows per logits block.

    Returns
    -------
    Decomposition: the measurements, ∇h⁺ and ∇h⁻, the log-sum-exp and log p_t.
    """
    sums = vocab_pass(h, U, b, targets, vocab_chunk)
    log_pt, grad_att, grad_rep = grads_at_h(U, targets, sums)
    pt = torch.exp(log_pt)
    grad = grad_att + grad_rep  # ∇h = Uᵀp − U_t
    n_h = h.norm(dim=-1)
    n_att, n_rep, n_grad = grad_att.norm(dim=-1), grad_rep.norm(dim=-1), grad.norm(dim=-1)
    # ‖g‖² = (1 − p_t)² + Σ_{j≠t} p_j², summed without cancellation; ‖Qᵀg‖ = ‖R ∇h‖
    g_sq = sums.rest**2 + sums.rep_sq
    kept = (grad.double() @ R.T).pow(2).sum(-1).to(h.dtype)
    out = {
        "loss": -log_pt,
        "p_target": pt,
        "norm_attractive": n_att,
        "norm_repulsive": n_rep,
        "norm_grad": n_grad,
        "cos_h_attractive": _cos(h, grad_att, n_h, n_att),
        "cos_h_repulsive": _cos(h, grad_rep, n_h, n_rep),
        "cos_grad_attractive": _cos(grad, grad_att, n_grad, n_att),
        "cos_grad_repulsive": _cos(grad, grad_rep, n_grad, n_rep),
        "cos_attractive_repulsive": _cos(grad_att, grad_rep, n_att, n_rep),
        "kept_fraction": torch.where(g_sq > 0, kept / g_sq.clamp_min(1e-45), torch.nan),
        "logit_grad_sq": g_sq,
    }
    return Decomposition(out, grad_att, grad_rep, sums.lse, log_pt)
