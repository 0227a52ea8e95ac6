"""The LM head as a gradient bottleneck (Godey & Artzi 2026): the rank of the logit gradients.

The logit-gradient matrix G (N × V) has rows ``g_i = p_i − e_{t_i}``. Its empirical rank as the
number of tokens N grows is compared with the ``2d`` ceiling. G is never formed: its Gram matrix
``G Gᵀ`` (N × N, float64) is accumulated one vocabulary chunk at a time, and the rank of the
first n rows is the number of singular values ``σ = sqrt(λ)`` of the leading n × n block above
``σ_max · max(n, V) · ε_float32`` — the tolerance ``torch.linalg.matrix_rank`` uses for float32.
"""

from __future__ import annotations

import torch

from pipeline.maths.decomposition import vocab_blocks


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
    N = h.shape[0]
    gram = torch.zeros(N, N, dtype=torch.float64, device=h.device)
    rows = torch.arange(N, device=h.device)
    for lo, hi, logits in vocab_blocks(h, U, b, vocab_chunk):
        G = logits.sub_(lse[:, None]).exp_().double()  # (N, chunk)
        here = (targets >= lo) & (targets < hi)
        G[rows[here], targets[here] - lo] -= 1.0
        gram += G @ G.T
    return gram


def rank_curve(gram: torch.Tensor, sizes: list[int], vocab_size: int) -> list[int]:
    """Rank of the first n rows of G for each n in ``sizes``, from its Gram matrix."""
    eps = torch.finfo(torch.float32).eps
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
