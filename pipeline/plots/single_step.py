"""The single-step figures of *Zero-sum learning* (Mircea et al. 2025, §3.2), from the update
stage's reductions in the summary (``pipeline.update``, ``pipeline.reduce.reduce_updates``).

* ``single_step_interference``: D and M of one step's per-token loss changes on the update
  batch and on V, mean and range over the K batches, beside the multi-step D(Δ_t^{t′}ℓ) between
  checkpoints (Fig. 3b, 5);
* ``first_order``: how well Δ̃ℓ_i = ∇θℓ_i·Δθ predicts Δℓ_i: 1 − Pearson r over training (log:
  r is within a few thousandths of 1) and a 2-D histogram at one step (Fig. 4);
* ``landscape_tokens``: per-token loss cross-sections along Δθ, coloured by whether the token
  improved at the actual step (Figs. 7–8);
* ``landscape``: the overall loss change along Δθ over (step, α) (Figs. 9–10);
* ``alignment``: cos(Δθ, ∇θℓ_i), ‖Δθ‖‖∇θℓ_i‖ and App. C.4's C_g and C_u over training (Fig. 6).

Where a model has no optimizer states, the direction is the displacement to the next
checkpoint, a multi-step quantity that has no update batch: every figure says which direction
it shows, and lists only the sets it draws.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.plots.common import (
    MARKERS_UP_TO,
    View,
    dots,
    finite_mean,
    handle_of,
    legend_below,
    line,
    log_labels,
    log_line,
    note,
    note_figure,
    panel_title,
    panels,
    row_per_model,
    step_axis,
    suptitle,
    zero_handle,
    zero_line,
)
from pipeline.schema import overall, update_summary

IMPROVED, WORSENED = "#1b9e77", "#d95f02"
GREY = "0.3"


def _kinds(ds: xr.Dataset) -> set[str]:
    """The models' update directions: ``optimizer``, ``displacement`` or both."""
    return set((ds.attrs.get("update_direction") or {}).values())


def _direction(ds: xr.Dataset) -> str:
    """The direction the figures show, in words."""
    kinds = _kinds(ds)
    if kinds == {"optimizer"}:
        return "one optimizer step Δθ from the state saved at each checkpoint"
    if kinds == {"displacement"}:
        return (
            "the displacement Δθ = θ(t′) − θ(t) to the next checkpoint (multi-step, not one step)"
        )
    return "one optimizer step where the model has optimizer states, else the displacement to the next checkpoint"


def _actual(ds: xr.Dataset) -> str:
    """What α = ‖Δθ‖ reaches: the step taken, or the next checkpoint."""
    kinds = _kinds(ds)
    if kinds == {"displacement"}:
        return "the next checkpoint"
    return "the actual step" if kinds == {"optimizer"} else "the actual step (or next checkpoint)"


def _step_axis(ax: Axes) -> None:
    """``common.step_axis`` with a margin on the right too: the last update step is often the
    last step, and its markers must not be cut in half."""
    step_axis(ax)
    right = ax.get_xlim()[1]
    if right > 1:
        ax.set_xlim(right=right * 1.35)


def _missing(ds: xr.Dataset, var: str, title: str) -> Figure | None:
    if var not in ds:
        return note_figure(title, "the update stage was not run (no update stores)")
    return None


def _update_steps(view: View, var: str) -> np.ndarray:
    """The steps that have update measurements."""
    v = np.asarray(view.ds[var].values, dtype=np.float64)
    keep = np.isfinite(v).reshape(v.shape[0], v.shape[1], -1).any(axis=(0, 2))
    return view.steps[keep]


