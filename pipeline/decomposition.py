"""The attractive/repulsive decomposition of the cross-entropy gradient at h (Gradient Dissent).

For one position with final hidden state ``h ∈ R^d`` (the output layer's input), output
embedding ``U ∈ R^{V×d}`` (optional bias ``b``), logits ``ℓ = U h + b``, ``p = softmax(ℓ)`` and
target ``t``, the logit gradient ``g = p − e_t`` splits into an attractive part
``g⁺ = (p_t − 1) e_t`` and a repulsive part ``g⁻ = p − p_t e_t``. At h, in closed form::

    ∇h⁺ = (p_t − 1) U_t        ∇h⁻ = Uᵀp − p_t U_t        ∇h = Uᵀp − U_t

``decompose_at_h`` computes, for N positions at once, the loss, ``p_t``, the three norms and five
cosines (Gradient Dissent Fig. 2, 3, 6). The vocabulary is processed in chunks of ``vocab_chunk``
rows with an online (running max) log-sum-exp, so no more than one (N × vocab_chunk) block of
logits is ever held: memory is O(N·(vocab_chunk + d)) however large V is, and U is read once.
"""

from __future__ import annotations

import torch

#: Names of the per-token measurements, in the order ``decompose_at_h`` returns them.
MEASUREMENTS = (
    "loss",
    "p_target",
    "norm_attractive",
    "norm_repulsive",
    "norm_grad",
    "cos_h_attractive",
    "cos_h_repulsive",
    "cos_grad_attractive",
    "cos_grad_repulsive",
    "cos_attractive_repulsive",
)


def expected_embedding(
    h: torch.Tensor, U: torch.Tensor, b: torch.Tensor | None, vocab_chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-sum-exp of the logits and ``Uᵀp`` for every position, one vocabulary chunk at a time.

    Parameters
    ----------
    h : (N, d) hidden states.
    U : (V, d) output embedding; ``b`` : (V,) bias or None.

    Returns
    -------
    lse : (N,) ``log Σ_j exp ℓ_j``.
    Utp : (N, d) ``Uᵀ softmax(ℓ)``.
    """
    N, d = h.shape
    m = torch.full((N,), -torch.inf, dtype=h.dtype, device=h.device)  # running max
    s = torch.zeros(N, dtype=h.dtype, device=h.device)  # Σ exp(ℓ − m)
    v = torch.zeros(N, d, dtype=h.dtype, device=h.device)  # Σ exp(ℓ − m) U_j
    for lo in range(0, U.shape[0], vocab_chunk):
        Uc = U[lo : lo + vocab_chunk]
        logits = h @ Uc.T  # (N, chunk)
        if b is not None:
            logits += b[lo : lo + vocab_chunk]
        m_new = torch.maximum(m, logits.max(dim=1).values)
        scale = torch.exp(m - m_new)  # rescale what was summed under the old max
        e = torch.exp(logits - m_new[:, None])
        s = s * scale + e.sum(dim=1)
        v = v * scale[:, None] + e @ Uc
        m = m_new
    return m + torch.log(s), v / s[:, None]


def _cos(a: torch.Tensor, b: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    # cosine along the last axis; 0 where either vector vanishes
    denom = na * nb
    return torch.where(denom > 0, (a * b).sum(-1) / denom.clamp_min(torch.finfo(a.dtype).tiny), 0.0)


def decompose_at_h(
    h: torch.Tensor,
    U: torch.Tensor,
    b: torch.Tensor | None,
    targets: torch.Tensor,
    vocab_chunk: int = 8192,
) -> dict[str, torch.Tensor]:
    """Loss and the attractive/repulsive decomposition at h for N positions.

    Parameters
    ----------
    h : (N, d) final hidden states (input of the output layer).
    U : (V, d) output embedding; ``b`` : (V,) output bias or None.
    targets : (N,) target ids, each in ``[0, V)``.
    vocab_chunk : vocabulary rows per logits block.

    Returns
    -------
    dict of (N,) tensors keyed by ``MEASUREMENTS``.
    """
    lse, Utp = expected_embedding(h, U, b, vocab_chunk)
    Ut = U[targets]  # (N, d)
    logit_t = (h * Ut).sum(-1) + (b[targets] if b is not None else 0.0)
    log_pt = logit_t - lse
    pt = torch.exp(log_pt)
    grad_att = (pt - 1.0)[:, None] * Ut  # ∇h⁺
    grad_rep = Utp - pt[:, None] * Ut  # ∇h⁻
    grad = Utp - Ut  # ∇h = ∇h⁺ + ∇h⁻
    n_h = h.norm(dim=-1)
    n_att, n_rep, n_grad = grad_att.norm(dim=-1), grad_rep.norm(dim=-1), grad.norm(dim=-1)
    return {
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
    }
