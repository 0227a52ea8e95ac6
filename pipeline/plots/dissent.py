"""The figures of *Gradient dissent* (Mircea, Lobacheva, Rish 2024).

* ``token_frequency``: the token-frequency distribution of the training counts and of V, against
  rank, with the rarest ids' departure from Zipf's law (Fig. 4);
* ``loss_by_bin``: loss per log2-frequency bin over training, improving against saturated points
  (Fig. 1, 5);
* ``decomposition_basis``: the cosines between h, ∇h and its attractive and repulsive parts
  ∇h⁺, ∇h⁻ per bin (Fig. 2, 6);
* ``dissent``: the norms of ∇h⁺, ∇h⁻, ∇h and cos(∇h⁺, ∇h⁻) per bin, with the onset of total
  dissent (Fig. 3);
* ``parameter_dissent``: per transformer block, ‖∇θ⁺‖ and ‖∇θ⁻‖ relative to ‖∇θ‖ beside
  cos(∇θ⁺, ∇θ⁻) (Fig. 7).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from pipeline.maths.frequency import rank_frequency, zipf_fit
from pipeline.plots.common import (
    COS_DISSENT,
    LAYER_CMAP,
    NO_PARAMETERS,
    View,
    bin_colorbar,
    has,
    hide_unused,
    integer_norm,
    layer_key,
    layer_panels,
    legend_below,
    line,
    note,
    note_figure,
    number,
    panel_title,
    panels,
    per_model,
    row_per_model,
    step_axis,
    suptitle,
    zero_line,
)
from pipeline.schema import overall

#: The four cosines of the decomposition basis (Fig. 2, 6), one column each.
COSINES = {
    "cos_h_attractive": r"$\cos(h, \nabla h^{+})$",
    "cos_h_repulsive": r"$\cos(h, \nabla h^{-})$",
    "cos_grad_attractive": r"$\cos(\nabla h, \nabla h^{+})$",
    "cos_grad_repulsive": r"$\cos(\nabla h, \nabla h^{-})$",
}


def plot_loss_by_bin(ds: xr.Dataset) -> Figure:
    """Mean loss per log2-frequency bin over steps, one panel per model (Fig. 1).

    Filled markers are improving points, open markers saturated ones (loss at least the
    saturation tolerance above the best earlier loss); the dashed line marks the model's overall
    saturation step.
    """
    view, fig, axes = panels(ds, per_model, panel=(3.6, 3.2), margin=(1.2, 0.0), sharey=True)
    for ax, model in zip(axes.flat, view.models):
        for b in view.bins:
            _bin_loss(ax, view, model, b)
        panel_title(ax, model)
        ax.set_ylabel("mean loss (nats)")
        step_axis(ax)
        _saturation_step(ax, view.scalar("saturation_step", model))
    hide_unused(axes, len(view.models))
    bin_colorbar(fig, axes, view.bins)
    tolerance = view.setting("saturation_tolerance")
    saturated = "saturated"
    if tolerance is not None:
        saturated += f" (≥ {number(100 * tolerance)}% above the best earlier loss)"
    handles = [
        Line2D([], [], marker="o", ls="", color="0.3", label="improving"),
        Line2D([], [], marker="o", ls="", mfc="white", color="0.3", label=saturated),
    ]
    if np.isfinite([view.scalar("saturation_step", m) for m in view.models]).any():
        handles.append(Line2D([], [], ls="--", color="k", label="saturation step"))
    if axes.shape[1] == 1:  # one panel is too narrow for the legend in a row: one per line
        fig.set_figheight(fig.get_figheight() + 0.5)
    legend_below(fig, handles)
    suptitle(fig, "Loss per frequency bin over training")
    return fig


def _bin_loss(ax: Axes, view: View, model: str, b: int) -> None:
    """One bin's loss curve: filled markers where improving, open where saturated."""
    loss = view.values("loss", model, bin=b)
    ok = ~np.isnan(loss)
    if not ok.any():
        return
    steps = view.steps
    imp = view.ds["improving"].sel(model=model, bin=b).values.astype(bool) & ok
    c = view.color(b)
    ax.plot(steps[ok], loss[ok], color=c, lw=1.2)
    ax.scatter(steps[imp], loss[imp], color=c, s=14, zorder=3)
    sat = ok & ~imp
    ax.scatter(steps[sat], loss[sat], facecolor="white", edgecolor=c, s=14, zorder=3)


def _saturation_step(ax: Axes, step: float) -> None:
    """The dashed line at the overall saturation step, labelled on the side with room."""
    if np.isnan(step):
        return
    ax.axvline(step, color="k", ls="--", lw=1)
    x = ax.transAxes.inverted().transform(ax.transData.transform((step, 0)))[0]
    right = x < 0.6
    ax.text(
        step,
        0.98,
        f" saturated\n from {step:g}" if right else f"saturated \nfrom {step:g} ",
        transform=ax.get_xaxis_transform(),
        va="top",
        ha="left" if right else "right",
        fontsize=8,
    )


