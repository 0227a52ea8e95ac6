"""The figures of *Zero-sum learning* (Mircea et al. 2025).

* ``bnsl``: each model's overall loss with its smoothly broken power-law fit, the deceleration
  point (t_d, L_d) where the fit's pre- and post-break power laws meet, and the post-break power
  law extrapolated to the last step (Fig. 1), the training-loss fits beside them where the
  summary holds them (``bnsl_*`` with a ``curve`` dimension), and the fitted numbers (Table 2).
  The fits are the summary's per-model ``bnsl_*`` variables and its ``attrs["bnsl_flag"]``;
* ``interference``: loss-change magnitude M and interference D between checkpoint pairs
  (Fig. 2), D as a (bin × step) heat map per model;
* ``layer_interference``: the parameter-level interference D_W per transformer block (Fig. 3a).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from pipeline.maths.bnsl import bnsl as bnsl_curve
from pipeline.plots.common import (
    View,
    dots,
    handle_of,
    has,
    layer_panels,
    legend_below,
    log_labels,
    log_line,
    note,
    note_figure,
    number,
    panel_title,
    panels,
    row_per_model,
    step_axis,
    suptitle,
    ticks,
    zero_handle,
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
#: What each panel of the BNSL figure shows: the fit to each of ``pipeline.schema.CURVES``.
CURVE_TITLES = {
    "eval": "evaluation loss at the checkpoints",
    "train": "training loss at every logged step",
}
NO_TRAIN_FIT = (  # in short lines: the legend beside the panels narrows them after wrapping
    "Training loss: this summary holds no training-loss\ncurve or fit (train_loss, "
    "bnsl_train_*):\nno model of the run has a training log"
)
#: Interference D is a fraction (0: all tokens' losses move together, 1: they cancel).
D_CMAP = "YlGnBu"
MISSING = "0.82"  # the face of a heat-map cell without a value (no checkpoint pair)


# -- BNSL (Fig. 1, Table 2) -----------------------------------------------------------------------


def _fit(view: View, model: str, curve: str) -> dict[str, float] | None:
    """The fit fields of ``model``'s fit to ``curve`` (``bnsl_*``, ``bnsl_train_*``); NaN where
    the summary lacks them."""
    return {field: view.scalar(bnsl(field, curve), model) for field in FIT_FIELDS}


def _flag(view: View, model: str, curve: str) -> str:
    """The quality flag of the fit to ``curve`` (``attrs["bnsl_flag"]``, ``["bnsl_train_flag"]``)."""
    key = "bnsl_flag" if curve == "eval" else f"bnsl_{curve}_flag"
    return str(view.ds.attrs.get(key, {}).get(model) or "")


def _curve(view: View, model: str, curve: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The steps and losses of ``model``'s ``curve``: the overall evaluation loss at the
    checkpoints, or the training loss (``train_loss`` over ``train_step``)."""
    if curve == "eval":
        return view.steps.astype(np.float64), view.values(overall("loss"), model)
    if "train_loss" not in view.ds:
        return np.array([]), None
    steps = view.ds["train_step"].values.astype(np.float64)
    return steps, view.values("train_loss", model)


def _has_curve(view: View, curve: str) -> bool:
    """Whether the summary holds ``curve``'s losses or fit for some model."""
    return has(view.ds, bnsl("t_first", curve)) or (curve == "train" and has(view.ds, "train_loss"))