def _range(ax: Axes, steps, lo, hi, color, log: bool):
    """A range per step: a band where there are more than ``MARKERS_UP_TO`` steps, else a bar
    at each (a band between two or three points suggests a trend nothing measured)."""
    if log:  # a bound at 0 has no place on a log axis: the range starts at the axis's floor
        lo = np.where(lo > 0, lo, np.nan)
        hi = np.where(hi > 0, hi, np.nan)
    ok = np.isfinite(lo) & np.isfinite(hi) & (hi > lo)
    if not ok.any():
        return None
    if len(steps) <= MARKERS_UP_TO:
        return ax.vlines(steps[ok], lo[ok], hi[ok], color=color, alpha=0.3, lw=5)
    return ax.fill_between(steps, lo, hi, color=color, alpha=0.18, lw=0)


def _band(ax: Axes, steps: np.ndarray, v: np.ndarray | None, log: bool = False, **style):
    """Mean over the update batches (a line, markers alone at up to three steps) and their range
    (a band, or bars), over steps, of ``v`` (step, batch). On a log axis (``log``) a mean of 0
    is a zero marker on the floor. Returns the mean's line, the range and the zeros' marker,
    each None where nothing was drawn."""
    if v is None or not np.isfinite(v).any():
        return None, None, None
    ok = np.isfinite(v).any(axis=1)
    steps, v = steps[ok], v[ok]
    mean = finite_mean(v, axis=1)
    span = None
    if v.shape[1] > 1:
        span = _range(ax, steps, np.nanmin(v, 1), np.nanmax(v, 1), style.get("color"), log)
    style = dots(mean, **style)
    if log:
        drawn, zeros = log_line(ax, steps, mean, **style)
        return drawn, span, zeros
    return line(ax, steps, mean, **style), span, None


#: The two sets of the single-step changes: held-out V and the update batch itself (an
#: optimizer step has one; a displacement does not), and how each is drawn.
SETS = {
    "eval": {"ls": "-"},
    "train": {"ls": "--", "mfc": "none"},
}


class Drawn(dict):
    """The first artist drawn of each kind of series (None: none drawn), for the legend."""

    def keep(self, **artists) -> None:
        for kind, artist in artists.items():
            if self.get(kind) is None:
                self[kind] = artist


def _range_handle(span, label: str) -> Line2D | None:
    """The legend entry of the ranges drawn: a band or a bar."""
    if span is None:
        return None
    if type(span).__name__ == "LineCollection":  # bars
        return Line2D([], [], color=GREY, ls="", marker="|", ms=10, mew=5, alpha=0.3, label=label)
    return Line2D([], [], color=GREY, lw=6, alpha=0.2, label=label)


def _over_batches(ds: xr.Dataset) -> str:
    """ "the K update batches", or "" where there is one direction only (a displacement)."""
    k = ds.sizes.get("update_batch", 1)
    return f"the {k} update batches" if k > 1 else ""


def _set_labels(ds: xr.Dataset) -> dict[str, str]:
    over = _over_batches(ds)
    mean = f", mean over {over}" if over else ""
    return {"eval": f"held-out V (eval){mean}", "train": f"update batch (train){mean}"}


