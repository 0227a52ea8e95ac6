"""Independent references that the numeric tests compare the pipeline against.

Each is written the slow, obvious way, and none calls the code it checks:

* ``masked_autograd_at_h``: the per-token decomposition at h by autograd, one backward pass per
  masked logit gradient (the papers' own method), and κ by an explicit QR projection.
* ``kept_fraction_by_projection``: κ from the dense logit gradients and a QR basis of U.
* ``matrix_rank_curve``: the logit-gradient rank by ``torch.linalg.matrix_rank``.
* ``masked_autograd_param_grads`` and ``param_statistics``: the mean ∇θ⁺ and ∇θ⁻ of every
  parameter by autograd through the whole model, and their norms and cosines.
* ``interference_by_positions``: D_W of every linear and embedding weight from an explicit loop
  over sequences and positions of the plain loss gradient.
* ``frequency_bins_by_id``: the log2 frequency bins, one id at a time.
* ``bin_means``, ``bin_quantiles``, ``interference_of_changes``: the reductions in eager numpy.
* ``improving_by_step`` and ``saturation_step_by_step``: the saturation rule, one step at a time.
* ``bnsl_formula``: ZSL Eq. 1 written out directly.
* ``per_token_gradients``: ∇θℓ_i of every token, one plain backward pass each, flattened.
* ``coherence_from_products``: App. C.4's C_g, C_ug, C_uG from the explicit matrix p_ij.
* ``adamw_training``: the toy suite's training written as a plain loop (AdamW with Pythia's
  learning-rate shape), saving ``save_pretrained`` checkpoints.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

#: The bin of ids never seen in the counts (``pipeline.maths.frequency.UNSEEN_BIN``'s value is
#: checked against this in the tests; a reference must not read it from the code it checks).
UNSEEN = -64


def rel_err(a, b) -> float:
    """``‖a − b‖ / ‖b‖`` in float64 over all elements (arrays or tensors)."""
    a = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else a
    b = b.detach().cpu().double().numpy() if isinstance(b, torch.Tensor) else b
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --- the decomposition at h -----------------------------------------------------------------


def kept_fraction_by_projection(
    h: torch.Tensor, U: torch.Tensor, b: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    """κ = ‖Qᵀg‖² / ‖g‖² with the dense logit gradients g = p − e_t and Q from a QR
    decomposition of U (a different basis of the same column space than the pipeline's), in
    float64."""
    logits = h.double() @ U.double().T + (0 if b is None else b.double())
    G = torch.softmax(logits, 1)
    G[torch.arange(h.shape[0]), targets] -= 1
    Q, _ = torch.linalg.qr(U.double())
    return (G @ Q).pow(2).sum(1) / G.pow(2).sum(1)


def suppressed_by_projection(
    h: torch.Tensor, U: torch.Tensor, b: torch.Tensor | None, targets: torch.Tensor
) -> tuple[dict[str, float], torch.Tensor]:
    """The suppressed-share forms from the dense logit gradients G and an explicit projection
    onto U's column space (QR basis), float64; and the projected gradients GQ."""
    logits = h.double() @ U.double().T + (0 if b is None else b.double())
    G = torch.softmax(logits, 1)
    G[torch.arange(h.shape[0]), targets] -= 1
    Q, _ = torch.linalg.qr(U.double())
    GQ = G @ Q
    kept, total = GQ.pow(2).sum(1), G.pow(2).sum(1)
    residual = (G - GQ @ Q.T).norm(dim=1) / G.norm(dim=1)  # ‖g − QQᵀg‖ / ‖g‖
    cosine = (G * (GQ @ Q.T)).sum(1) / (G.norm(dim=1) * (GQ @ Q.T).norm(dim=1))
    forms = {
        "suppressed_squared": float((1 - kept / total).mean()),
        "suppressed_norm": float(residual.mean()),
        "kept_cosine": float(cosine.mean()),
        "suppressed_batch": float(1 - kept.sum() / total.sum()),
    }
    return forms, GQ


def cos(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The cosine along ``dim``, exactly: ``torch.nn.functional.cosine_similarity`` clamps each
    norm to at least 1e-8, which shrinks the cosine of a small vector (a confident token's ∇h⁻)."""
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim))


def masked_autograd_at_h(
    h: torch.Tensor, head: nn.Module, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every per-token measurement by autograd, one masked backward pass per component.

    Back-propagate the cross-entropy to the logits, keep only the true entry (attractive) or
    only the false entries (repulsive) of the logit gradient, and back-propagate that through
    the output layer ``head`` to h. κ is projected explicitly (``kept_fraction_by_projection``).
    """
    h = h.detach().clone().requires_grad_(True)
    logits = head(h)  # (N, V)
    loss = nn.functional.cross_entropy(logits, targets, reduction="none")
    (g,) = torch.autograd.grad(loss.sum(), logits, retain_graph=True)  # p − e_t per row
    true = nn.functional.one_hot(targets, logits.shape[1]).bool()
    (att,) = torch.autograd.grad(logits, h, grad_outputs=g * true, retain_graph=True)
    (rep,) = torch.autograd.grad(logits, h, grad_outputs=g * ~true, retain_graph=True)
    (full,) = torch.autograd.grad(loss.sum(), h)
    hd = h.detach()
    bias = head.bias.detach() if getattr(head, "bias", None) is not None else None
    kept = kept_fraction_by_projection(hd, head.weight.detach(), bias, targets)
    return {
        "loss": loss.detach(),
        "p_target": torch.exp(-loss.detach()),
        "norm_attractive": att.norm(dim=-1),
        "norm_repulsive": rep.norm(dim=-1),
        "norm_grad": full.norm(dim=-1),
        "cos_h_attractive": cos(hd, att, dim=-1),
        "cos_h_repulsive": cos(hd, rep, dim=-1),
        "cos_grad_attractive": cos(full, att, dim=-1),
        "cos_grad_repulsive": cos(full, rep, dim=-1),
        "cos_attractive_repulsive": cos(att, rep, dim=-1),
        "kept_fraction": kept.float(),
        "logit_grad_sq": g.pow(2).sum(-1),
    }


def matrix_rank_curve(
    h: torch.Tensor, U: torch.Tensor, targets: torch.Tensor, sizes: list[int]
) -> list[int]:
    """The rank of the first n dense logit gradients (rows of p − e_t) for each n in ``sizes``,
    by ``torch.linalg.matrix_rank`` in float64 with float32's tolerance."""
    G = torch.softmax(h @ U.T, 1)
    G[torch.arange(h.shape[0]), targets] -= 1
    vocab = U.shape[0]
    eps = torch.finfo(torch.float32).eps
    return [int(torch.linalg.matrix_rank(G[:n].double(), rtol=max(n, vocab) * eps)) for n in sizes]


# --- parameters -----------------------------------------------------------------------------


def masked_autograd_param_grads(
    model: nn.Module, input_ids: np.ndarray, targets: np.ndarray
) -> dict[str, dict[str, torch.Tensor]]:
    """Mean ∇θ⁺ (``"att"``) and ∇θ⁻ (``"rep"``) of every named parameter by autograd through
    the whole model, the logit gradient masked to the true / false entries."""
    ids = torch.from_numpy(input_ids).long()
    tgt = torch.from_numpy(targets).long().reshape(-1)
    params = dict(model.named_parameters())
    logits = model(input_ids=ids).logits
    logits = logits.reshape(-1, logits.shape[-1])
    loss = nn.functional.cross_entropy(logits, tgt, reduction="sum")
    (g,) = torch.autograd.grad(loss, logits, retain_graph=True)
    true = nn.functional.one_hot(tgt, logits.shape[-1]).bool()
    out = {}
    for part, mask in (("att", true), ("rep", ~true)):
        grads = torch.autograd.grad(
            logits,
            list(params.values()),
            grad_outputs=g * mask,
            retain_graph=True,
            allow_unused=True,
        )
        out[part] = {
            n: (gr if gr is not None else torch.zeros_like(p)) / tgt.numel()
            for (n, p), gr in zip(params.items(), grads)
        }
    return out


def param_statistics(grads: dict[str, dict[str, torch.Tensor]], names: list[str]) -> dict:
    """Per parameter (in ``names`` order): ‖∇θ⁺‖, ‖∇θ⁻‖, ‖∇θ‖ and cos(∇θ⁺, ∇θ⁻) (0 where a part
    vanishes) of ``masked_autograd_param_grads``' gradients, keyed as the stores name them."""
    att, rep = grads["att"], grads["rep"]

    def cos(n: str) -> float:
        a, r = att[n].flatten(), rep[n].flatten()
        return nn.functional.cosine_similarity(a, r, dim=0).item() if a.norm() * r.norm() else 0.0

    return {
        "param_norm_attractive": np.array([att[n].norm().item() for n in names]),
        "param_norm_repulsive": np.array([rep[n].norm().item() for n in names]),
        "param_norm_grad": np.array([(att[n] + rep[n]).norm().item() for n in names]),
        "param_cos_attractive_repulsive": np.array([cos(n) for n in names]),
    }


def interference_by_positions(
    model: nn.Module, input_ids: np.ndarray, targets: np.ndarray
) -> dict[str, float]:
    """D_W per linear/embedding weight from an explicit loop over sequences and positions of the
    plain loss gradient (one sequence at a time; layer outputs' gradients kept by hooks):
    ``S = Σ_i δ_i x_iᵀ``, ``A = Σ_i |δ_i| |x_i|ᵀ``, ``D_W = mean over A > 0 of 1 − |S| / A``."""
    from transformers.pytorch_utils import Conv1D

    name_of = {id(p): n for n, p in model.named_parameters()}
    head = model.get_output_embeddings()
    recs = []

    def hook(mod, inputs, output):
        output.retain_grad()
        recs.append({"mod": mod, "x": inputs[0].detach(), "out": output})

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Embedding, Conv1D))
    ]
    try:
        for seq in range(input_ids.shape[0]):
            ids = torch.from_numpy(input_ids[seq : seq + 1]).long()
            tgt = torch.from_numpy(targets[seq]).long()
            logits = model(input_ids=ids).logits
            logits = logits.reshape(-1, logits.shape[-1])
            nn.functional.cross_entropy(logits, tgt, reduction="sum").backward()
    finally:
        for h in handles:
            h.remove()
    S, A = {}, {}
    for rec in recs:
        mod, x, delta = rec["mod"], rec["x"], rec["out"].grad
        name = name_of[id(mod.weight)]
        delta = delta.reshape(-1, delta.shape[-1])
        S.setdefault(name, torch.zeros_like(mod.weight, dtype=torch.float64))
        A.setdefault(name, torch.zeros_like(mod.weight, dtype=torch.float64))
        for i in range(delta.shape[0]):  # the explicit loop over positions
            di = delta[i].double()
            if isinstance(mod, nn.Embedding):
                xi = nn.functional.one_hot(x.reshape(-1)[i], mod.weight.shape[0]).double()
                outer, absouter = torch.outer(xi, di), torch.outer(xi, di.abs())
            else:
                xi = x.reshape(-1, x.shape[-1])[i].double()
                if isinstance(mod, nn.Linear):
                    outer, absouter = torch.outer(di, xi), torch.outer(di.abs(), xi.abs())
                else:  # Conv1D: (in, out)
                    outer, absouter = torch.outer(xi, di), torch.outer(xi.abs(), di.abs())
            S[name] += outer
            A[name] += absouter
    model.zero_grad(set_to_none=True)
    out = {}
    for name in S:
        used = A[name] > 0
        out[name] = float((1 - S[name][used].abs() / A[name][used]).mean())
    assert name_of[id(head.weight)] in out
    return out


