"""Parameter-gradient decomposition and per-token interference D_W (Gradient Dissent App. E;
Zero-sum learning App. B.4).

For every named parameter tensor θ, the mean over evaluation tokens of the attractive and
repulsive gradients ∇θ⁺ and ∇θ⁻ (∇θ = ∇θ⁺ + ∇θ⁻). The output layer is done in closed form:

    ∇U⁺ = Σ_i (p_t − 1) e_t h_iᵀ        ∇U⁻ = Σ_i (p_i − p_t e_t) h_iᵀ        (and the bias alike)

and every other parameter by back-propagating ∇h⁺ and ∇h⁻ from h through the model's body: two
backward passes. During them, hooks on every linear and embedding layer record the per-position
inputs x_i and output gradients δ_i = δ⁺_i + δ⁻_i, from which ``A = Σ_i |δ_i| |x_i|ᵀ`` is
accumulated; ``S = Σ_i δ_i x_iᵀ`` is the weight's summed gradient itself, so
``D_W = mean(1 − |S| / A)`` (``pipeline.interference``) costs one extra matmul per layer.

Memory: the accumulators hold three float32 copies of the parameters (∇θ⁺, ∇θ⁻, A), plus the
recorded activations of one batch, which autograd keeps alive for the backward pass anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.maths.decomposition import vocab_blocks
from pipeline.maths.interference import weight_interference

#: What ``ParamGradients.summary`` reports per parameter (the stores' names:
#: ``pipeline.schema.param_statistic``).
STATISTICS = (
    "norm_attractive",
    "norm_repulsive",
    "norm_grad",
    "cos_attractive_repulsive",
    "interference",
)


def layer_index(name: str) -> int:
    """The transformer block a parameter belongs to (the first integer in its name), or -1."""
    match = re.search(r"\.(\d+)\.", name)
    return int(match.group(1)) if match else -1


@dataclass
class ParamGradients:
    """Running sums over evaluation tokens of ∇θ⁺, ∇θ⁻ and A, per parameter name."""

    names: list[str]
    att: dict[str, torch.Tensor]
    rep: dict[str, torch.Tensor]
    absolute: dict[str, torch.Tensor]  # A, for linear and embedding weights only
    n_tokens: int = 0
    _hooks: list = field(default_factory=list)

    @classmethod
    def for_model(cls, model: nn.Module, transposed: tuple[type, ...] = ()) -> ParamGradients:
        """Zero sums for every parameter of ``model``, and A for its linear and embedding
        weights; ``transposed``: linear layers whose weight is (in, out), y = x W + b (GPT-2's
        ``transformers.pytorch_utils.Conv1D``)."""
        params = dict(model.named_parameters())  # tied weights appear once
        zeros = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        att = zeros
        rep = {n: torch.zeros_like(z) for n, z in zeros.items()}
        name_of = {id(p): n for n, p in params.items()}
        absolute = {}
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding, *transposed)):
                absolute[name_of[id(mod.weight)]] = torch.zeros_like(zeros[name_of[id(mod.weight)]])
        return cls(list(params), att, rep, absolute)

    def summary(self) -> dict[str, np.ndarray]:
        """Per parameter, keyed by ``STATISTICS``: the norms of the mean
        ∇θ⁺, ∇θ⁻ and ∇θ, cos(∇θ⁺, ∇θ⁻) and D_W (NaN for parameters that are not linear or
        embedding weights); and ``param_size`` and ``layer``."""
        n = max(self.n_tokens, 1)
        out: dict[str, list] = {k: [] for k in STATISTICS}
        for name in self.names:
            a, r = self.att[name] / n, self.rep[name] / n
            na, nr = a.norm().item(), r.norm().item()
            out["norm_attractive"].append(na)
            out["norm_repulsive"].append(nr)
            out["norm_grad"].append((a + r).norm().item())
            out["cos_attractive_repulsive"].append(
                (a * r).sum().item() / (na * nr) if na * nr > 0 else 0.0
            )
            A = self.absolute.get(name)
            S = self.att[name] + self.rep[name]
            out["interference"].append(weight_interference(S, A) if A is not None else np.nan)
        res = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
        res["param_size"] = np.array([self.att[n].numel() for n in self.names], dtype=np.int64)
        res["layer"] = np.array([layer_index(n) for n in self.names], dtype=np.int64)
        return res


class BodyRecorder:
    """Forward hooks on the body's linear and embedding layers (the output layer excluded) that
    record inputs and, through tensor hooks on the outputs, the output gradients of each
    backward pass (``transposed``: as in ``ParamGradients.for_model``)."""

    def __init__(self, model: nn.Module, head: nn.Module, transposed: tuple[type, ...] = ()):
        name_of = {id(p): n for n, p in model.named_parameters()}
        self.records: list[dict] = []
        self.handles = []
        self.batch_size = 1  # sequences in the current forward pass, set by the caller
        for mod in model.modules():
            if mod is head or not isinstance(mod, (nn.Linear, nn.Embedding, *transposed)):
                continue
            name = name_of[id(mod.weight)]
            self.handles.append(mod.register_forward_hook(self._hook(mod, name)))

    def _hook(self, mod: nn.Module, name: str):
        def forward_hook(module, inputs, output):
            if not output.requires_grad:
                return None
            x = inputs[0].detach()
            if isinstance(module, nn.Embedding) and x.shape[0] == 1 < self.batch_size:
                # position embeddings are looked up once and broadcast over the batch: expand
                # them so that each (sequence, position) gets its own output gradient δ_i
                x = x.expand(self.batch_size, *x.shape[1:])
                output = output.expand(self.batch_size, *output.shape[1:])
            rec = {"name": name, "kind": type(module), "x": x, "grads": []}
            output.register_hook(lambda g: rec["grads"].append(g.detach()))
            self.records.append(rec)
            return output

        return forward_hook

    def accumulate_absolute(self, absolute: dict[str, torch.Tensor]) -> None:
        """Add ``Σ_i |δ_i| |x_i|ᵀ`` of the recorded batch to ``absolute`` and forget the batch."""
        for rec in self.records:
            delta = sum(g.float() for g in rec["grads"])  # δ = δ⁺ + δ⁻, (..., out)
            delta = delta.reshape(-1, delta.shape[-1]).abs()
            A = absolute[rec["name"]]
            if issubclass(rec["kind"], nn.Embedding):
                A.index_add_(0, rec["x"].reshape(-1), delta)  # |x_i| is one-hot
            elif issubclass(rec["kind"], nn.Linear):
                A += delta.T @ rec["x"].reshape(-1, rec["x"].shape[-1]).float().abs()
            else:  # transposed: weight (in, out)
                A += rec["x"].reshape(-1, rec["x"].shape[-1]).float().abs().T @ delta
        self.records.clear()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.records.clear()


def output_layer_grads(
    h: torch.Tensor,
    U: torch.Tensor,
    b: torch.Tensor | None,
    targets: torch.Tensor,
    lse: torch.Tensor,
    log_pt: torch.Tensor,
    vocab_chunk: int,
) -> dict[str, torch.Tensor]:
    """Summed closed-form gradients of the output layer for N positions.

    Returns ``att_U, rep_U, abs_U`` (V, d) and, with a bias, ``att_b, rep_b`` (V,). ``abs_U`` is
    ``Σ_i |g_i| |h_i|ᵀ`` with ``|g_i| = p_i + (1 − 2 p_t) e_t``, for D_W of the output layer.
    """
    pt = torch.exp(log_pt)
    V, d = U.shape
    both = torch.cat([h, h.abs()], dim=1)  # (N, 2d): one matmul gives Pᵀh and Pᵀ|h|
    att_U = torch.zeros_like(U).index_add_(0, targets, (pt - 1.0)[:, None] * h)
    rep_abs = torch.zeros(V, 2 * d, dtype=h.dtype, device=h.device)
    rep_abs.index_add_(
        0, targets, torch.cat([-pt[:, None] * h, (1.0 - 2.0 * pt)[:, None] * both[:, d:]], 1)
    )
    rep_b = torch.zeros(V, dtype=h.dtype, device=h.device)
    for lo, hi, P in vocab_blocks(h, U, b, vocab_chunk):  # P: (N, chunk) logits
        P.sub_(lse[:, None]).exp_()  # softmax, in place
        rep_abs[lo:hi].addmm_(P.T, both)
        rep_b[lo:hi] += P.sum(0)
    rep_U, abs_U = rep_abs[:, :d], rep_abs[:, d:]
    out = {"att_U": att_U, "rep_U": rep_U, "abs_U": abs_U}
    if b is not None:
        out["att_b"] = torch.zeros_like(rep_b).index_add_(0, targets, pt - 1.0)
        out["rep_b"] = rep_b.index_add_(0, targets, -pt)
    return out
