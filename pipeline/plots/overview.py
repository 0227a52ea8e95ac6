"""The cross-model overview of *Gradient dissent* (Mircea, Lobacheva, Rish 2024).

* ``overview``: against model size, the step from which the overall loss stays saturated, the
  onset of total dissent, and which frequency bins each model ends saturated on, from which step
  (small models saturate on the long tail of rare tokens, §2 and Fig. 1, 3).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.maths.frequency import UNSEEN_BIN
from pipeline.plots.common import (
    BIN_LABEL,
    COS_DISSENT,
    STEP_CMAP,
    View,
    has,
    model_legend,
    note,
    number,
    panel_title,
    suptitle,
    ticks,
)

#: Per-bin saturation steps: early saturation dark, late saturation light.
SATURATION_CMAP = STEP_CMAP


def plot_overview(ds: xr.Dataset) -> Figure:
    """When saturation and total dissent set in, against model size, one marker per model.

    Left: the overall saturation step; middle: the onset of total dissent (a model for which it
    never happens is an open marker in the "never" row above the last checkpoint). Right: which
    frequency bins each model ends saturated on, coloured by the step from which they stay
    saturated.
    """
    view = View.of(ds)
    n_params = np.array([view.scalar("n_params", m) for m in view.models])
    sized = bool((n_params > 0).all())  # -1 (or missing) where the size is unknown
    x = n_params if sized else np.arange(len(view.models), dtype=np.float64)
    fig = Figure(figsize=(14.5, 4.4), layout="constrained")
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1, 1.25])
    first = fig.add_subplot(grid[0])
    axes = [first, fig.add_subplot(grid[1], sharey=first), fig.add_subplot(grid[2])]
    threshold = view.setting("dissent_threshold")
    rule = "threshold" if threshold is None else number(threshold)
    within = f"within {int(view.steps.max()):,} steps"
    panels = (
        (
            "saturation_step",
            "overall loss saturates",
            f"no model saturates by {_rule(view)} {within}",
        ),
        (
            "dissent_onset_step",
            f"total dissent: {COS_DISSENT} ≤ {rule}",
            f"no model reaches total dissent ({rule}) {within}",
        ),
    )
    for ax, (var, title, never) in zip(axes, panels):
        _onset_panel(ax, view, var, x)
        panel_title(ax, title)
        _size_axis(ax, x, view.models, sized)
        if not np.isfinite([view.scalar(var, m) for m in view.models]).any():
            note(ax, never, keep_axes=True)
    _bin_saturation_panel(fig, axes[2], view, x, sized)
    extra = [Line2D([], [], ls="", marker="o", mfc="white", mec="0.3", mew=2, label="never")]
    model_legend(fig, view, extra)
    suptitle(fig, "When saturation and total dissent set in, by model size")
    return fig


def _rule(view: View) -> str:
    """The saturation rule of the run (``the 1% rule``), from the summary's attrs."""
    tolerance = view.setting("saturation_tolerance")
    return "the saturation rule" if tolerance is None else f"the {tolerance * 100:g}% rule"


def _onset_panel(ax: Axes, view: View, var: str, x: np.ndarray) -> None:
    """Per model, the step ``var`` (symlog), or an open marker in a "never" row above the last
    checkpoint where it is NaN."""
    last = float(view.steps.max())
    never = max(last, 1.0) * 3.0  # above the last checkpoint on the log axis
    for xi, model in zip(x, view.models):
        v = view.scalar(var, model)
        c = view.colors[model]
        if np.isfinite(v):
            ax.plot(xi, v, "o", color=c, ms=9, mec="k", mew=0.6, zorder=3)
        else:
            ax.plot(xi, never, "o", mfc="white", mec=c, mew=2.0, ms=9, zorder=3)
    ax.axhline(last, color="0.4", ls="--", lw=0.9)
    ax.text(
        0.01, last, " last checkpoint", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8
    )
    ax.set_yscale("symlog", linthresh=1, linscale=0.4)
    ax.set_ylim(0, never * 2.0)
    steps = [t for t in ax.get_yticks() if 0 <= t <= last]
    labels = [f"$10^{{{np.log10(t):.0f}}}$" if t > 0 else "0" for t in steps]
    ax.set_yticks([*steps, never], [*labels, "never"])
    ax.set_ylabel("training step (symlog)")
    ax.grid(True, which="major", alpha=0.3)


def _size_axis(ax: Axes, x: np.ndarray, models: list[str], sized: bool) -> None:
    """Model size (log) on the x axis, or the model names where sizes are unknown."""
    if sized:
        ax.set_xscale("log")
        ax.set_xlim(x.min() / 2.0, x.max() * 2.0)
        ax.set_xlabel("model size (parameters, log)")
    else:
        ax.set_xticks(x, models, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(models) - 0.5)
        ax.set_xlabel("model (parameters unknown)")


def _bin_saturation_panel(fig: Figure, ax: Axes, view: View, x: np.ndarray, sized: bool) -> None:
    """Per model and bin: a filled square coloured by ``saturation_step_bin`` where the bin ends
    saturated, a small open circle where it is improving at the last checkpoint."""
    panel_title(ax, "bins saturated at the last checkpoint")
    if not has(view.ds, "loss") or "saturation_step_bin" not in view.ds:
        note(ax, "no per-bin saturation steps in this summary: re-run the reduce rule")
        return
    steps = view.steps
    first = float(steps[steps > 0].min()) if (steps > 0).any() else 1.0
    norm = LogNorm(vmin=first, vmax=max(float(steps.max()), first * 2.0))
    cmap = SATURATION_CMAP
    for xi, model in zip(x, view.models):
        has_loss = np.isfinite(view.values("loss", model)).any(axis=0)  # (bin,)
        step_bin = view.values("saturation_step_bin", model)
        for b, s, seen in zip(view.ds["bin"].values, step_bin, has_loss):
            if b == UNSEEN_BIN or not seen:
                continue
            if np.isfinite(s):
                c = cmap(norm(max(s, first)))
                ax.plot(xi, b, "s", color=c, ms=9, mec="k", mew=0.5, zorder=3)
            else:
                ax.plot(xi, b, "o", mfc="white", mec="0.55", ms=5, zorder=2)
    ax.set_ylim(view.bins.min() - 0.7, view.bins.max() + 0.7)
    ax.set_yticks(ticks(view.bins))
    ax.set_ylabel(BIN_LABEL)
    ax.grid(True, which="major", alpha=0.3)
    _size_axis(ax, x, view.models, sized)
    if not any(np.isfinite(view.values("saturation_step_bin", m)).any() for m in view.models):
        note(ax, f"no bin of any model saturates by {_rule(view)}", keep_axes=True)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
    bar.set_label("saturated from step (log; dark = early)")
    ax.legend(
        handles=[
            Line2D([], [], ls="", marker="s", color=cmap(0.6), mec="k", mew=0.5, label="saturated"),
            Line2D([], [], ls="", marker="o", mfc="white", mec="0.55", label="improving"),
        ],
        loc="upper left",
        bbox_to_anchor=(0.0, -0.22),
        ncols=2,
        frameon=False,
        fontsize=8,
    )