# --- frequency bins and the reductions --------------------------------------------------------


def frequency_bins_by_id(count: np.ndarray) -> tuple[list[float], list[int]]:
    """Each id's relative frequency and bin ``floor(log2 f)`` (``UNSEEN`` for unseen ids), one id
    at a time with the standard library."""
    total = int(sum(int(c) for c in count))
    freq, bins = [], []
    for c in count:
        c = int(c)
        freq.append(c / total)
        bins.append(math.floor(math.log2(c / total)) if c else UNSEEN)
    return freq, bins


def bin_means(x: np.ndarray, bins: np.ndarray) -> dict[int, float]:
    """The NaN-skipping mean of ``x`` over the tokens of each bin value, one bin at a time."""
    return {int(b): float(np.nanmean(x[bins == b])) for b in np.unique(bins)}


def bin_quantiles(x: np.ndarray, bins: np.ndarray, q: list[float]) -> dict[int, np.ndarray]:
    """The NaN-skipping quantiles ``q`` of ``x`` over the tokens of each bin value."""
    return {int(b): np.nanquantile(x[bins == b], q) for b in np.unique(bins)}


def interference_of_changes(delta: np.ndarray) -> tuple[float, float]:
    """Loss-change interference D = 1 − |Σ Δℓ| / Σ |Δℓ| and magnitude M = Σ |Δℓ| / N (ZSL Eq.
    2-4) of one set of per-token loss changes, by a plain Python sum (NaN when undefined)."""
    values = [float(v) for v in np.asarray(delta).ravel()]
    net, total = math.fsum(values), math.fsum(abs(v) for v in values)
    D = 1 - abs(net) / total if total > 0 else float("nan")
    M = total / len(values) if values else float("nan")
    return D, M


