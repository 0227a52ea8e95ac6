"""Divergences between models' predictive distributions at the same positions: the cross-seed
per-token KL divergence (Fehlauer, Mahowald & Pimentel 2025, measured on PolyPythias)."""

from __future__ import annotations

import torch


def seed_kl(log_probs: torch.Tensor) -> torch.Tensor:
    """Each model's mean KL divergence to the others, per position.

    log_probs : (models, tokens, vocab) log-probabilities of ≥ 2 models (seeds) at the same
    positions. Returns (models, tokens): for model a, mean over b ≠ a of
    KL(p_a ‖ p_b) = Σ_j p_a(j) (log p_a(j) − log p_b(j)). The mean over models is the mean
    over ordered pairs of seeds.
    """
    n = log_probs.shape[0]
    if n < 2:
        raise ValueError(f"the cross-seed KL needs two or more models, got {n}")
    p = log_probs.exp()
    # Σ_j p_a log p_a − Σ_j p_a log p_b, for every pair (a, b): (models, models, tokens)
    self_term = (p * log_probs).sum(-1)  # (models, tokens)
    cross = torch.einsum("atv,btv->abt", p, log_probs)
    kl = self_term[:, None, :] - cross  # kl[a, b] = KL(p_a ‖ p_b); kl[a, a] = 0
    return kl.sum(1) / (n - 1)