def plot_decomposition_basis(ds: xr.Dataset) -> Figure:
    """The four cosines between h, ∇h and the attractive/repulsive parts ∇h⁺, ∇h⁻, per bin over
    steps (Fig. 2, 6): one row per model, one column per cosine; the black line is the mean over
    all tokens."""
    view, fig, axes = panels(
        ds,
        row_per_model(len(COSINES)),
        panel=(2.9, 2.5),
        margin=(1.3, 1.0),
        sharey="col",
    )
    for row, model in zip(axes, view.models):
        for j, (ax, (var, label)) in enumerate(zip(row, COSINES.items())):
            for b in view.bins:
                line(ax, view.steps, view.values(var, model, bin=b), color=view.color(b), lw=1.0)
            line(ax, view.steps, view.values(overall(var), model), color="k", lw=1.6, ls="--")
            zero_line(ax)
            if ax in axes[0]:
                panel_title(ax, label)
            ax.set_ylabel(f"{model}\ncosine" if j == 0 else "cosine")
            step_axis(ax)
    bin_colorbar(fig, axes, view.bins)
    legend_below(fig, [Line2D([], [], color="k", ls="--", lw=1.6, label="all tokens")])
    suptitle(fig, "Decomposition basis: cosines of the attractive and repulsive gradients at h")
    return fig


#: The gradient norms at h of the dissent figure: variable, line style, label.
NORMS = (
    ("norm_grad", "-", r"$\|\nabla h\|$"),
    ("norm_attractive", "--", r"$\|\nabla h^{+}\|$"),
    ("norm_repulsive", ":", r"$\|\nabla h^{-}\|$"),
)


def plot_dissent(ds: xr.Dataset) -> Figure:
    """Per model: the norms of ∇h⁺, ∇h⁻ and ∇h (mean over all tokens, log scale) and
    cos(∇h⁺, ∇h⁻) per bin over steps (Fig. 3); the dotted line marks the onset of total
    dissent."""
    view, fig, axes = panels(ds, row_per_model(2), panel=(4.5, 2.6), margin=(0.0, 1.0))
    for (ax_n, ax_c), model in zip(axes, view.models):
        for var, ls, _ in NORMS:
            y = view.values(overall(var), model)
            if y is not None:
                y = np.where(y > 0, y, np.nan)  # log scale
            line(ax_n, view.steps, y, color=view.colors[model], ls=ls, lw=1.5)
        ax_n.set_yscale("log")
        ax_n.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax_n.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax_n.yaxis.set_minor_formatter(NullFormatter())
        ax_n.set_ylabel(f"{model}\ngradient norm (nats / unit h)")
        step_axis(ax_n)
        _cosine_panel(ax_c, view, model)
    panel_title(axes[0, 0], "gradient norms at h (all tokens)")
    panel_title(axes[0, 1], f"{COS_DISSENT} per bin")
    bin_colorbar(fig, axes[:, 1], view.bins)
    threshold = view.setting("dissent_threshold")
    onset = "dissent onset"
    if threshold is not None:
        onset += f" (mean cos ≤ {number(threshold)})"
    handles = [
        Line2D([], [], color="0.3", ls=ls, lw=1.5, label=lab)
        for var, ls, lab in NORMS
        if has(ds, overall(var))
    ]
    handles.append(Line2D([], [], color="k", ls="--", lw=1.6, label=f"{COS_DISSENT}, all tokens"))
    if np.isfinite([view.scalar("dissent_onset_step", m) for m in view.models]).any():
        handles.append(Line2D([], [], color="k", ls=":", lw=1.2, label=onset))
    legend_below(fig, handles)
    suptitle(fig, "Gradient dissent: attractive against repulsive gradient at h")
    return fig


def _cosine_panel(ax: Axes, view: View, model: str) -> None:
    """cos(∇h⁺, ∇h⁻) per bin and over all tokens, and the onset of total dissent."""
    var = "cos_attractive_repulsive"
    for b in view.bins:
        line(ax, view.steps, view.values(var, model, bin=b), color=view.color(b))
    line(ax, view.steps, view.values(overall(var), model), color="k", lw=1.6, ls="--")
    onset = view.scalar("dissent_onset_step", model)
    if np.isfinite(onset):
        ax.axvline(onset, color="k", ls=":", lw=1.2)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("cosine")
    step_axis(ax)