def plot_single_step_interference(ds: xr.Dataset) -> Figure:
    """Single-step D and M on the update batch (train, an optimizer step only) and on V (eval),
    mean and range over the K update batches, beside the multi-step loss-change interference
    between checkpoint pairs (Fig. 3b, 5)."""
    title = "Single-step loss-change interference"
    if (fig := _missing(ds, update_summary("eval", "D"), title)) is not None:
        return fig
    view, fig, axes = panels(ds, row_per_model(2), panel=(4.6, 2.6), margin=(0.0, 1.3))
    drawn = Drawn()
    for (ax_d, ax_m), model in zip(axes, view.models):
        c = view.colors[model]
        for s, style in SETS.items():
            d, span, _ = _band(
                ax_d, view.steps, view.values(update_summary(s, "D"), model), color=c, **style
            )
            m, span_m, zero = _band(
                ax_m,
                view.steps,
                view.values(update_summary(s, "M"), model),
                log=True,
                color=c,
                **style,
            )
            drawn.keep(**{s: d or m, "range": span or span_m, "zero": zero})
        pairs = {"color": "k", "ls": ":", "marker": "s", "ms": 2.5}  # between checkpoints
        d_pairs = view.values(overall("interference"), model)
        m_pairs = view.values(overall("change_magnitude"), model)
        p = line(ax_d, view.steps, d_pairs, **dots(d_pairs, **pairs))
        p_m, zero = log_line(ax_m, view.steps, m_pairs, **dots(m_pairs, **pairs))
        drawn.keep(pairs=p or p_m, zero=zero)
        ax_d.set_ylim(-0.03, 1.03)
        ax_d.set_ylabel(f"{model}\ninterference D")
        ax_m.set_yscale("log")
        log_labels(ax_m.yaxis)
        ax_m.set_ylabel("M: mean |Δℓ| (nats)")
        _step_axis(ax_d)
        _step_axis(ax_m)
    panel_title(axes[0, 0], "interference D")
    panel_title(axes[0, 1], "magnitude M (log)")
    labels = _set_labels(ds)
    legend_below(
        fig,
        [
            *(handle_of(drawn.get(s), labels[s]) for s in SETS),
            _range_handle(drawn.get("range"), f"range over {_over_batches(ds)}"),
            handle_of(drawn.get("pairs"), "between checkpoints t, t′", color="k"),
            zero_handle(GREY) if drawn.get("zero") else None,
        ],
        ncols=2,
    )
    suptitle(fig, f"{title}\nalong {_direction(ds)}", fontsize=10)
    return fig


def _middle_step(steps: np.ndarray) -> int:
    """The update step nearest the geometric middle of the positive ones."""
    pos = steps[steps > 0]
    if not pos.size:
        return int(steps[0])
    mid = np.exp(np.log(pos).mean())
    return int(pos[np.argmin(np.abs(np.log(pos) - np.log(mid)))])


def plot_first_order(ds: xr.Dataset) -> Figure:
    """First-order validity (Fig. 4): 1 − Pearson r(Δℓ_i, Δ̃ℓ_i) over training on V and on the
    update batch, on a log axis (r itself is within a few thousandths of 1), and a 2-D histogram
    of Δ̃ℓ_i against Δℓ_i at one step for the sampled tokens of V, with the line Δ̃ℓ = Δℓ."""
    title = "First-order prediction ∇θℓ·Δθ against the actual loss change Δℓ"
    if (fig := _missing(ds, "sample_loss_change", title)) is not None:
        return fig
    view, fig, axes = panels(ds, row_per_model(2), panel=(4.4, 2.9), margin=(0.8, 1.2))
    at = _middle_step(_update_steps(view, "sample_loss_change"))
    drawn = Drawn()
    for (ax_r, ax_h), model in zip(axes, view.models):
        c = view.colors[model]
        for s, style in SETS.items():
            r = view.values(update_summary(s, "pearson"), model)
            mean, span, zero = _band(
                ax_r, view.steps, None if r is None else 1 - r, log=True, color=c, **style
            )
            drawn.keep(**{s: mean, "range": span, "zero": zero})
        ax_r.set_yscale("log")
        log_labels(ax_r.yaxis)
        ax_r.set_ylabel(f"{model}\n1 − Pearson r(Δℓ, ∇θℓ·Δθ)")
        _step_axis(ax_r)
        drawn.keep(diagonal=_histogram(fig, ax_h, view, model, at))
    over = _over_batches(ds)
    panel_title(
        axes[0, 0], f"1 − r over training (log){f'; mean, range over {over}' if over else ''}"
    )
    panel_title(axes[0, 1], f"sampled tokens of V at step {at}")
    labels = {"eval": "held-out V", "train": "update batch"}
    legend_below(
        fig,
        [
            *(handle_of(drawn.get(s), labels[s]) for s in SETS),
            _range_handle(drawn.get("range"), f"range over {over}"),
            zero_handle(GREY) if drawn.get("zero") else None,
            handle_of(drawn.get("diagonal"), "prediction = actual", color="k"),
        ],
    )
    suptitle(fig, f"{title}\nalong {_direction(ds)}", fontsize=10)
    return fig