def improving_by_step(loss: list[float], tolerance: float = 0.01) -> list[bool]:
    """Gradient Dissent §2, one step at a time: step s improves when its loss is strictly below
    ``(1 + tolerance)`` × the lowest loss of the earlier steps (the first step always improves;
    a NaN loss never does, and does not count as a best)."""
    out, best = [], math.inf
    for i, x in enumerate(loss):
        if math.isnan(x):
            out.append(False)
            continue
        out.append(i == 0 or best == math.inf or x < (1 + tolerance) * best)
        best = min(best, x)
    return out


def saturation_step_by_step(loss: list[float], steps: list[int], tolerance: float = 0.01) -> float:
    """The first step of the final run of saturated (not improving) steps; NaN when the last step
    improves or has no loss."""
    imp = improving_by_step(loss, tolerance)
    if math.isnan(loss[-1]) or imp[-1]:
        return float("nan")
    i = len(loss) - 1
    while i > 0 and not imp[i - 1] and not math.isnan(loss[i - 1]):
        i -= 1
    return float(steps[i])


# --- the BNSL fit ---------------------------------------------------------------------------


def bnsl_formula(t, a, b, c0, c1, d1, f1):
    """ZSL Eq. 1 written out directly (independent of ``bnsl``'s overflow-free evaluation)."""
    return a + b * t ** (-c0) * (1 + (t / d1) ** (1 / f1)) ** (-c1 * f1)


