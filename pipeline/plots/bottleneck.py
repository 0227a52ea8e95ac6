"""The figure of *The LM head as a gradient bottleneck* (Godey & Artzi 2026).

* ``bottleneck``: the suppressed fraction 1 − κ of the logit gradient's squared norm over
  training, and the rank of the logit gradients of the first N tokens at each model's last step
  beside 2d, the rank bound of any logit update the model can make (not a bound of G) (Fig. 2).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.plots.common import View, has, line, model_legend, note, panels, step_axis
from pipeline.schema import overall


def plot_bottleneck(ds: xr.Dataset) -> Figure:
    """The LM head as a gradient bottleneck: the suppressed fraction 1 − κ of the logit
    gradient's squared norm over steps, and the rank of the logit gradients of the first N
    tokens at each model's last step beside 2d (the rank bound of a logit update)."""
    view, fig, axes = panels(ds, lambda n: (1, 2), panel=(5.0, 4.4))
    ax_k, ax_r = axes[0]
    for model in view.models:
        kappa = view.values(overall("kept_fraction"), model)
        if kappa is not None:
            line(ax_k, view.steps, 1 - kappa, color=view.colors[model], lw=1.6)
    ax_k.set_ylabel("suppressed fraction 1 − κ (fraction)")
    ax_k.set_title("gradient norm lost in the output layer")
    step_axis(ax_k)
    extra = []
    if has(view.ds, "logit_grad_rank") and "rank_tokens" in ds.dims:
        _rank_panel(ax_r, view)
        extra = [
            Line2D([], [], color="0.3", ls="--", label="2d: rank bound of a logit update"),
            Line2D([], [], color="0.5", ls=":", label="rank = N"),
        ]
    else:
        note(ax_r, "the logit-gradient rank was not extracted")
    model_legend(fig, view, extra)
    fig.suptitle("The output layer as a gradient bottleneck")
    return fig


def _rank_panel(ax: Axes, view: View) -> None:
    """The rank of the logit gradients of the first N tokens at each model's last measured
    step, 2d (dashed: the rank bound of a logit update, not of G), and rank = N (dotted)."""
    sizes = view.ds["rank_tokens"].values.astype(np.float64)
    n = len(view.models)
    for i, model in enumerate(view.models):
        rank = view.values("logit_grad_rank", model)  # (step, rank_tokens)
        done = np.flatnonzero(np.isfinite(rank).any(axis=1))
        if not done.size:
            continue
        # earlier models larger, so that models with the same ranks all stay visible
        ms = 4.0 + 9.0 * (n - 1 - i) / max(n - 1, 1)
        c = view.colors[model]
        line(ax, sizes, rank[done[-1]], color=c, marker="o", mfc="none", ms=ms, mew=1.4)
        bound = view.scalar("update_rank_bound", model)  # -1 where the hidden size is unknown
        if bound > 0:
            ax.axhline(bound, color=c, ls="--", lw=1.2)
    ax.plot(sizes, sizes, color="0.5", ls=":", lw=1.0, zorder=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("tokens N (log2)")
    ax.set_ylabel("rank of the logit gradients (rank)")
    ax.set_title("logit-gradient rank at the last step")
    ax.grid(True, which="major", alpha=0.3)
