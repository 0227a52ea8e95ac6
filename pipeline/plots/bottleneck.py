"""The figure of *Lost in Backpropagation: the LM head as a gradient bottleneck* (Godey &
Artzi 2026).

* ``bottleneck``: the share of the logit gradient lost in the output layer over training (per
  token and for V as one batch), the four forms "suppressed" may mean at each model's last step,
  and the ranks against the number of tokens N (Fig. 2): rank(G) under its bound min(N, V − 1),
  rank(GQ) of what survives the head under d, and 2d, the rank bound of a logit update.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.plots.common import View, has, line, model_legend, note, panels, step_axis

#: The forms of the suppressed share, as labelled in the figure (``pipeline.schema``).
FORMS = {
    "suppressed_squared": "1 − κ\nsq. norms",
    "suppressed_norm": "√(1 − κ)\nnorms",
    "kept_cosine": "√κ\nkept cosine",
    "suppressed_batch": "batch form\nΣ over V",
}


def plot_bottleneck(ds: xr.Dataset) -> Figure:
    """The output layer as a gradient bottleneck: suppressed shares over steps, their forms at
    the last step, and the logit-gradient ranks against N with the bounds of each."""
    view, fig, axes = panels(ds, lambda n: (1, 3), panel=(4.6, 4.4))
    ax_k, ax_f, ax_r = axes[0]
    for model in view.models:
        c = view.colors[model]
        line(ax_k, view.steps, view.values("suppressed_squared", model), color=c, lw=1.6)
        line(ax_k, view.steps, view.values("suppressed_batch", model), color=c, lw=1.2, ls="--")
    ax_k.set_ylabel("suppressed share (fraction)")
    ax_k.set_title("gradient lost in the output layer")
    step_axis(ax_k)
    _forms_panel(ax_f, view)
    extra = [
        Line2D([], [], color="0.3", lw=1.6, label="1 − κ, mean over tokens"),
        Line2D([], [], color="0.3", lw=1.2, ls="--", label="1 − Σ‖Qᵀg‖²/Σ‖g‖² (V as a batch)"),
    ]
    if has(view.ds, "logit_grad_rank") and "rank_tokens" in ds.dims:
        _rank_panel(ax_r, view)
        extra += [
            Line2D([], [], color="0.3", marker="o", mfc="none", label="rank(G)"),
            Line2D([], [], color="0.3", marker="s", ls="-.", label="rank(GQ): after the head"),
            Line2D([], [], color="k", ls=":", label="min(N, V − 1): bound of rank(G)"),
            Line2D([], [], color="0.3", ls=(0, (1, 3)), lw=1.2, label="d: bound of rank(GQ)"),
            Line2D([], [], color="0.3", ls="--", lw=1.2, label="2d: bound of a logit update"),
        ]
    else:
        note(ax_r, "the logit-gradient rank was not extracted")
    model_legend(fig, view, extra, ncols=4)
    fig.suptitle("The output layer as a gradient bottleneck")
    return fig


def _forms_panel(ax: Axes, view: View) -> None:
    """The four forms of the suppressed share at each model's last step, as grouped bars."""
    width = 0.8 / max(len(view.models), 1)
    x = np.arange(len(FORMS))
    for i, model in enumerate(view.models):
        last = [view.values(name, model) for name in FORMS]
        if any(v is None for v in last):
            continue
        heights = []
        for v in last:
            done = v[np.isfinite(v)]
            heights.append(done[-1] if done.size else np.nan)
        ax.bar(
            x + (i - (len(view.models) - 1) / 2) * width, heights, width, color=view.colors[model]
        )
    ax.set_xticks(x, list(FORMS.values()), fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_xlabel("per-token means (3 left), V as one batch (right)")
    ax.set_ylabel("share at the last step (fraction)")
    ax.set_title("forms of the suppressed share")
    ax.grid(True, axis="y", alpha=0.3)


def _rank_panel(ax: Axes, view: View) -> None:
    """rank(G) and rank(GQ) of the first N tokens at each model's last measured step, with the
    bound of each (min(N, V − 1), d) and 2d."""
    sizes = view.ds["rank_tokens"].values.astype(np.float64)
    n = len(view.models)
    vocab = set()
    for i, model in enumerate(view.models):
        rank = view.values("logit_grad_rank", model)  # (step, rank_tokens)
        done = np.flatnonzero(np.isfinite(rank).any(axis=1))
        if not done.size:
            continue
        # earlier models larger, so that models with the same ranks all stay visible
        ms = 4.0 + 7.0 * (n - 1 - i) / max(n - 1, 1)
        c = view.colors[model]
        line(ax, sizes, rank[done[-1]], color=c, marker="o", mfc="none", ms=ms, mew=1.4)
        kept = view.values("logit_grad_rank_kept", model)
        if kept is not None:
            line(ax, sizes, kept[done[-1]], color=c, marker="s", ms=ms * 0.6, ls="-.", lw=1.0)
        d = view.scalar("hidden_size", model)
        if d > 0:
            ax.axhline(d, color=c, ls=(0, (1, 3)), lw=1.2)
            ax.axhline(2 * d, color=c, ls="--", lw=1.2)
        V = view.scalar("vocab_size", model)
        if V > 0:
            vocab.add(V)
    for V in vocab:
        ax.plot(sizes, np.minimum(sizes, V - 1), color="k", ls=":", lw=1.2, zorder=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("tokens N (log2)")
    ax.set_ylabel("rank (rank)")
    ax.set_title("logit-gradient ranks at the last step")
    ax.grid(True, which="major", alpha=0.3)
