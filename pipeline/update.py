"""The update stage: what one optimizer step from a checkpoint does to every token's loss
(Zero-sum learning §3.2, Fig. 3b–10, App. C.4).

For each update batch k, the update Δθ_k is one step of the suite's own optimizer restored from
the state saved with the checkpoint (``pipeline.optimizer``), taken on the fixed batch k from
outside the training stream. A suite without optimizer states is analysed along the
displacement θ(t′) − θ(t) to the next listed checkpoint instead: one direction, a multi-step
quantity, named as such in the store's attrs (``direction``) and everywhere it is drawn.

Along each direction, per token: the actual change Δℓ_i on the update batch ("train") and on
the evaluation set V ("eval"); the first-order prediction Δ̃ℓ_i = ∇θℓ_i · Δθ for every token
in one forward-mode pass (a Jacobian-vector product); loss-landscape cross-sections
ℓ_i(θ + m·Δθ) over multiples m of the step (α = m‖Δθ‖); ‖Δθ‖ overall and per parameter
tensor; and, optionally, exact per-token gradients for a sample of V (‖∇θℓ_i‖,
cos(Δθ, ∇θℓ_i), App. C.4's coordinate sums, whose identity is checked on every run).
``pipeline.reduce.reduce_updates`` reduces one model's stores over steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

import pipeline
from pipeline import formats
from pipeline.checkpoints import load_checkpoint, weights_sha256
from pipeline.config import UpdateConfig
from pipeline.extract import resolve_device
from pipeline.logs import Progress, console_warning
from pipeline.maths.interventions import LossTerms, mu_loss, z_loss
from pipeline.maths.update import Coherence, change_summary, check_coherence, coherence
from pipeline.optimizer import check_state, one_step
from pipeline.schema import conform
from pipeline.store import open_store, with_labels, write_zarr

log = logging.getLogger(__name__)

Params = dict[str, torch.Tensor]


@contextmanager
def forward_mode_attention() -> Iterator[None]:
    """Scaled-dot-product attention through its math kernel, which forward-mode AD supports
    (the fused CPU and flash kernels do not)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def _passes(n: int, per_pass: int) -> Iterator[slice]:
    """The sequences of each forward (or backward) pass over ``n`` sequences."""
    for lo in range(0, n, per_pass):
        yield slice(lo, min(n, lo + per_pass))


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )


def token_losses(
    model,
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    per_pass: int,
    params: Params | None = None,
) -> torch.Tensor:
    """Per-token losses (float32, sequences × positions flattened) at the model's weights, or at
    ``params`` in their place."""
    out = []
    with torch.no_grad():
        for s in _passes(input_ids.shape[0], per_pass):
            if params is None:
                logits = model(input_ids=input_ids[s]).logits
            else:
                logits = torch.func.functional_call(model, params, (input_ids[s],)).logits
            out.append(_ce(logits, targets[s]))
    return torch.cat(out)