# --- one optimizer step ---------------------------------------------------------------------


def per_token_gradients(model, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(token, n_params) float64: the gradient of each token's loss (sequences × positions,
    flattened), one backward pass per token through its own forward pass."""
    params = [p for p in model.parameters()]
    rows = []
    for s in range(input_ids.shape[0]):
        for t in range(input_ids.shape[1]):
            logits = model(input_ids=input_ids[s : s + 1]).logits[0, t]
            loss = -torch.log_softmax(logits.double(), -1)[targets[s, t]]
            grads = torch.autograd.grad(loss, params)
            rows.append(torch.cat([g.reshape(-1).double() for g in grads]))
    return torch.stack(rows)


def coherence_from_products(p: np.ndarray) -> tuple[float, float, float]:
    """C_g, C_ug, C_uG from p (token, coordinate) = u_j g_ij, as App. C.4 writes them."""
    total = np.abs(p).sum()
    C_g = np.abs(p.sum(0)).sum() / total
    C_ug = np.abs(p.sum(1)).sum() / total
    C_uG = abs(p.sum()) / np.abs(p.sum(0)).sum()
    return float(C_g), float(C_ug), float(C_uG)


def adamw_training(model, batches, steps: int, lr: float, warmup: int, weight_decay: float):
    """Train ``model`` for ``steps`` steps on ``batches`` (an iterator of id windows) with AdamW
    and a linear warm-up then cosine decay to 10% (written out here, not the pipeline's), and
    yield (step, model) after every step, step 0 first."""

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * frac))

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    for group in opt.param_groups:
        group["lr"] = lr * factor(0)
    model.train()
    yield 0, model
    for step in range(1, steps + 1):
        batch = next(batches)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = lr * factor(step)
        yield step, model