def _histogram(fig: Figure, ax: Axes, view: View, model: str, at: int) -> Line2D | None:
    """The 2-D histogram of the first-order prediction against the actual change of the sampled
    tokens of V at step ``at``, with its colorbar; returns the line prediction = actual (None,
    and a note, where the model has no sample at that step)."""
    actual = view.values("sample_loss_change", model, step=at)
    pred = view.values("sample_loss_change_pred", model, step=at)
    ok = np.isfinite(actual) & np.isfinite(pred)
    ax.set_xlabel("actual Δℓ (nats)")
    ax.set_ylabel("first-order ∇θℓ·Δθ (nats)")
    if ok.sum() < 2 or not np.abs(np.r_[actual[ok], pred[ok]]).max() > 0:
        note(ax, f"no sampled changes of {model} at step {at}", keep_axes=True)
        return None
    lim = float(np.quantile(np.abs(np.r_[actual[ok], pred[ok]]), 0.995)) * 1.05
    edges = np.linspace(-lim, lim, 61)
    *_, image = ax.hist2d(
        actual[ok], pred[ok], bins=[edges, edges], cmap="viridis", norm=LogNorm(), cmin=1
    )
    diagonal = ax.plot([-lim, lim], [-lim, lim], color="k", ls="--", lw=0.8)[0]
    zero_line(ax)
    ax.axvline(0, color="0.5", lw=0.6)
    log_labels(fig.colorbar(image, ax=ax, label="tokens (log)", pad=0.01).ax.yaxis)
    ax.set_aspect("equal", adjustable="box")
    return diagonal


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
    fig.get_layout_engine().set(w_pad=0.08)  # each column's y label clear of its neighbour
    axes = fig.subplots(steps.size, n_models, squeeze=False)
    alpha = ds["alpha"].values
    shown = np.arange(min(60, ds.sizes["sample"]))
    actual = _actual(ds)
    drawn = Drawn()
    for j, model in enumerate(view.models):
        for i, step in enumerate(steps):
            ax = axes[i, j]
            curves = view.values("landscape_token", model, step=int(step))  # (alpha, sample)
            improved = view.values("sample_improved", model, step=int(step))
            zero = int(np.flatnonzero(alpha == 0)[0])
            for s in shown:
                y = curves[:, s] - curves[zero, s]
                if np.isfinite(y).all():
                    kind = "improved" if improved[s] > 0.5 else "worsened"
                    color = IMPROVED if kind == "improved" else WORSENED
                    drawn.keep(**{kind: ax.plot(alpha, y, color=color, lw=0.7, alpha=0.45)[0]})
            actual_line = ax.axvline(1.0, color="k", ls="--", lw=0.8)
            zero_line(ax)
            ax.grid(True, alpha=0.25)
            if not ax.get_lines()[:-1]:  # the actual step's line only
                note(ax, f"no sampled cross-section of {model} at step {int(step)}", True)
            if i == 0:
                panel_title(ax, model, color=view.colors[model])
            ax.set_ylabel(
                f"step {int(step)}\nℓ_i(α) − ℓ_i(0) (nats)" if j == 0 else "ℓ_i(α) − ℓ_i(0)"
            )
            ax.set_xlabel("α / ‖Δθ‖")
    legend_below(
        fig,
        [
            handle_of(drawn.get("improved"), f"token improved at {actual}", color=IMPROVED),
            handle_of(drawn.get("worsened"), "token got worse", color=WORSENED),
            handle_of(actual_line, f"{actual}, α = ‖Δθ‖", color="k"),
        ],
    )
    suptitle(fig, f"{title}\nalong {_direction(ds)}", fontsize=10)
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
    change = {m: finite_mean(view.values("landscape_change", m), axis=1) for m in view.models}
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
        ax.set_xlabel("α / ‖Δθ‖")
        ax.set_ylabel("training step")
        panel_title(ax, model, color=view.colors[model])
    fig.colorbar(image, ax=axes[0].tolist(), label="ΔL(α) (nats, symlog)", pad=0.01)
    suptitle(fig, f"{title} (dashed: {_actual(ds)})\nalong {_direction(ds)}", fontsize=10)
    return fig