def first_order(
    model, input_ids: torch.Tensor, targets: torch.Tensor, delta: Params, per_pass: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token losses and their first-order changes ``Δ̃ℓ_i = ∇θℓ_i · Δθ`` along ``delta``,
    for every token in one forward-mode pass (a Jacobian-vector product).

    The body's pass is forward-mode AD, giving the final hidden states h and their tangents ḣ;
    the output layer is in closed form: with logits z = Uh + b, p = softmax(z) and tangents
    ż_j = U̇_j·h + U_j·ḣ + ḃ_j, ``Δ̃ℓ = Σ_j p_j ż_j − ż_t = h·(pᵀU̇) + ḣ·(pᵀU) + p·ḃ − ż_t``: three
    products with the vocabulary, like the forward pass's one, and no tangent of the logits.
    """
    params = dict(model.named_parameters())
    name_of = {id(p): n for n, p in params.items()}
    head = model.get_output_embeddings()
    U, dU = head.weight.detach().float(), delta[name_of[id(head.weight)]].float()
    bias = getattr(head, "bias", None)
    b, db = (
        (None, None) if bias is None else (bias.detach().float(), delta[name_of[id(bias)]].float())
    )
    UdU = torch.cat([dU, U], dim=1)  # (V, 2d)
    body = model.base_model
    prefix = f"{model.base_model_prefix}."
    names = [n for n in delta if n.startswith(prefix)]  # the body's (a tied U is among them)
    primals = tuple(params[n].detach() for n in names)
    tangents = tuple(delta[n] for n in names)
    short = [n[len(prefix) :] for n in names]
    losses, changes = [], []
    with forward_mode_attention():
        for s in _passes(input_ids.shape[0], per_pass):

            def f(*ps, s=s):
                out = torch.func.functional_call(body, dict(zip(short, ps)), (input_ids[s],))
                return out.last_hidden_state

            h, dh = torch.func.jvp(f, primals, tangents)
            h, dh = h.detach().float().flatten(0, 1), dh.detach().float().flatten(0, 1)
            t = targets[s].reshape(-1)
            z = h @ U.T + (0 if b is None else b)
            lse = torch.logsumexp(z, dim=1)
            p = torch.exp(z - lse[:, None])
            dz_t = (h * dU[t]).sum(1) + (dh * U[t]).sum(1)
            pdU, pU = (p @ UdU).split(U.shape[1], dim=1)  # pᵀU̇ and pᵀU in one product
            change = (h * pdU).sum(1) + (dh * pU).sum(1) - dz_t
            if b is not None:
                change += p @ db - db[t]
            losses.append(lse - z.gather(1, t[:, None])[:, 0])
            changes.append(change)
    return torch.cat(losses), torch.cat(changes)


def landscape(
    model,
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    delta: Params,
    multiples: list[float],
    per_pass: int,
) -> torch.Tensor:
    """Per-token losses ``ℓ_i(θ + m·Δθ)`` for each multiple ``m`` of the step: (alpha, token)."""
    theta = {n: p.detach() for n, p in model.named_parameters()}
    rows = []
    for m in multiples:
        moved = {n: theta[n] + m * delta[n] for n in delta}
        rows.append(token_losses(model, input_ids, targets, per_pass, moved))
    return torch.stack(rows)


def token_gradients(
    model, input_ids: torch.Tensor, targets: torch.Tensor, tokens: np.ndarray, deltas: list[Params]
) -> dict[str, np.ndarray]:
    """Exact per-token gradients g_i = ∇θℓ_i for the flat token indices ``tokens`` (one backward
    pass per token, through a forward pass per sequence), reduced against each update u.

    Returns ``grad_norm (token,)``; per update ``dot (K, token)`` = u·g_i,
    ``abs_dot (K, token)`` = Σ_j |u_j g_ij|; and ``uG (K, 2)`` = (Σ_j u_j G_j, Σ_j |u_j G_j|)
    with G = Σ_i g_i over the sampled tokens.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names, plist = list(params), list(params.values())
    T = input_ids.shape[1]
    K = len(deltas)
    G = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    norm = np.zeros(tokens.size)
    dot, abs_dot = np.zeros((K, tokens.size)), np.zeros((K, tokens.size))
    progress = Progress(log, tokens.size, "per-token gradients")
    done = 0
    for seq in np.unique(tokens // T):
        where = np.flatnonzero(tokens // T == seq)
        losses = _ce(model(input_ids=input_ids[seq : seq + 1]).logits, targets[seq : seq + 1])
        for w in where:
            grads = torch.autograd.grad(losses[tokens[w] % T], plist, retain_graph=True)
            sq = 0.0
            for n, g in zip(names, grads):
                g = g.float()
                G[n] += g
                sq += float((g * g).sum(dtype=torch.float64))
                for k, d in enumerate(deltas):
                    prod = g * d[n]
                    dot[k, w] += float(prod.sum(dtype=torch.float64))
                    abs_dot[k, w] += float(prod.abs().sum(dtype=torch.float64))
            norm[w] = np.sqrt(sq)
            done += 1
            progress.update(done)
    uG = np.array(
        [
            [
                sum(float((d[n] * G[n]).sum(dtype=torch.float64)) for n in names),
                sum(float((d[n] * G[n]).abs().sum(dtype=torch.float64)) for n in names),
            ]
            for d in deltas
        ]
    )
    return {"grad_norm": norm, "dot": dot, "abs_dot": abs_dot, "uG": uG}


def displacement(model, later) -> Params:
    """θ(t′) − θ(t) per parameter name, from the later checkpoint's model."""
    theta = dict(model.named_parameters())
    other = dict(later.named_parameters())
    if set(theta) != set(other) or any(theta[n].shape != other[n].shape for n in theta):
        raise ValueError("the next checkpoint has other parameters; it belongs to another model")
    return {n: (other[n].detach().float() - theta[n].detach().float()) for n in theta}


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` sorted indices of ``range(n)`` drawn without replacement (all of them if fewer)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


@dataclass
class Directions:
    """The update directions Δθ_k of one checkpoint, what they are, and the update batches they
    were taken on (None for a displacement)."""

    deltas: list[Params]
    attrs: dict
    update_ids: torch.Tensor | None = None  # (K update batches, sequences, window) ids
    bins: np.ndarray | None = None  # (K, sequences, positions) frequency bins of the targets


def batch_backward(
    model,
    ids: torch.Tensor,
    per_pass: int,
    denominator: str = "labels",
    terms: LossTerms | None = None,
) -> None:
    """Accumulate into ``model``'s parameters the gradient of the training loss of ``ids``
    (sequences, window), ``per_pass`` sequences a pass: one update batch's gradient in bounded
    memory (a 512 × 1,024-token batch of the Zero-sum learning suite does not fit one pass).

    The loss is the sum of next-token losses over the batch divided by the number of predicted
    tokens (``denominator="labels"``, the mean) or of input ids (``"inputs"``, OLMo's trainer),
    plus the loss terms training added (``terms``: the z-loss's mean over predicted positions,
    the μ-loss of the output layer).
    """
    terms = terms or LossTerms()
    total = ids[:, 1:].numel() if denominator == "labels" else ids.numel()
    for s in _passes(ids.shape[0], per_pass):
        b = ids[s]
        out = model(input_ids=b, labels=b)
        loss = out.loss * (b[:, 1:].numel() / total)
        if terms.z_loss:
            share = b[:, 1:].numel() / ids[:, 1:].numel()
            loss = loss + terms.z_loss * share * z_loss(out.logits[:, :-1])
        loss.backward()
    if terms.mu_loss:
        (terms.mu_loss * mu_loss(model.get_output_embeddings().weight)).backward()


def optimizer_steps(
    model,
    checkpoint: str,
    step: int,
    update_path: str,
    k: int,
    device,
    per_pass: int | None = None,
    allow_pickle: bool = False,
    max_grad_norm: float | None = None,
    lr: float | None = None,
) -> Directions:
    """One optimizer step from the checkpoint's saved state (read by its format,
    ``pipeline.formats``, and checked to belong to the checkpoint: its step, the schedule's
    learning rate ``lr`` where known, the weights' sha256, finite moments) on each of the first
    ``k`` update batches (in training mode, as training took its steps), each batch's gradient
    accumulated over passes of ``sequences_per_pass(per_pass, …)`` of its windows."""
    fmt = formats.detect(checkpoint)
    state = fmt.read_optimizer(
        checkpoint, model, allow_pickle=allow_pickle, max_grad_norm=max_grad_norm, step=step
    )
    check_state(
        state,
        str(Path(checkpoint) / fmt.OPTIMIZER_FILE),
        step,
        lr=lr,
        weights_sha256=weights_sha256(checkpoint) if state.weights_sha256 else None,
    )
    ub = open_store(update_path)
    if ub.sizes["update_batch"] < k:
        raise ValueError(
            f"{update_path} holds {ub.sizes['update_batch']} update batches, update.batches asks for "
            f"{k}; delete it and re-run to draw them again"
        )
    update_ids = torch.from_numpy(ub["input_ids"].values[:k].astype(np.int64)).to(device)
    _check_ids(model, update_ids, update_path)
    n = sequences_per_pass(per_pass, update_ids.shape[-1], _vocab(model))
    model.train()
    deltas = [
        one_step(
            model,
            state,
            lambda b=b: batch_backward(model, b, n, state.loss_denominator, state.terms),
        )
        for b in update_ids
    ]
    model.eval()
    log.info("%d optimizer steps from step %d at lr %.4g", k, step, state.lr)
    attrs = {
        "direction": "optimizer",
        "direction_meaning": (
            f"one {state.kind} step from the state saved at step {step} "
            f"(optimizer step {state.step + 1}, learning rate {state.lr:.4g}) on each update batch"
        ),
        "learning_rate": state.lr,
        "optimizer_step": state.step,
        "multi_step": 0,
        "update_batches": str(ub.attrs.get("source", update_path)),
        "max_grad_norm": "none" if state.max_grad_norm is None else state.max_grad_norm,
        **{f"optimizer_{k}_from": v for k, v in state.provenance.items()},
    }
    return Directions(deltas, attrs, update_ids, ub["bin"].values[:k])


def displacement_to(
    model, next_checkpoint: str, step: int, next_step: int, device, allow_pickle: bool = False
) -> Directions:
    """The displacement θ(t′) − θ(t) to the next listed checkpoint: one, multi-step, direction."""
    later = load_checkpoint(next_checkpoint, allow_pickle=allow_pickle).to(device)
    log.info("displacement to step %d", next_step)
    attrs = {
        "direction": "displacement",
        "direction_meaning": (
            f"the displacement θ({next_step}) − θ({step}) to the next listed checkpoint: "
            f"{next_step - step} optimizer steps, not one"
        ),
        "next_step": int(next_step),
        "next_weights_sha256": weights_sha256(next_checkpoint),
        "multi_step": 1,
    }
    return Directions([displacement(model, later)], attrs)


def _check_ids(model, ids: torch.Tensor, where: str) -> None:
    V = model.get_input_embeddings().weight.shape[0]
    if ids.numel() and (int(ids.max()) >= V or int(ids.min()) < 0):
        raise ValueError(
            f"{where}: token ids span {int(ids.min())}..{int(ids.max())} but the model has {V}; "
            "it was built for another vocabulary"
        )


def changes(model, x, y, deltas: list[Params], per_pass: int) -> tuple[np.ndarray, ...]:
    """Per-token losses ``(token,)``, actual changes and first-order predictions ``(K, token)``
    along each direction."""
    loss = token_losses(model, x, y, per_pass)
    actual, pred = np.empty((len(deltas), loss.numel())), np.empty((len(deltas), loss.numel()))
    progress = Progress(log, len(deltas), "directions")
    for k, d in enumerate(deltas):
        moved = {n: p.detach() + d[n] for n, p in model.named_parameters()}
        actual[k] = (token_losses(model, x, y, per_pass, moved) - loss).cpu().numpy()
        pred[k] = first_order(model, x, y, d, per_pass)[1].cpu().numpy()
        progress.update(k + 1)
    return loss.cpu().numpy(), actual, pred


def landscapes(model, x, y, deltas: list[Params], cfg: UpdateConfig, per_pass: int) -> dict:
    """The mean landscape ``(K, alpha)`` over a seeded sample of sequences and the per-token
    cross-sections ``(K, alpha, sample)`` of a seeded sample of their tokens, whose flat indices
    into V are ``sample_token``."""
    n_seq, T = x.shape
    seqs = _sample(n_seq, cfg.landscape_sequences or n_seq, cfg.seed)
    toks = _sample(seqs.size * T, cfg.landscape_tokens, cfg.seed + 1)
    multiples = [float(a) for a in cfg.alpha]
    mean = np.empty((len(deltas), len(multiples)))
    per_token = np.empty((len(deltas), len(multiples), toks.size))
    for k, d in enumerate(deltas):
        rows = landscape(model, x[seqs], y[seqs], d, multiples, per_pass).cpu().numpy()
        mean[k], per_token[k] = rows.mean(axis=1), rows[:, toks]
    sample_token = (seqs[toks // T] * T + toks % T).astype(np.int64)
    return {"mean": mean, "per_token": per_token, "sample_token": sample_token}


def gradient_measures(
    model,
    x,
    y,
    deltas: list[Params],
    pred: np.ndarray,
    norm: np.ndarray,
    cfg: UpdateConfig,
    where: str,
) -> tuple[dict, np.ndarray]:
    """Exact per-token gradients of a seeded sample of V against each direction: ‖∇θℓ_i‖,
    cos(Δθ_k, ∇θℓ_i) and App. C.4's sums, after checking them against the forward-mode
    predictions ``pred`` (K, token) (a mismatch raises). Returns the variables and the sample."""
    n_seq, T = x.shape
    tokens = _sample(n_seq * T, cfg.gradient_tokens, cfg.seed + 2)
    grads = token_gradients(model, x, y, tokens, deltas)
    moving = norm > 0
    coh = []
    for k in range(len(deltas)):
        if not moving[k]:
            coh.append(Coherence(np.nan, np.nan, np.nan))
            continue
        # the per-token gradients against the forward-mode pass, token by token …
        p = pred[k][tokens]
        if not np.allclose(grads["dot"][k], p, rtol=1e-3, atol=1e-4 * np.abs(p).max()):
            raise AssertionError(
                f"{where}: ∇θℓ_i·Δθ from per-token gradients disagrees with the forward-mode pass"
            )
        coh.append(coherence(grads["abs_dot"][k], p, tuple(grads["uG"][k])))
        check_coherence(coh[k], p)  # … and App. C.4's identity over the sample
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = grads["dot"] / np.outer(norm, grads["grad_norm"])
    data = {
        "grad_norm": ("gradient_token", grads["grad_norm"]),
        "update_grad_cos": (
            ("update_batch", "gradient_token"),
            np.where(moving[:, None], cos, np.nan),
        ),
        "coherence_g": ("update_batch", np.array([c.C_g for c in coh])),
        "coherence_ug": ("update_batch", np.array([c.C_ug for c in coh])),
        "coherence_uG": ("update_batch", np.array([c.C_uG for c in coh])),
    }
    return data, tokens


def update_norms(deltas: list[Params], where: str, meaning: str) -> tuple[np.ndarray, np.ndarray]:
    """‖Δθ_k‖ per parameter (batch, parameter) and overall (batch). A non-finite update is an
    error naming the parameter and the batch; an update that is exactly zero is said (from the
    norms), since every loss change is then 0 and its cosines NaN."""
    names = list(deltas[0])
    norms = np.array([[float(d[n].float().norm()) for n in names] for d in deltas])
    if not np.isfinite(norms).all():
        k, i = np.argwhere(~np.isfinite(norms))[0]
        raise ValueError(
            f"{where}: the update of {names[i]} is not finite (NaN or inf) for batch {k} "
            f"({meaning}); nothing was written. Check the checkpoint's weights and optimizer "
            "state for non-finite values"
        )
    norm = np.sqrt((norms**2).sum(1))
    zero = np.flatnonzero(norm == 0).tolist()
    if zero:
        console_warning(
            log,
            f"{where}: the update is exactly zero for batch(es) {zero} ({meaning}). For a "
            "displacement this means two revisions with identical weights (a known fault of "
            "some Pythia branches; see the reduction's duplicates table): every loss change is "
            "0, and the direction's cosines and C.4 sums are NaN.",
        )
    return norms, norm


def sequences_per_pass(given: int | None, window: int, vocab: int) -> int:
    """Sequences of ``window`` tokens per forward (and backward) pass: ``given``
    (``execution.update.sequences_per_pass``), or 16k tokens a pass, fewer where the
    (tokens × V) logits would pass 2^27 entries (512 MB)."""
    return given or max(1, min(16384 // window, 2**27 // (window * vocab)))


def _vocab(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def find_directions(
    model,
    checkpoint: str,
    step: int,
    cfg: UpdateConfig,
    device,
    where: str,
    update_path: str | None = None,
    next_checkpoint: str | None = None,
    next_step: int | None = None,
    allow_pickle: bool = False,
    max_grad_norm: float | None = None,
    lr: float | None = None,
) -> Directions:
    """The K directions Δθ of ``cfg.direction``: one optimizer step from the checkpoint's saved
    state on each update batch (``update_path``), or the displacement to ``next_checkpoint``."""
    if cfg.direction == "optimizer":
        if update_path is None:
            raise ValueError(f"{where}: an optimizer step needs the update batches (update.zarr)")
        return optimizer_steps(
            model,
            checkpoint,
            step,
            update_path,
            cfg.batches,
            device,
            per_pass=cfg.sequences_per_pass,
            allow_pickle=allow_pickle,
            max_grad_norm=max_grad_norm,
            lr=lr,
        )
    if next_checkpoint is None or next_step is None:
        raise ValueError(
            f"{where} has no optimizer state and no next checkpoint: the last listed step cannot "
            "be analysed along a displacement"
        )
    return displacement_to(model, next_checkpoint, step, next_step, device, allow_pickle)


def measure_directions(
    model, x: torch.Tensor, y: torch.Tensor, dirs: Directions, cfg: UpdateConfig, where: str
) -> tuple[dict, dict]:
    """Everything measured along ``dirs`` on V (``x``, ``y``: its windows) and on the update
    batches: per-token Δℓ and Δ̃ℓ, the landscapes over α, the norms, and (``cfg.gradients``)
    the per-token gradient alignment. Returns the store's data and coordinates (those of V's
    tokens left to the caller)."""
    per_pass = sequences_per_pass(cfg.sequences_per_pass, x.shape[1], _vocab(model))
    deltas, K = dirs.deltas, len(dirs.deltas)
    norms, norm = update_norms(deltas, where, dirs.attrs["direction_meaning"])
    loss, actual, pred = changes(model, x, y, deltas, per_pass)
    if not np.isfinite(actual).any():
        raise ValueError(f"{where}: every loss change came out NaN; nothing was written")
    land = landscapes(model, x, y, deltas, cfg, per_pass)
    alpha = np.asarray([float(a) for a in cfg.alpha])
    data = {
        "loss": ("token", loss.astype(np.float32)),
        "loss_change": (("update_batch", "token"), actual.astype(np.float32)),
        "loss_change_pred": (("update_batch", "token"), pred.astype(np.float32)),
        "update_norm": ("update_batch", norm),
        "update_param_norm": (("update_batch", "param"), norms),
        "landscape_mean": (("update_batch", "alpha"), land["mean"]),
        "landscape": (("update_batch", "alpha", "sample"), land["per_token"].astype(np.float32)),
    }
    coords = {
        "update_batch": np.arange(K),
        "alpha": alpha,
        "alpha_distance": (("update_batch", "alpha"), np.outer(norm, alpha)),
        "sample_token": ("sample", land["sample_token"]),
        "param": np.arange(len(deltas[0])),
    }
    if dirs.update_ids is not None:  # the update batches themselves
        window = dirs.update_ids.shape[-1] - 1
        on_batch = sequences_per_pass(cfg.sequences_per_pass, window, _vocab(model))
        tl, tc, tp = [], [], []
        for b, d in zip(dirs.update_ids, deltas):
            loss_b, actual_b, pred_b = changes(model, b[:, :-1], b[:, 1:], [d], on_batch)
            tl.append(loss_b)
            tc.append(actual_b[0])
            tp.append(pred_b[0])
        dims = ("update_batch", "train_token")
        data.update(
            train_loss=(dims, np.stack(tl).astype(np.float32)),
            train_loss_change=(dims, np.stack(tc).astype(np.float32)),
            train_loss_change_pred=(dims, np.stack(tp).astype(np.float32)),
        )
        coords.update(
            train_token=np.arange(len(tl[0])),
            train_target=(dims, dirs.update_ids[:, :, 1:].reshape(K, -1).cpu().numpy()),
            train_bin=(dims, dirs.bins.reshape(K, -1)),
        )
    if cfg.gradients:
        grad_data, tokens = gradient_measures(model, x, y, deltas, pred, norm, cfg, where)
        data.update(grad_data)
        coords["gradient_token"] = tokens.astype(np.int64)
    return data, coords


def analyse_update(
    checkpoint: str,
    eval_path: str,
    out_path: str,
    model_name: str,
    step: int,
    cfg: UpdateConfig,
    update_path: str | None = None,
    next_checkpoint: str | None = None,
    next_step: int | None = None,
    allow_pickle: bool = False,
    max_grad_norm: float | None = None,
    lr: float | None = None,
) -> None:
    """Measure one step from ``checkpoint`` (its optimizer state and the update batches at
    ``update_path``), or the displacement to ``next_checkpoint``, and write ``out_path``
    (``results/update/{model}/step{N}.zarr``). ``cfg.direction`` is the planned one
    (``pipeline.plan``): ``optimizer`` or ``displacement``; ``lr``, where the training
    schedule is known (the toy suite's), the learning rate the saved state must hold."""
    where = f"{model_name} step {step}"
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = load_checkpoint(checkpoint, allow_pickle=allow_pickle).to(device)
    ev = open_store(eval_path)
    x = torch.from_numpy(ev["input_ids"].values.astype(np.int64)).to(device)
    y = torch.from_numpy(ev["targets"].values.astype(np.int64)).to(device)
    _check_ids(model, torch.cat([x, y], 1), eval_path)
    dirs = find_directions(
        model,
        checkpoint,
        step,
        cfg,
        device,
        where,
        update_path=update_path,
        next_checkpoint=next_checkpoint,
        next_step=next_step,
        allow_pickle=allow_pickle,
        max_grad_norm=max_grad_norm,
        lr=lr,
    )
    data, coords = measure_directions(model, x, y, dirs, cfg, where)
    coords.update(token=ev["token"].values, target=ev["target"], bin=ev["bin"])
    attrs = {
        "model": model_name,
        "step": int(step),
        "weights_sha256": weights_sha256(checkpoint),
        **dirs.attrs,
        "device": str(device),
        "pipeline_version": pipeline.__version__,
        "torch_version": torch.__version__,
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs).expand_dims(
        step=np.array([step], dtype=np.int64)
    )
    names = list(dirs.deltas[0])
    write_zarr(with_labels(conform(ds, "update"), {"param": names}), out_path)
    actual, pred = data["loss_change"][1], data["loss_change_pred"][1]
    s = change_summary(actual[0], pred[0])
    log.info(
        "eval: D %.3f, M %.4g, Pearson r(Δℓ, Δ̃ℓ) %.3f; ‖Δθ‖ %.4g; wrote %s",
        *(s["D"], s["M"], s["pearson"], data["update_norm"][1][0], out_path),
    )