def plot_bnsl(ds: xr.Dataset) -> Figure:
    """The overall loss of each model over steps (log-log, step 0 left out) with its fitted
    smoothly broken power law from the first to the last fitted step, the pre-break power law up
    to the deceleration point (t_d, L_d) and the post-break one from it, extrapolated to the last
    step T (Fig. 1); below, the training-loss fits where the summary holds them (a note where it
    does not); and the fitted numbers as a table (Table 2). A model without a fit, or whose fit
    failed (NaN), shows its loss only.
    """
    view = View.of(ds)
    curves = ["eval", "train"] if _has_curve(view, "train") else ["eval"]
    n_rows = len(view.models) * len(curves)
    train_height = 3.2 if "train" in curves else 0.7
    table_height = 0.5 + 0.26 * (n_rows + 1)
    fig = Figure(figsize=(9.5, 4.4 + train_height + table_height), layout="constrained")
    grid = fig.add_gridspec(3, 1, height_ratios=[4.2, train_height, table_height])
    ax = fig.add_subplot(grid[0])
    ax_train = fig.add_subplot(grid[1], sharex=ax if "train" in curves else None)
    handles, drawn, rows = [], set(), []
    for curve, axis in (("eval", ax), ("train", ax_train)):
        if curve not in curves:
            continue
        seen = []
        for model in view.models:
            fit = _fit(view, model, curve)
            flag = _flag(view, model, curve)
            steps, loss = _curve(view, model, curve)
            seen += _draw_fit(axis, view, model, fit, flag, steps, loss, drawn)
            fitted = np.isfinite(list(fit.values())).any()
            cells = [_format(fit[field], spec) for _, field, spec in TABLE]
            head = [model, curve] if len(curves) > 1 else [model]
            order = (view.models.index(model), curves.index(curve))  # by model, then curve
            rows.append((order, [*head, *cells, flag or ("" if fitted else "no fit")]))
        ylabel = "mean loss, all tokens" if curve == "eval" else "training loss"
        _loss_axes(axis, np.concatenate(seen) if seen else np.array([]), f"{ylabel} (nats, log)")
        panel_title(axis, CURVE_TITLES[curve])
    if "train" not in curves:
        note(ax_train, NO_TRAIN_FIT)
    for model in view.models:
        flag = _flag(view, model, "eval")
        label = f"{model} (flag: {flag})" if flag else model
        handles.append(Line2D([], [], color=view.colors[model], marker="o", ls="", label=label))
    ax.legend(
        handles=handles + _fit_handles(drawn),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    rows = [row for _, row in sorted(rows, key=lambda r: r[0])]
    _fit_table(fig.add_subplot(grid[2]), view, rows, with_curve=len(curves) > 1)
    suptitle(fig, "Loss deceleration: broken power-law fits of the overall loss")
    return fig


def _fit_handles(drawn: set[str]) -> list[Line2D]:
    """The legend entries of what was drawn of the fits, in grey (the models' colours are
    listed above)."""
    grey = "0.3"
    star = dict(marker="*", ms=11, ls="")
    entries = {
        "curve": Line2D([], [], color=grey, lw=1.6, label="BNSL fit (fitted steps)"),
        "pre": Line2D([], [], color=grey, ls=":", lw=1.3, label="pre-break power law to t_d"),
        "post": Line2D([], [], color=grey, ls="--", lw=1.3, label="post-break power law to T"),
        "star": Line2D(
            [], [], color=grey, mec="k", label="deceleration (t_d, L_d): where they meet", **star
        ),
        "flagged": Line2D(
            [],
            [],
            color=grey,
            mfc="w",
            label="… of a flagged fit" if "star" in drawn else "(t_d, L_d) of a flagged fit",
            **star,
        ),
    }
    return [h for kind, h in entries.items() if kind in drawn]


def _draw_fit(
    ax: Axes,
    view: View,
    model: str,
    fit: dict[str, float],
    flag: str,
    steps: np.ndarray,
    loss: np.ndarray | None,
    drawn: set[str],
) -> list[np.ndarray]:
    """One model's observed losses (if any), fitted curve, pre- and post-break power laws and
    their meeting point, the deceleration point (t_d, L_d), in the model's colour; adds what it
    drew to ``drawn`` and returns the losses that set the y range (the observed ones; the
    fitted curve where none are; a flagged fit's point never stretches it)."""
    c = view.colors[model]
    seen = []
    if loss is not None:
        pos = (steps > 0) & np.isfinite(loss) & (loss > 0)
        dense = pos.sum() > 200  # a training loss logged at every step: small dots
        style = dict(ms=1.5, alpha=0.35) if dense else dict(ms=3.5, alpha=0.8)
        if pos.any():
            ax.plot(steps[pos], loss[pos], ls="", marker="o", mew=0, color=c, **style)
            seen.append(loss[pos])
    p = _curve_params(fit)
    t_first, T, t_d, L_d, r_d = (fit[k] for k in ("t_first", "T", "t_d", "L_d", "r_d"))
    if p is not None and np.isfinite([t_first, T]).all() and 0 < t_first < T:
        # the fitted steps span t_first..T; they need not be consecutive (subsampled fits)
        t = np.geomspace(t_first, T, 200)
        curve = bnsl_curve(t, **p)
        ax.plot(t, curve, color=c, lw=1.6)
        drawn.add("curve")
        if loss is None or not np.isfinite(loss).any():
            seen.append(curve[np.isfinite(curve) & (curve > 0)])
    star = np.isfinite([t_d, L_d]).all() and t_d > 0 and L_d > 0
    if p is not None and star and np.isfinite([t_first, T, r_d]).all() and t_d < T:
        if t_first < t_d:  # L_d = a + b·t_d^(−c0): the pre-break power law at t_d
            t = np.geomspace(t_first, t_d, 50)
            ax.plot(t, p["a"] + p["b"] * t ** -p["c0"], color=c, ls=":", lw=1.3)
            drawn.add("pre")
        t = np.geomspace(t_d, T, 50)
        ax.plot(t, p["a"] + (L_d - p["a"]) * (t / t_d) ** -r_d, color=c, ls="--", lw=1.3)
        drawn.add("post")
    if star:
        edge = dict(mfc="white", mec=c, mew=1.5) if flag else dict(mfc=c, mec="k", mew=0.8)
        ax.plot(t_d, L_d, marker="*", ms=13, ls="", zorder=4, **edge)
        drawn.add("flagged" if flag else "star")
        if not flag:
            seen.append(np.array([L_d]))
    return seen


def _curve_params(fit: dict[str, float]) -> dict[str, float] | None:
    """The BNSL parameters of a fit, or None if any is missing or not a valid curve."""
    p = {k: fit[k] for k in ("a", "b", "c0", "c1", "d1", "f1")}
    return p if np.isfinite(list(p.values())).all() and p["b"] > 0 and p["d1"] > 0 else None


def _loss_axes(ax: Axes, seen: np.ndarray, ylabel: str) -> None:
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
        note(ax, "no loss after step 0", keep_axes=True)
    ax.set_xlabel("training step (log)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.25)


def _plain_log_labels(axis: Axis, lo: float, hi: float) -> None:
    """Plain numbers (3, 4, 6 rather than 3×10⁰) on a log axis spanning less than ~1.5 decades."""
    if np.isfinite([lo, hi]).all() and 0 < lo < hi < 30 * lo:
        fmt = FuncFormatter(lambda v, _: f"{v:g}")
        axis.set_major_formatter(fmt)
        axis.set_minor_formatter(fmt)


def _format(x: float, spec: str) -> str:
    return format(x, spec) if np.isfinite(x) else "–"


def _fit_table(ax: Axes, view: View, rows: list[list[str]], with_curve: bool) -> None:
    """The fitted numbers, one row per model (and curve), its name in its colour."""
    ax.set_axis_off()
    cols = ["model", *(["loss"] if with_curve else []), *(h for h, _, _ in TABLE), "flag"]
    tab = ax.table(cellText=rows, colLabels=cols, loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8.5)
    tab.auto_set_column_width(list(range(len(cols))))
    tab.scale(1.0, 1.3)
    for i, row in enumerate(rows, start=1):
        tab[i, 0].get_text().set_color(view.colors[row[0]])
        tab[i, 0].get_text().set_fontweight("bold")
    for j in range(len(cols)):
        tab[0, j].get_text().set_fontweight("bold")


# -- loss-change interference (Fig. 2) ------------------------------------------------------------


def plot_interference(ds: xr.Dataset) -> Figure:
    """Loss-change interference between checkpoint pairs (t, t′) per model (Fig. 2): the mean
    magnitude M of the per-token loss changes with the net change |ΔL| = M (1 − D), and the
    interference D per bin and over all tokens as a (bin × step) heat map, at the first step t
    of each pair."""
    title = f"Loss-change interference between checkpoint pairs {_pairing(ds)}"
    if "interference" not in ds:
        return note_figure(title, "loss-change interference needs two or more steps")
    view, fig, axes = panels(ds, row_per_model(2), panel=(4.5, 2.6), margin=(0.0, 1.0))
    columns = _paired_steps(view)
    norm = _d_norm(view, columns)
    drawn: dict[str, Line2D | None] = {"M": None, "net": None, "zero": None}
    image = None
    for (ax_m, ax_d), model in zip(axes, view.models):
        c = view.colors[model]
        m = view.values(overall("change_magnitude"), model)
        line_m, zero_m = log_line(ax_m, view.steps, m, **dots(m, color=c, lw=1.6))
        net = view.values(overall("loss_change"), model)
        net = None if net is None else np.abs(net)
        line_n, zero_n = log_line(ax_m, view.steps, net, **dots(net, color=c, ls="--", ms=2))
        drawn["M"] = drawn["M"] or line_m
        drawn["net"] = drawn["net"] or line_n
        drawn["zero"] = drawn["zero"] or zero_m or zero_n
        ax_m.set_yscale("log")
        log_labels(ax_m.yaxis)
        ax_m.set_ylabel(f"{model}\n|loss change| (nats / token)")
        step_axis(ax_m)
        if line_m is None and line_n is None and zero_m is None and zero_n is None:
            note(ax_m, f"no checkpoint pair of {model}", keep_axes=True)
        image = _d_map(ax_d, view, model, columns, norm) or image
    panel_title(axes[0, 0], "magnitude of the loss changes")
    panel_title(axes[0, 1], "interference D per bin and over all tokens")
    if image is not None:
        bar = fig.colorbar(image, ax=axes[:, 1], shrink=0.9, pad=0.02)
        bar.set_label("interference D  (0: together, 1: zero-sum)")
    legend_below(
        fig,
        [
            handle_of(drawn["M"], "M: mean |Δloss| per token"),
            handle_of(drawn["net"], "|ΔL| = M (1 − D): net change"),
            zero_handle("0.3") if drawn["zero"] else None,
        ],
    )
    suptitle(fig, title)
    return fig


def _paired_steps(view: View) -> np.ndarray:
    """The steps t at which some model has a pair (t, t′): the heat maps' columns."""
    d = np.asarray(view.ds["interference"].values, dtype=np.float64)  # (model, step, bin)
    return view.steps[np.isfinite(d).any(axis=(0, 2))]


def _d_norm(view: View, columns: np.ndarray) -> Normalize:
    """D's colour scale, shared by the models: the range the values take (to the next 0.05),
    within 0..1."""
    d = view.ds["interference"].sel(step=columns, bin=view.bins).values
    d = d[np.isfinite(d)]
    if not d.size:
        return Normalize(0.0, 1.0)
    lo, hi = np.floor(d.min() * 20) / 20, np.ceil(d.max() * 20) / 20
    lo, hi = max(0.0, lo), min(1.0, max(hi, lo + 0.05))
    return Normalize(lo, hi)


def _d_map(ax: Axes, view: View, model: str, columns: np.ndarray, norm: Normalize):
    """D of one model as a heat map: the bins (rare to frequent, bottom to top) and, on top, all
    tokens, over the paired steps as ordered columns labelled by step. Returns the image, or
    None (and a note) where the model has no pair."""
    grid = np.full((view.bins.size + 1, columns.size), np.nan)  # (bin + all, step)
    for i, b in enumerate(view.bins):
        grid[i] = view.ds["interference"].sel(model=model, bin=b, step=columns).values
    if overall("interference") in view.ds:
        grid[-1] = view.ds[overall("interference")].sel(model=model, step=columns).values
    ax.set_facecolor(MISSING)
    ax.set_xlabel("first step t of the pair")
    ax.set_ylabel("frequency bin ⌊log2 f⌋")
    if not np.isfinite(grid).any():
        ax.set_xticks([])
        ax.set_yticks([])
        note(ax, f"no checkpoint pair of {model}", keep_axes=True)
        return None
    x, y = np.arange(columns.size + 1) - 0.5, np.arange(grid.shape[0] + 1) - 0.5
    image = ax.pcolormesh(x, y, np.ma.masked_invalid(grid), cmap=D_CMAP, norm=norm)
    ax.axhline(view.bins.size - 0.5, color="white", lw=2.5)  # bins below, all tokens above
    at = np.flatnonzero(np.isin(columns, ticks(columns, most=10)))
    ax.set_xticks(at, [str(int(s)) for s in columns[at]], rotation=90 if columns.size > 6 else 0)
    rows = np.flatnonzero(np.isin(view.bins, ticks(view.bins, most=8)))
    ax.set_yticks(
        [*rows, view.bins.size], [*(number(b) for b in view.bins[rows]), "all"], fontsize=8
    )
    ax.tick_params(length=2)
    return image


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
