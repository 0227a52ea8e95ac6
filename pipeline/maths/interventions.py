"""Interventions on training that act on the terms this project decomposes: optimizers that
change how the output layer's rows move, and loss terms on the logits or the output layer.

Optimizers (``torch.optim.Optimizer`` subclasses, one parameter tensor at a time, any dtype;
weight decay decoupled and scaled by the learning rate, as ``torch.optim.AdamW``):

* ``CoupledAdamW`` (Stollenwerk & Stollenwerk 2025): AdamW whose second moment, for the
  embedding matrices (groups with ``coupled=True``), is replaced in the update by its mean over
  the vocabulary's rows, so every row of a dimension moves with one step size; the stored
  second moment stays per entry.
* ``CautiousAdamW`` (Liang et al. 2024): AdamW's update kept only where the first moment and
  the gradient agree in sign, rescaled by ``numel / (kept + 1)``.
* ``AdEMAMix`` (Pagliardini et al. 2024): a fast and a slow first moment,
  (m̂₁ + α·m₂) / (√v̂ + ε), with α and β₃ warmed up over ``warmup`` steps (their schedulers).
* Muon (``torch.optim.Muon``, the pinned PyTorch's own, which orthogonalises in bfloat16)
  takes the body's matrices and AdamW the rest (``muon_groups`` splits them).

Loss terms and projections: ``z_loss`` (PaLM: the mean squared log-partition function),
``mu_loss`` (the squared norm of the output layer's mean row) and ``center_rows`` (μ-centering:
the mean row subtracted after every step); output-embedding centering's definitions
(arXiv 2601.02031).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossTerms:
    """What training adds to the cross-entropy, and the projection after each step: γ of the
    z-loss, γ of the μ-loss, μ-centering. Saved with every optimizer state, so that one step
    from it is training's step."""

    z_loss: float = 0.0
    mu_loss: float = 0.0
    mu_centering: bool = False


class _Adam(torch.optim.Optimizer):
    """AdamW's moments and bias correction; subclasses shape the update ``direction``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, **extra):
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, **extra}
        )

    def direction(self, group, p, grad, state, m_hat, v_hat) -> torch.Tensor:
        return m_hat / (v_hat.sqrt() + group["eps"])

    def _moments(self, group, p, grad, state):
        beta1, beta2 = group["betas"][:2]
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        t = int(state["step"])
        return state["exp_avg"] / (1 - beta1**t), state["exp_avg_sq"] / (1 - beta2**t)

    def _init(self, p, state):
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    self._init(p, state)
                state["step"] += 1
                m_hat, v_hat = self._moments(group, p, p.grad, state)
                update = self.direction(group, p, p.grad, state, m_hat, v_hat)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss


class CoupledAdamW(_Adam):
    """AdamW with the embeddings' second moment coupled over the vocabulary: in groups with
    ``coupled=True`` the update divides by √(mean over rows of v̂) (one value per column)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay, coupled=False)

    def direction(self, group, p, grad, state, m_hat, v_hat):
        if group["coupled"]:
            v_hat = v_hat.mean(dim=0, keepdim=True).expand_as(v_hat)
        return m_hat / (v_hat.sqrt() + group["eps"])


class CautiousAdamW(_Adam):
    """AdamW whose update is masked where the first moment and the gradient disagree in sign."""

    def direction(self, group, p, grad, state, m_hat, v_hat):
        mask = (state["exp_avg"] * grad > 0).to(grad.dtype)
        mask *= mask.numel() / (mask.sum() + 1)
        return m_hat * mask / (v_hat.sqrt() + group["eps"])


class AdEMAMix(_Adam):
    """AdEMAMix: AdamW's fast moment plus α times a slow one (β₃, not bias-corrected), with α
    warmed up linearly and β₃ along the authors' schedule over ``warmup`` steps (None: none)."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999, 0.9999),
        alpha=5.0,
        warmup=None,
        eps=1e-8,
        weight_decay=0.01,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, alpha=alpha, warmup=warmup)

    def _init(self, p, state):
        super()._init(p, state)
        state["exp_avg_slow"] = torch.zeros_like(p)

    def _moments(self, group, p, grad, state):
        state["exp_avg_slow"].lerp_(grad, 1 - ademamix_beta3(group, int(state["step"])))
        return super()._moments(group, p, grad, state)

    def direction(self, group, p, grad, state, m_hat, v_hat):
        alpha = ademamix_alpha(group, int(state["step"]))
        return (m_hat + alpha * state["exp_avg_slow"]) / (v_hat.sqrt() + group["eps"])


def ademamix_alpha(group: dict, t: int) -> float:
    """α at step t: linear from 0 to α over ``warmup`` steps."""
    T = group["warmup"]
    return group["alpha"] if T is None else group["alpha"] * min(1.0, t / T)


def ademamix_beta3(group: dict, t: int) -> float:
    """β₃ at step t: from β₁ to β₃ over ``warmup`` steps, so that the slow moment's half-life
    grows linearly (the authors' scheduler)."""
    beta1, _, beta3 = group["betas"]
    T = group["warmup"]
    if T is None or t >= T:
        return beta3
    f = t / T
    lb1, lb3 = math.log(beta1), math.log(beta3)
    return min(math.exp(lb1 * lb3 / ((1 - f) * lb3 + f * lb1)), beta3)


def _embedding_ids(model: torch.nn.Module) -> set[int]:
    modules = (model.get_input_embeddings(), model.get_output_embeddings())
    return {id(p) for m in modules for p in m.parameters()}


def embedding_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the matrices whose rows are the vocabulary's: the input embedding and the
    output layer (of a factored head, its factor A), which Coupled Adam couples."""
    inside, V = _embedding_ids(model), model.config.vocab_size
    return [
        n
        for n, p in model.named_parameters()
        if id(p) in inside and p.ndim == 2 and p.shape[0] == V
    ]


def muon_groups(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Names of the parameters Muon takes (the body's matrices: 2-D, outside the input and
    output embeddings) and of those AdamW takes (embeddings, output layer, norms, biases),
    each in ``named_parameters()`` order."""
    inside = _embedding_ids(model)
    muon, rest = [], []
    for name, p in model.named_parameters():
        (muon if p.ndim == 2 and id(p) not in inside else rest).append(name)
    return muon, rest


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """PaLM's z-loss term: the mean over positions of (log Z)², log Z = logsumexp of a
    position's logits (``logits``: (..., V)); the training loss adds γ times it."""
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.logsumexp(wide, dim=-1).square().mean()


def mu_loss(U: torch.Tensor) -> torch.Tensor:
    """μ-loss: ‖μ‖² of the output layer's mean row μ = mean_j U_j (``U``: V × d)."""
    mu = U.mean(dim=0)
    return mu @ mu


@torch.no_grad()
def center_rows(U: torch.Tensor) -> None:
    """μ-centering: subtract the mean row from every row of ``U`` in place."""
    U.sub_(U.mean(dim=0, keepdim=True))
