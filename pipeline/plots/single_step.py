"""The single-step figures of *Zero-sum learning* (Mircea et al. 2025, §3.2), from the update
stage's reductions in the summary (``pipeline.update``, ``pipeline.summary.summarize_updates``).

* ``single_step_interference``: D and M of one step's per-token loss changes on the update
  batch and on V, mean and range over the K batches, beside the multi-step D(Δ_t^{t′}ℓ) between
  checkpoints (Fig. 3b, 5);
* ``first_order``: how well Δ̃ℓ_i = ∇θℓ_i·Δθ predicts Δℓ_i: Pearson r over training and a 2-D
  histogram at one step (Fig. 4);
* ``landscape_tokens``: per-token loss cross-sections along Δθ, coloured by whether the token
  improved at the actual step (Figs. 7–8);
* ``landscape``: the overall loss change along Δθ over (step, α) (Figs. 9–10);
* ``alignment``: cos(Δθ, ∇θℓ_i), ‖Δθ‖‖∇θℓ_i‖ and App. C.4's C_g and C_u over training (Fig. 6).

Where a model has no optimizer states, the direction is the displacement to the next
checkpoint, a multi-step quantity: every figure says which direction it shows.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.plots.common import (
    View,
    legend_below,
    line,
    note_figure,
    panels,
    row_per_model,
    step_axis,
    zero_line,
)
from pipeline.schema import overall, update_summary

IMPROVED, WORSENED = "#1b9e77", "#d95f02"


def _direction(ds: xr.Dataset) -> str:
    """The direction the figures show, in words."""
    kinds = set((ds.attrs.get("update_direction") or {}).values())
    if kinds == {"optimizer"}:
        return "one optimizer step Δθ from the state saved at each checkpoint"
    if kinds == {"displacement"}:
        return (
            "the displacement Δθ = θ(t′) − θ(t) to the next checkpoint (multi-step, not one step)"
        )
    return "one optimizer step where the model has optimizer states, else the displacement to the next checkpoint"


def _nanmean(v: np.ndarray, axis: int) -> np.ndarray:
    """The mean of the finite values along ``axis``; NaN (without a warning) where there are
    none (the steps without update measurements)."""
    ok = np.isfinite(v)
    n = ok.sum(axis)
    total = np.where(ok, v, 0.0).sum(axis)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _missing(ds: xr.Dataset, var: str, title: str) -> Figure | None:
    if var not in ds:
        return note_figure(title, "the update stage was not run (no update stores)")
    return None


def _update_steps(view: View, var: str) -> np.ndarray:
    """The steps that have update measurements."""
    v = np.asarray(view.ds[var].values, dtype=np.float64)
    keep = np.isfinite(v).reshape(v.shape[0], v.shape[1], -1).any(axis=(0, 2))
    return view.steps[keep]


def _band(ax: Axes, view: View, var: str, model: str, **style) -> Line2D | None:
    """Mean over the update batches (a line) and their range (a band), over steps."""
    v = view.values(var, model)
    if v is None:
        return None
    ok = np.isfinite(v).any(axis=1)
    if not ok.any():
        return None
    steps, v = view.steps[ok], v[ok]
    mean = _nanmean(v, axis=1)
    if v.shape[1] > 1:
        ax.fill_between(
            steps, np.nanmin(v, 1), np.nanmax(v, 1), color=style.get("color"), alpha=0.18, lw=0
        )
    return line(ax, steps, mean, marker="o", ms=3, **style)


def plot_single_step_interference(ds: xr.Dataset) -> Figure:
    """Single-step D and M on the update batch (train) and on V (eval), mean and range over
    the K update batches, beside the multi-step loss-change interference between checkpoint
    pairs (Fig. 3b, 5)."""
    title = "Single-step loss-change interference"
    if (fig := _missing(ds, update_summary("eval", "D"), title)) is not None:
        return fig
    view, fig, axes = panels(ds, row_per_model(2), panel=(4.6, 2.6), margin=(0.0, 1.3))
    for (ax_d, ax_m), model in zip(axes, view.models):
        c = view.colors[model]
        for s, ls in (("eval", "-"), ("train", "--")):
            _band(ax_d, view, update_summary(s, "D"), model, color=c, ls=ls)
            _band(ax_m, view, update_summary(s, "M"), model, color=c, ls=ls)
        pairs = {"color": "k", "ls": ":", "marker": "s", "ms": 2.5}  # between checkpoints
        line(ax_d, view.steps, view.values(overall("interference"), model), **pairs)
        line(ax_m, view.steps, view.values(overall("change_magnitude"), model), **pairs)
        ax_d.set_ylim(-0.03, 1.03)
        ax_d.set_ylabel(f"{model}\ninterference D")
        ax_m.set_yscale("log")
        ax_m.set_ylabel("M: mean |Δℓ| (nats)")
        step_axis(ax_d)
        step_axis(ax_m)
    axes[0, 0].set_title("interference D")
    axes[0, 1].set_title("magnitude M")
    grey = "0.3"
    legend_below(
        fig,
        [
            Line2D([], [], color=grey, label="held-out V (eval), mean over batches"),
            Line2D([], [], color=grey, ls="--", label="update batch (train)"),
            Line2D([], [], color=grey, lw=6, alpha=0.2, label="range over the K batches"),
            Line2D(
                [], [], color="k", ls=":", marker="s", ms=2.5, label="between checkpoints t, t′"
            ),
        ],
        ncols=2,
    )
    fig.suptitle(f"{title}\nalong {_direction(ds)}", fontsize=10)
    return fig


def _middle_step(steps: np.ndarray) -> int:
    """The update step nearest the geometric middle of the positive ones."""
    pos = steps[steps > 0]
    if not pos.size:
        return int(steps[0])
    mid = np.exp(np.log(pos).mean())
    return int(pos[np.argmin(np.abs(np.log(pos) - np.log(mid)))])


def plot_first_order(ds: xr.Dataset) -> Figure:
    """First-order validity (Fig. 4): Pearson r(Δℓ_i, Δ̃ℓ_i) over training on V and on the
    update batch, and a 2-D histogram of Δ̃ℓ_i against Δℓ_i at one step for the sampled tokens
    of V, with the line Δ̃ℓ = Δℓ."""
    title = "First-order prediction ∇θℓ·Δθ against the actual loss change Δℓ"
    if (fig := _missing(ds, "sample_loss_change", title)) is not None:
        return fig
    view, fig, axes = panels(ds, row_per_model(2), panel=(4.4, 2.9), margin=(0.8, 1.2))
    at = _middle_step(_update_steps(view, "sample_loss_change"))
    for (ax_r, ax_h), model in zip(axes, view.models):
        c = view.colors[model]
        _band(ax_r, view, update_summary("eval", "pearson"), model, color=c)
        _band(ax_r, view, update_summary("train", "pearson"), model, color=c, ls="--")
        r = view.values(update_summary("eval", "pearson"), model)
        low = np.nanmin(r) if r is not None and np.isfinite(r).any() else 0.0
        ax_r.set_ylim(min(0.9, low - 0.02), 1.005)
        ax_r.axhline(1.0, color="0.6", lw=0.6)
        ax_r.set_ylabel(f"{model}\nPearson r(Δℓ, ∇θℓ·Δθ)")
        step_axis(ax_r)
        actual = view.values("sample_loss_change", model, step=at)
        pred = view.values("sample_loss_change_pred", model, step=at)
        ok = np.isfinite(actual) & np.isfinite(pred)
        if ok.sum() > 1:
            lim = float(np.quantile(np.abs(np.r_[actual[ok], pred[ok]]), 0.995)) * 1.05 or 1.0
            edges = np.linspace(-lim, lim, 61)
            *_, image = ax_h.hist2d(
                actual[ok], pred[ok], bins=[edges, edges], cmap="viridis", norm=LogNorm(), cmin=1
            )
            ax_h.plot([-lim, lim], [-lim, lim], color="k", ls="--", lw=0.8)
            zero_line(ax_h)
            ax_h.axvline(0, color="0.5", lw=0.6)
            fig.colorbar(image, ax=ax_h, label="tokens", pad=0.01)
        ax_h.set_xlabel("actual Δℓ (nats)")
        ax_h.set_ylabel("first-order ∇θℓ·Δθ (nats)")
        ax_h.set_aspect("equal", adjustable="box")
    axes[0, 0].set_title("Pearson r over training (mean, range over batches)")
    axes[0, 1].set_title(f"sampled tokens of V at step {at}")
    legend_below(
        fig,
        [
            Line2D([], [], color="0.3", label="held-out V"),
            Line2D([], [], color="0.3", ls="--", label="update batch"),
            Line2D([], [], color="k", ls="--", lw=0.8, label="prediction = actual"),
        ],
    )
    fig.suptitle(f"{title}\nalong {_direction(ds)}", fontsize=10)
    return fig


def _spread_steps(steps: np.ndarray, most: int = 4) -> np.ndarray:
    """At most ``most`` steps spread evenly (in order) over ``steps``."""
    if steps.size <= most:
        return steps
    return steps[np.unique(np.round(np.linspace(0, steps.size - 1, most)).astype(int))]


def plot_landscape_tokens(ds: xr.Dataset) -> Figure:
    """Per-token loss cross-sections ℓ_i(θ + α·Δθ/‖Δθ‖) − ℓ_i(θ) along the first update batch's
    direction, for up to 60 sampled tokens of V; rows are steps, columns models; green where the
    token's loss fell at the actual step (α = ‖Δθ‖, the dashed line), orange where it rose
    (Figs. 7–8)."""
    title = "Per-token loss landscapes along the update"
    if (fig := _missing(ds, "landscape_token", title)) is not None:
        return fig
    view = View.of(ds)
    steps = _spread_steps(_update_steps(view, "landscape_token"))
    n_models = len(view.models)
    fig = Figure(figsize=(1.0 + 3.2 * n_models, 1.3 + 2.4 * steps.size), layout="constrained")
    axes = fig.subplots(steps.size, n_models, squeeze=False)
    alpha = ds["alpha"].values
    shown = np.arange(min(60, ds.sizes["sample"]))
    for j, model in enumerate(view.models):
        for i, step in enumerate(steps):
            ax = axes[i, j]
            curves = view.values("landscape_token", model, step=int(step))  # (alpha, sample)
            improved = view.values("sample_improved", model, step=int(step))
            zero = int(np.flatnonzero(alpha == 0)[0])
            for s in shown:
                y = curves[:, s] - curves[zero, s]
                if np.isfinite(y).all():
                    ax.plot(
                        alpha,
                        y,
                        color=IMPROVED if improved[s] > 0.5 else WORSENED,
                        lw=0.7,
                        alpha=0.45,
                    )
            ax.axvline(1.0, color="k", ls="--", lw=0.8)
            zero_line(ax)
            ax.grid(True, alpha=0.25)
            if i == 0:
                ax.set_title(model, color=view.colors[model])
            ax.set_ylabel(
                f"step {int(step)}\nℓ_i(α) − ℓ_i(0) (nats)" if j == 0 else "ℓ_i(α) − ℓ_i(0)"
            )
            ax.set_xlabel("α in steps (α / ‖Δθ‖)")
    legend_below(
        fig,
        [
            Line2D([], [], color=IMPROVED, label="token improved at the actual step"),
            Line2D([], [], color=WORSENED, label="token got worse"),
            Line2D([], [], color="k", ls="--", lw=0.8, label="the actual step, α = ‖Δθ‖"),
        ],
    )
    fig.suptitle(f"{title}\nalong {_direction(ds)}", fontsize=10)
    return fig


def plot_landscape(ds: xr.Dataset) -> Figure:
    """The mean loss change ΔL(α) = L(θ + α·Δθ/‖Δθ‖) − L(θ) over V, mean over the update
    batches, as a heat map over (step, α) per model, symmetric-log colours (blue: lower loss),
    the actual step α = ‖Δθ‖ marked (Figs. 9–10)."""
    title = "Overall loss landscape along the update over training"
    if (fig := _missing(ds, "landscape_change", title)) is not None:
        return fig
    view, fig, axes = panels(ds, lambda n: (1, n), panel=(3.6, 3.4), margin=(1.0, 0.9), sharey=True)
    steps = _update_steps(view, "landscape_change")
    alpha = ds["alpha"].values
    change = {m: _nanmean(view.values("landscape_change", m), axis=1) for m in view.models}
    finite = np.concatenate([v[np.isfinite(v)] for v in change.values()])
    vmax = float(np.abs(finite).max()) if finite.size else 1.0
    pos = np.abs(finite[finite != 0])
    linthresh = float(np.quantile(pos, 0.1)) if pos.size else 1e-6
    norm = SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax, base=10)
    rows = np.isin(view.steps, steps)
    image = None
    for ax, model in zip(axes[0], view.models):
        grid = change[model][rows]  # (step, alpha)
        image = ax.pcolormesh(
            np.arange(alpha.size + 1) - 0.5,
            np.arange(steps.size + 1) - 0.5,
            grid,
            cmap="RdBu_r",
            norm=norm,
            shading="flat",
        )
        one = int(np.flatnonzero(alpha == 1)[0])
        ax.axvline(one, color="k", ls="--", lw=0.9)
        ax.set_xticks(np.arange(alpha.size)[:: max(1, alpha.size // 7)])
        ax.set_xticklabels([f"{a:g}" for a in alpha[:: max(1, alpha.size // 7)]])
        ax.set_yticks(np.arange(steps.size))
        ax.set_yticklabels([str(int(s)) for s in steps])
        ax.set_xlabel("α in steps (α / ‖Δθ‖)")
        ax.set_ylabel("training step")
        ax.set_title(model, color=view.colors[model])
    fig.colorbar(image, ax=axes[0].tolist(), label="ΔL(α) (nats, symlog)", pad=0.01)
    fig.suptitle(f"{title} (dashed: the actual step)\nalong {_direction(ds)}", fontsize=10)
    return fig


def _quantile_band(ax: Axes, steps: np.ndarray, values: np.ndarray | None, **style) -> None:
    """Median (line) and 10–90% range (band) over the last axis, per step."""
    if values is None:
        return
    ok = np.isfinite(values).any(axis=1)
    if not ok.any():
        return
    q = np.nanquantile(values[ok], [0.1, 0.5, 0.9], axis=1)
    ax.fill_between(steps[ok], q[0], q[2], color=style.get("color"), alpha=0.18, lw=0)
    line(ax, steps[ok], q[1], marker="o", ms=3, **style)


def plot_alignment(ds: xr.Dataset) -> Figure:
    """Update–gradient alignment (Fig. 6) and App. C.4's coordinate sums: per model, the
    cosine cos(Δθ, ∇θℓ_i) and the norm product ‖Δθ‖‖∇θℓ_i‖ over the sampled tokens (median,
    10–90% band), and C_g and C_u (mean, range over the update batches), whose product is
    1 − D(Δ̃ℓ)."""
    title = "Update–gradient alignment and coordinate-wise coherence"
    if "update_grad_cos" not in ds:
        return note_figure(title, "per-token gradients were not measured (update.gradients)")
    view, fig, axes = panels(ds, row_per_model(3), panel=(3.8, 2.5), margin=(0.0, 1.2))
    for (ax_c, ax_n, ax_g), model in zip(axes, view.models):
        c = view.colors[model]
        cos = view.values("update_grad_cos", model)
        _quantile_band(ax_c, view.steps, cos, color=c)
        zero_line(ax_c)
        ax_c.set_ylabel(f"{model}\ncos(Δθ, ∇θℓ_i)")
        norm = view.values("grad_norm", model)
        upd = view.values("update_norm", model)
        if norm is not None and upd is not None:
            _quantile_band(ax_n, view.steps, norm * _nanmean(upd, axis=1)[:, None], color=c)
        ax_n.set_yscale("log")
        ax_n.set_ylabel("‖Δθ‖ ‖∇θℓ_i‖")
        _band(ax_g, view, "coherence_g", model, color=c)
        _band(ax_g, view, "coherence_u", model, color=c, ls="--")
        ax_g.set_yscale("log")
        ax_g.set_ylabel("C_g, C_u")
        for ax in (ax_c, ax_n, ax_g):
            step_axis(ax)
    axes[0, 0].set_title("alignment\n(median, 10–90%)")
    axes[0, 1].set_title("norm product\n(median, 10–90%)")
    axes[0, 2].set_title("App. C.4: C_g · C_u\n= 1 − D(∇θℓ·Δθ)")
    legend_below(
        fig,
        [
            Line2D([], [], color="0.3", label="C_g: coordinate-wise coherence of the gradients"),
            Line2D([], [], color="0.3", ls="--", label="C_u = C_uG / C_ug"),
        ],
    )
    fig.suptitle(f"{title}\nalong {_direction(ds)}", fontsize=10)
    return fig
