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
``pipeline.summary.summarize_updates`` reduces one model's stores over steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

import pipeline
from pipeline.checkpoints import load_checkpoint, weights_sha256
from pipeline.config import UpdateConfig
from pipeline.extract import resolve_device
from pipeline.logs import Progress, console_warning
from pipeline.maths.update import Coherence, change_summary, check_coherence, coherence
from pipeline.optimizer import has_state, one_step, read_state
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


def _batches(n: int, size: int) -> Iterator[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(n, lo + size))


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )


def token_losses(
    model, input_ids: torch.Tensor, targets: torch.Tensor, batch: int, params: Params | None = None
) -> torch.Tensor:
    """Per-token losses (float32, sequences × positions flattened) at the model's weights, or at
    ``params`` in their place."""
    out = []
    with torch.no_grad():
        for s in _batches(input_ids.shape[0], batch):
            if params is None:
                logits = model(input_ids=input_ids[s]).logits
            else:
                logits = torch.func.functional_call(model, params, (input_ids[s],)).logits
            out.append(_ce(logits, targets[s]))
    return torch.cat(out)


def first_order(
    model, input_ids: torch.Tensor, targets: torch.Tensor, delta: Params, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token losses and their first-order changes ``Δ̃ℓ_i = ∇θℓ_i · Δθ`` along ``delta``,
    for every token in one forward-mode pass (a Jacobian-vector product)."""
    names = list(delta)
    primals = tuple(dict(model.named_parameters())[n].detach() for n in names)
    tangents = tuple(delta[n] for n in names)
    losses, changes = [], []
    with forward_mode_attention():
        for s in _batches(input_ids.shape[0], batch):

            def f(*ps, s=s):
                logits = torch.func.functional_call(model, dict(zip(names, ps)), (input_ids[s],))
                return _ce(logits.logits, targets[s])

            loss, change = torch.func.jvp(f, primals, tangents)
            losses.append(loss.detach())
            changes.append(change.detach())
    return torch.cat(losses), torch.cat(changes)


def landscape(
    model,
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    delta: Params,
    multiples: list[float],
    batch: int,
) -> torch.Tensor:
    """Per-token losses ``ℓ_i(θ + m·Δθ)`` for each multiple ``m`` of the step: (alpha, token)."""
    theta = {n: p.detach() for n, p in model.named_parameters()}
    rows = []
    for m in multiples:
        moved = {n: theta[n] + m * delta[n] for n in delta}
        rows.append(token_losses(model, input_ids, targets, batch, moved))
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
) -> None:
    """Measure one step (or the displacement to ``next_checkpoint``) from ``checkpoint`` and write
    ``out_path`` (``results/update/{model}/step{N}.zarr``)."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = load_checkpoint(checkpoint).to(device)
    ev = open_store(eval_path)
    x = torch.from_numpy(ev["input_ids"].values.astype(np.int64)).to(device)
    y = torch.from_numpy(ev["targets"].values.astype(np.int64)).to(device)
    n_seq, T = x.shape
    batch = cfg.batch_size or max(1, 16384 // T)
    attrs = {
        "model": model_name,
        "step": int(step),
        "weights_sha256": weights_sha256(checkpoint),
        "device": str(device),
        "pipeline_version": pipeline.__version__,
        "torch_version": torch.__version__,
    }
    use_optimizer = cfg.direction == "optimizer" or (
        cfg.direction == "auto" and has_state(checkpoint)
    )
    train_batches = None
    if use_optimizer:
        state = read_state(checkpoint)
        if update_path is None:
            raise ValueError("an optimizer step needs the update batches (update.zarr)")
        ub = open_store(update_path)
        train_batches = torch.from_numpy(ub["input_ids"].values.astype(np.int64)).to(device)
        train_batches = train_batches[: cfg.batches]
        deltas = []
        model.train()
        for b in train_batches:
            deltas.append(one_step(model, state, lambda b=b: model(input_ids=b, labels=b).loss))
        model.eval()
        attrs.update(
            direction="optimizer",
            direction_meaning=(
                f"one AdamW step from the state saved at step {step} (optimizer step "
                f"{state.step + 1}, learning rate {state.lr:.4g}) on each update batch"
            ),
            learning_rate=state.lr,
            optimizer_step=state.step,
            multi_step=0,
        )
        log.info("%d optimizer steps from step %d at lr %.4g", len(deltas), step, state.lr)
    else:
        if next_checkpoint is None:
            raise ValueError(
                f"{model_name} step {step} has no optimizer state and no next checkpoint: the "
                "last listed step cannot be analysed along a displacement"
            )
        later = load_checkpoint(next_checkpoint).to(device)
        deltas = [displacement(model, later)]
        del later
        attrs.update(
            direction="displacement",
            direction_meaning=(
                f"the displacement θ({next_step}) − θ({step}) to the next listed checkpoint: "
                f"{next_step - step} optimizer steps, not one"
            ),
            next_step=int(next_step),
            multi_step=1,
        )
        log.info("displacement to step %d", next_step)

    names = list(deltas[0])
    K = len(deltas)
    norms = np.array([[float(d[n].float().norm()) for n in names] for d in deltas])
    update_norm = np.sqrt((norms**2).sum(1))
    moving = update_norm > 0
    if not moving.all():
        console_warning(
            log,
            f"{model_name} step {step}: the update is exactly zero for batch(es) "
            f"{np.flatnonzero(~moving).tolist()} ({attrs['direction_meaning']}). For a "
            "displacement this means two revisions with identical weights (a known fault of some "
            "Pythia branches; see the reduction's duplicates table): every loss change is 0 and "
            "the direction's cosines and C.4 sums are NaN.",
        )

    # eval: actual and first-order changes of every token of V
    loss0 = token_losses(model, x, y, batch)
    change, pred = np.empty((K, loss0.numel())), np.empty((K, loss0.numel()))
    progress = Progress(log, K, "update directions")
    for k, d in enumerate(deltas):
        moved = {n: p.detach() + d[n] for n, p in model.named_parameters()}
        change[k] = (token_losses(model, x, y, batch, moved) - loss0).cpu().numpy()
        _, pk = first_order(model, x, y, d, batch)
        pred[k] = pk.cpu().numpy()
        progress.update(k + 1)

    # the landscape: a seeded sample of sequences for the mean, of tokens for the cross-sections
    land_seq = _sample(n_seq, cfg.landscape_sequences or n_seq, cfg.seed)
    land_tok = _sample(land_seq.size * T, cfg.landscape_tokens, cfg.seed + 1)
    multiples = [float(a) for a in cfg.alpha]
    land_mean = np.empty((K, len(multiples)))
    land_token = np.empty((K, len(multiples), land_tok.size))
    for k, d in enumerate(deltas):
        rows = landscape(model, x[land_seq], y[land_seq], d, multiples, batch).cpu().numpy()
        land_mean[k] = rows.mean(axis=1)
        land_token[k] = rows[:, land_tok]
    sample_token = (land_seq[land_tok // T] * T + land_tok % T).astype(np.int64)

    data = {
        "loss": ("token", loss0.cpu().numpy().astype(np.float32)),
        "loss_change": (("batch", "token"), change.astype(np.float32)),
        "loss_change_pred": (("batch", "token"), pred.astype(np.float32)),
        "update_norm": ("batch", update_norm),
        "update_param_norm": (("batch", "param"), norms),
        "landscape_mean": (("batch", "alpha"), land_mean),
        "landscape": (("batch", "alpha", "sample"), land_token.astype(np.float32)),
    }
    coords = {
        "batch": np.arange(K),
        "token": ev["token"].values,
        "target": ev["target"],
        "bin": ev["bin"],
        "alpha": np.asarray(multiples),
        "alpha_distance": (("batch", "alpha"), np.outer(update_norm, multiples)),
        "sample_token": ("sample", sample_token),
        "param": np.arange(len(names)),
    }

    if train_batches is not None:  # the update batches themselves
        tx, ty = train_batches[:, :, :-1], train_batches[:, :, 1:]
        bins = open_store(update_path)["bin"].values[: cfg.batches]
        tl, tc, tp = (np.empty((K, tx.shape[1] * tx.shape[2])) for _ in range(3))
        for k, d in enumerate(deltas):
            moved = {n: p.detach() + d[n] for n, p in model.named_parameters()}
            before = token_losses(model, tx[k], ty[k], batch)
            tl[k] = before.cpu().numpy()
            tc[k] = (token_losses(model, tx[k], ty[k], batch, moved) - before).cpu().numpy()
            tp[k] = first_order(model, tx[k], ty[k], d, batch)[1].cpu().numpy()
        data.update(
            train_loss=(("batch", "train_token"), tl.astype(np.float32)),
            train_loss_change=(("batch", "train_token"), tc.astype(np.float32)),
            train_loss_change_pred=(("batch", "train_token"), tp.astype(np.float32)),
        )
        coords.update(
            train_token=np.arange(tl.shape[1]),
            train_target=(("batch", "train_token"), ty.reshape(K, -1).cpu().numpy()),
            train_bin=(("batch", "train_token"), bins.reshape(K, -1)[:K]),
        )

    if cfg.gradients:
        tokens = _sample(n_seq * T, cfg.gradient_tokens, cfg.seed + 2)
        grads = token_gradients(model, x, y, tokens, deltas)
        nan = Coherence(np.nan, np.nan, np.nan)
        coh = [
            coherence(grads["abs_dot"][k], pred[k][tokens], tuple(grads["uG"][k]))
            if moving[k]
            else nan
            for k in range(K)
        ]
        for k in np.flatnonzero(moving):
            # the per-token gradients against the forward-mode pass, token by token …
            scale = np.abs(pred[k][tokens]).max()
            if not np.allclose(grads["dot"][k], pred[k][tokens], rtol=1e-3, atol=1e-4 * scale):
                raise AssertionError(
                    f"{model_name} step {step}: ∇θℓ_i·Δθ from per-token gradients disagrees with "
                    "the forward-mode pass"
                )
            check_coherence(coh[k], pred[k][tokens])  # … and App. C.4's identity over the sample
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = grads["dot"] / np.outer(update_norm, grads["grad_norm"])
        data.update(
            grad_norm=("gradient_token", grads["grad_norm"]),
            update_grad_cos=(("batch", "gradient_token"), np.where(moving[:, None], cos, np.nan)),
            coherence_g=("batch", np.array([c.C_g for c in coh])),
            coherence_ug=("batch", np.array([c.C_ug for c in coh])),
            coherence_uG=("batch", np.array([c.C_uG for c in coh])),
        )
        coords["gradient_token"] = tokens.astype(np.int64)

    ds = xr.Dataset(data, coords=coords, attrs=attrs).expand_dims(
        step=np.array([step], dtype=np.int64)
    )
    if not np.isfinite(change).any():
        raise ValueError(f"{model_name} step {step}: every loss change came out NaN")
    write_zarr(with_labels(conform(ds, "update"), {"param": names}), out_path)
    s = change_summary(change[0], pred[0])
    log.info(
        "eval: D %.3f, M %.4g, Pearson r(Δℓ, Δ̃ℓ) %.3f; ‖Δθ‖ %.4g; wrote %s",
        s["D"],
        s["M"],
        s["pearson"],
        update_norm[0],
        out_path,
    )
