"""The figures of *Zero-sum learning* (Mircea et al. 2025).

* ``bnsl``: each model's overall loss with its smoothly broken power-law fit, the deceleration
  point and the post-break power law extrapolated to the last step (Fig. 1), and the fitted
  numbers (Table 2). The fits are the summary's per-model ``bnsl_*`` variables and its
  ``attrs["bnsl_flag"]``;
* ``interference``: loss-change interference D and magnitude M between checkpoint pairs (Fig. 2);
* ``layer_interference``: the parameter-level interference D_W per transformer block (Fig. 3a).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from pipeline.maths.bnsl import bnsl as bnsl_curve
from pipeline.plots.common import (
    View,
    bin_colorbar,
    layer_panels,
    legend_below,
    line,
    note_figure,
    panels,
    row_per_model,
    step_axis,
)
from pipeline.schema import FIT_FIELDS, bnsl, overall

#: The columns of the fit table (Table 2) after the model's name: header, fit field, format.
TABLE = (
    ("t_d (step)", "t_d", ".4g"),
    ("L_d (nats)", "L_d", ".3f"),
    ("r_d", "r_d", ".3f"),
    ("L̂_T / L_T", "L_hat_T_over_L_T", ".3f"),
    ("RSLE", "rsle", ".2g"),
)


def plot_bnsl(ds: xr.Dataset) -> Figure:
    """The overall loss of each model over steps (log-log, step 0 left out) with its fitted
    smoothly broken power law from the first to the last fitted step, the deceleration point
    (t_d, L_d) and the post-break power law extrapolated to the last step T (Fig. 1), and the
    fitted numbers as a table (Table 2). A model without a fit, or whose fit failed (NaN),
    shows its loss only.
    """
    view = View.of(ds)
    n = len(view.models)
    fig = Figure(figsize=(9.5, 5.0 + 0.26 * n), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[4.2, 0.5 + 0.26 * (n + 1)])
    ax = fig.add_subplot(grid[0])
    handles, rows, seen = [], [], []
    for model in view.models:
        fit = {field: view.scalar(bnsl(field), model) for field in FIT_FIELDS}
        flag = str(view.ds.attrs.get("bnsl_flag", {}).get(model) or "")
        seen += _draw_fit(ax, view, model, fit, flag)
        label = f"{model} (flag: {flag})" if flag else model
        handles.append(Line2D([], [], color=view.colors[model], marker="o", ms=3.5, label=label))
        fitted = np.isfinite(list(fit.values())).any()
        cells = [_format(fit[field], spec) for _, field, spec in TABLE]
        rows.append([model, *cells, flag or ("" if fitted else "no fit")])
    _loss_axes(ax, np.concatenate(seen) if seen else np.array([]))
    ax.legend(
        handles=handles + _fit_handles(),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    _fit_table(fig.add_subplot(grid[1]), view, rows)
    fig.suptitle("Loss deceleration: broken power-law fits of the overall loss")
    return fig


def _fit_handles() -> list[Line2D]:
    """The legend entries of the fitted lines, in grey (the models' colours are listed above)."""
    grey = "0.3"
    return [
        Line2D([], [], color=grey, lw=1.6, label="BNSL fit (fitted steps)"),
        Line2D([], [], color=grey, ls="--", lw=1.3, label="post-break power law to T"),
        Line2D(
            [], [], color=grey, marker="*", ms=11, mec="k", ls="", label="deceleration (t_d, L_d)"
        ),
        Line2D(
            [], [], color=grey, marker="*", ms=11, mec="k", mfc="w", ls="", label="… flagged fit"
        ),
    ]


def _draw_fit(
    ax: Axes, view: View, model: str, fit: dict[str, float], flag: str
) -> list[np.ndarray]:
    """One model's observed losses, fitted curve, post-break power law and deceleration point;
    returns the losses that set the y range (a flagged fit's point does not stretch it)."""
    c = view.colors[model]
    steps = view.steps.astype(np.float64)
    loss = view.values(overall("loss"), model)
    pos = (steps > 0) & np.isfinite(loss) & (loss > 0)
    ax.plot(steps[pos], loss[pos], "o", color=c, ms=3.5, alpha=0.8)
    seen = [loss[pos]]
    p = _curve_params(fit)
    t_first, T, t_d, L_d, r_d = (fit[k] for k in ("t_first", "T", "t_d", "L_d", "r_d"))
    if p is not None and np.isfinite([t_first, T]).all() and 0 < t_first < T:
        # the fitted steps span t_first..T; they need not be consecutive (subsampled fits)
        t = np.geomspace(t_first, T, 200)
        ax.plot(t, bnsl_curve(t, **p), color=c, lw=1.6)
    if p is not None and np.isfinite([t_d, L_d, r_d, T]).all() and 0 < t_d < T:
        t = np.geomspace(t_d, T, 50)
        ax.plot(t, p["a"] + (L_d - p["a"]) * (t / t_d) ** -r_d, color=c, ls="--", lw=1.3)
    if np.isfinite([t_d, L_d]).all() and t_d > 0 and L_d > 0:
        edge = dict(mfc="white", mec=c, mew=1.5) if flag else dict(mfc=c, mec="k", mew=0.8)
        ax.plot(t_d, L_d, marker="*", ms=13, ls="", zorder=4, **edge)
        if not flag:
            seen.append(np.array([L_d]))
    return seen


def _curve_params(fit: dict[str, float]) -> dict[str, float] | None:
    """The BNSL parameters of a fit, or None if any is missing or not a valid curve."""
    p = {k: fit[k] for k in ("a", "b", "c0", "c1", "d1", "f1")}
    return p if np.isfinite(list(p.values())).all() and p["b"] > 0 and p["d1"] > 0 else None


def _loss_axes(ax: Axes, seen: np.ndarray) -> None:
    """Log-log axes whose loss range is set by the observed losses (a fit never stretches it)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    if seen.size:
        lo, hi = float(seen.min()) / 1.08, float(seen.max()) * 1.08
        ax.set_ylim(lo, hi)
        _plain_log_labels(ax.yaxis, lo, hi)
    else:
        ax.set_xlim(1, 10)
        ax.set_ylim(1, 10)
        ax.text(0.5, 0.5, "no loss after step 0", ha="center", transform=ax.transAxes)
    ax.set_xlabel("training step (log)")
    ax.set_ylabel("mean loss, all tokens (nats, log)")
    ax.grid(True, which="both", alpha=0.25)


def _plain_log_labels(axis: Axis, lo: float, hi: float) -> None:
    """Plain numbers (3, 4, 6 rather than 3×10⁰) on a log axis spanning less than ~1.5 decades."""
    if np.isfinite([lo, hi]).all() and 0 < lo < hi < 30 * lo:
        fmt = FuncFormatter(lambda v, _: f"{v:g}")
        axis.set_major_formatter(fmt)
        axis.set_minor_formatter(fmt)


def _format(x: float, spec: str) -> str:
    return format(x, spec) if np.isfinite(x) else "–"


def _fit_table(ax: Axes, view: View, rows: list[list[str]]) -> None:
    """The fitted numbers, one row per model, its name in its colour."""
    ax.set_axis_off()
    cols = ["model", *(header for header, _, _ in TABLE), "flag"]
    tab = ax.table(cellText=rows, colLabels=cols, loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8.5)
    tab.auto_set_column_width(list(range(len(cols))))
    tab.scale(1.0, 1.3)
    for i, model in enumerate(view.models, start=1):
        tab[i, 0].get_text().set_color(view.colors[model])
        tab[i, 0].get_text().set_fontweight("bold")
    for j in range(len(cols)):
        tab[0, j].get_text().set_fontweight("bold")


def plot_interference(ds: xr.Dataset) -> Figure:
    """Loss-change interference between checkpoint pairs (t, t′) per model (Fig. 2): the mean
    magnitude M of the per-token loss changes with the net change |ΔL| = M (1 − D), and the
    interference D per bin and overall, at the first step t of each pair."""
    title = f"Loss-change interference between checkpoint pairs {_pairing(ds)}"
    if "interference" not in ds:
        return note_figure(title, "loss-change interference needs two or more steps")
    view, fig, axes = panels(ds, row_per_model(2), panel=(4.5, 2.6), margin=(0.0, 1.0))
    steps = view.steps
    for (ax_m, ax_d), model in zip(axes, view.models):
        c = view.colors[model]
        m = view.values(overall("change_magnitude"), model)
        # markers: with a sparse schedule a pair's point must be visible on its own
        line(ax_m, steps, np.where(m > 0, m, np.nan), color=c, lw=1.6, marker="o", ms=3)
        net = view.values(overall("loss_change"), model)
        if net is not None:
            net = np.abs(net)
            line(ax_m, steps, np.where(net > 0, net, np.nan), color=c, ls="--", marker="o", ms=2)
        ax_m.set_yscale("log")
        ax_m.set_ylabel(f"{model}\n|loss change| (nats / token)")
        step_axis(ax_m)
        for b in view.bins:
            line(ax_d, steps, view.values("interference", model, bin=b), color=view.color(b))
        d_all = view.values(overall("interference"), model)
        line(ax_d, steps, d_all, color="k", ls="--", lw=1.6, marker="o", ms=3)
        ax_d.set_ylim(-0.03, 1.03)
        ax_d.set_ylabel("interference D (fraction)")
        step_axis(ax_d)
    axes[0, 0].set_title("magnitude of the loss changes")
    axes[0, 1].set_title("interference D per bin")
    bin_colorbar(fig, axes[:, 1], view.bins)
    handles = [
        Line2D([], [], color="0.3", lw=1.6, label="M: mean |Δloss| per token"),
        Line2D([], [], color="0.3", ls="--", label="|ΔL| = M (1 − D): net change"),
        Line2D([], [], color="k", ls="--", lw=1.6, label="D, all tokens"),
    ]
    legend_below(fig, handles)
    fig.suptitle(title)
    return fig


def _pairing(ds: xr.Dataset) -> str:
    """How the pairs were formed: t′ = 2t, or the next checkpoint where 2t is not in the suite."""
    if "pair_step" not in ds:
        return "(t, t′)"
    step = ds["step"].values.astype(np.float64)[None, :]
    pair = np.asarray(ds["pair_step"].values, dtype=np.float64).reshape(-1, step.shape[1])
    paired = np.isfinite(pair) & (pair >= 0) & (step > 0)
    if paired.any() and (pair[paired] == 2 * np.broadcast_to(step, pair.shape)[paired]).all():
        return "(t, t′ = 2t)"
    return "(t, t′)\nt′ = 2t where the suite has it, else the next checkpoint"


def plot_layer_interference(ds: xr.Dataset) -> Figure:
    """Parameter-level interference D_W of each transformer block over steps, one panel per
    model, with the output layer's and the input embedding's (Fig. 3a)."""
    return layer_panels(
        ds,
        "layer_interference",
        "Interference D_W per transformer block",
        "interference D_W (fraction)",
        [
            ("head_interference", "output layer (head)", "--"),
            ("embed_interference", "input embedding", ":"),
        ],
        ylim=(-0.03, 1.03),
    )