def plot_parameter_dissent(ds: xr.Dataset) -> Figure:
    """Per model, one row: ‖∇θ⁺‖/‖∇θ‖ (solid) and ‖∇θ⁻‖/‖∇θ‖ (dashed) of each transformer
    block's parameters over steps, and beside them cos(∇θ⁺, ∇θ⁻), with the output layer's and
    the mean cosine at h over all tokens (Fig. 7). A ratio well above 1 means the two parts
    cancel: each is larger than their sum."""
    title = "Gradient dissent in the parameters, per transformer block"
    ratio = "layer_norm_ratio_attractive"
    if ratio not in ds or not has(ds, ratio):  # stores reduced before the ratios existed
        return layer_panels(ds, "layer_cos_attractive_repulsive", title, "cosine", EXTRAS, COS_Y)
    if not has(ds, "layer_cos_attractive_repulsive"):
        return note_figure(title, NO_PARAMETERS)
    view, fig, axes = panels(ds, row_per_model(2), panel=(3.8, 2.8), margin=(1.3, 0.6))
    layers = ds["layer"].values
    norm = integer_norm(layers, LAYER_CMAP)
    for row, model in zip(axes, view.models):
        ax_n, ax_c = row
        att = view.values("layer_norm_ratio_attractive", model)
        rep = view.values("layer_norm_ratio_repulsive", model)
        cos = view.values("layer_cos_attractive_repulsive", model)
        if not np.isfinite(cos).any():
            note(ax_n, f"{model}:\n{NO_PARAMETERS}")
            note(ax_c, f"{model}:\n{NO_PARAMETERS}")
            continue
        for k, layer in enumerate(layers):
            c = LAYER_CMAP(norm(layer))
            line(ax_n, view.steps, att[:, k], color=c, lw=1.1)
            line(ax_n, view.steps, rep[:, k], color=c, lw=1.1, ls="--")
            line(ax_c, view.steps, cos[:, k], color=c, lw=1.1)
        for extra, _, ls in EXTRAS:
            line(ax_c, view.steps, view.values(extra, model), color="k", ls=ls, lw=1.5)
        ax_n.set_yscale("log")
        ax_n.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax_n.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax_n.yaxis.set_minor_formatter(NullFormatter())
        ax_n.axhline(1, color="0.5", lw=0.6)
        panel_title(ax_n, f"{model}: norms relative to ‖∇θ‖")
        ax_n.set_ylabel("‖∇θ±‖ / ‖∇θ‖ (ratio)")
        ax_c.set_ylim(*COS_Y)
        zero_line(ax_c)
        panel_title(ax_c, f"{model}: cos(∇θ⁺, ∇θ⁻)")
        ax_c.set_ylabel("cosine")
        for ax in row:
            step_axis(ax)
    handles = layer_key(fig, axes, layers)
    handles += [
        Line2D([], [], color="0.3", lw=1.1, label="‖∇θ⁺‖ / ‖∇θ‖"),
        Line2D([], [], color="0.3", lw=1.1, ls="--", label="‖∇θ⁻‖ / ‖∇θ‖"),
        *(
            Line2D([], [], color="k", ls=ls, lw=1.5, label=lab)
            for v, lab, ls in EXTRAS
            if has(ds, v)
        ),
    ]
    legend_below(fig, handles)
    suptitle(fig, title)
    return fig


#: The references drawn in black beside the blocks' cosines.
EXTRAS = [
    ("head_cos_attractive_repulsive", "output layer (head)", "--"),
    (overall("cos_attractive_repulsive"), "at h, all tokens", ":"),
]
COS_Y = (-1.05, 1.05)


def plot_token_frequency(ds: xr.Dataset) -> Figure:
    """Normalised frequency against rank (log-log) of the ids in the training counts and among
    V's targets, a Zipf fit to the training counts without the rarest 5% of ids, and those ids
    shaded (Gradient Dissent Fig. 4); the title gives the share of the vocabulary in V."""
    title = "Token frequencies: training counts and the evaluation set"
    if not {"train_count", "eval_count"} <= set(ds.data_vars):
        return note_figure(title, "the summary holds no token counts")
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.subplots()
    train, held = ds["train_count"].values, ds["eval_count"].values
    r_t, f_t = rank_frequency(train)
    r_v, f_v = rank_frequency(held)
    s, C = zipf_fit(r_t, f_t)
    tail = int(np.ceil(0.95 * r_t.size))
    ax.axvspan(r_t[tail - 1], r_t[-1], color="0.85", lw=0, label="rarest 5% of the ids seen")
    ax.plot(r_t, f_t, color="C0", lw=1.6, label=f"training counts ({r_t.size:,} ids seen)")
    ax.plot(r_v, f_v, color="C3", lw=1.2, label=f"evaluation targets ({r_v.size:,} ids)")
    ax.plot(r_t, C * r_t ** (-s), color="k", ls="--", lw=1.0, label=f"Zipf fit, exponent {s:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rank of the id by frequency (log)")
    ax.set_ylabel("normalised frequency (fraction of tokens)")
    share = r_v.size / train.size
    panel_title(ax, f"{share:.1%} of the {train.size:,} vocabulary ids occur in V", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower left", frameon=False, fontsize=8)
    suptitle(fig, title)
    return fig