def _quantile_band(
    ax: Axes, steps: np.ndarray, values: np.ndarray | None, log: bool = False, **style
):
    """Median (line, markers alone at up to three steps) and 10–90% range (band, or bars) over
    the last axis, per step; on a log axis (``log``) a median of 0 is a zero marker on the
    floor. Returns the median's line and the zeros' marker (None where nothing was drawn)."""
    if values is None or not np.isfinite(values).any():
        return None, None
    ok = np.isfinite(values).any(axis=1)
    q = np.nanquantile(values[ok], [0.1, 0.5, 0.9], axis=1)
    _range(ax, steps[ok], q[0], q[2], style.get("color"), log)
    style = dots(q[1], **style)
    if log:
        return log_line(ax, steps[ok], q[1], **style)
    return line(ax, steps[ok], q[1], **style), None


def plot_alignment(ds: xr.Dataset) -> Figure:
    """Update–gradient alignment (Fig. 6) and App. C.4's coordinate sums: per model, the
    cosine cos(Δθ, ∇θℓ_i) and the norm product ‖Δθ‖‖∇θℓ_i‖ over the sampled tokens (median,
    10–90% band), and C_g and C_u (mean, range over the update batches), whose product is
    1 − D(Δ̃ℓ)."""
    title = "Update–gradient alignment and coordinate-wise coherence"
    if "update_grad_cos" not in ds:
        return note_figure(title, "per-token gradients were not measured (update.gradients)")
    view, fig, axes = panels(ds, row_per_model(3), panel=(3.8, 2.5), margin=(0.0, 1.2))
    drawn = Drawn()
    for (ax_c, ax_n, ax_g), model in zip(axes, view.models):
        c = view.colors[model]
        cos = view.values("update_grad_cos", model)
        _quantile_band(ax_c, view.steps, cos, color=c)
        zero_line(ax_c)
        ax_c.set_ylabel(f"{model}\ncos(Δθ, ∇θℓ_i)")
        norm = view.values("grad_norm", model)
        upd = view.values("update_norm", model)
        if norm is not None and upd is not None:
            product = norm * finite_mean(upd, axis=1)[:, None]
            _, zero = _quantile_band(ax_n, view.steps, product, log=True, color=c)
            drawn.keep(zero=zero)
        ax_n.set_yscale("log")
        log_labels(ax_n.yaxis)
        ax_n.set_ylabel("‖Δθ‖ ‖∇θℓ_i‖")
        g, span, zero_g = _band(
            ax_g, view.steps, view.values("coherence_g", model), log=True, color=c, **SETS["eval"]
        )
        u, span_u, zero_u = _band(
            ax_g, view.steps, view.values("coherence_u", model), log=True, color=c, **SETS["train"]
        )
        drawn.keep(g=g, u=u, range=span or span_u, zero=zero_g or zero_u)
        ax_g.set_yscale("log")
        log_labels(ax_g.yaxis)
        ax_g.set_ylabel("C_g, C_u (log)")
        for ax in (ax_c, ax_n, ax_g):
            _step_axis(ax)
    panel_title(axes[0, 0], "alignment (median, 10–90% of the tokens)")
    panel_title(axes[0, 1], "norm product (median, 10–90%, log)")
    panel_title(axes[0, 2], "App. C.4: C_g · C_u = 1 − D(∇θℓ·Δθ)")
    over = _over_batches(ds)
    legend_below(
        fig,
        [
            handle_of(drawn.get("g"), "C_g: coordinate-wise coherence of the gradients"),
            handle_of(drawn.get("u"), "C_u = C_uG / C_ug"),
            _range_handle(drawn.get("range"), f"C's range over {over}"),
            zero_handle(GREY) if drawn.get("zero") else None,
        ],
    )
    suptitle(fig, f"{title}\nalong {_direction(ds)}", fontsize=10)
    return fig
