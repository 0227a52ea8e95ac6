"""The plots stage: the papers' figures, each one function ``plot_<thing>(dataset) -> Figure``.

Every function takes the summary dataset as ``pipeline.reduce.open_summary`` returns it (model
names as the ``model`` coordinate) and returns a matplotlib figure; ``save`` writes it as PNG and
PDF. Steps are drawn on a symmetric-log axis so that step 0 and Pythia's log-spaced early
checkpoints are visible beside the evenly spaced later ones.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline.data import UNSEEN_BIN  # noqa: E402

BIN_CMAP = "viridis"


def _step_axis(ax) -> None:
    ax.set_xscale("symlog", linthresh=1, linscale=0.4)
    ax.set_xlim(left=0)
    ax.set_xlabel("training step (symlog)")
    ax.grid(True, which="major", alpha=0.3)


def _bin_norm(bins: np.ndarray) -> BoundaryNorm:
    # one color per integer log2-frequency bin
    edges = np.arange(bins.min() - 0.5, bins.max() + 1.5)
    return BoundaryNorm(edges, plt.get_cmap(BIN_CMAP).N)


def plot_loss_by_bin(ds: xr.Dataset) -> Figure:
    """Mean loss per log2-frequency bin over steps, one panel per model (Gradient Dissent Fig. 1).

    Filled markers are improving points, open markers saturated ones (loss more than the tolerance
    above the best earlier loss); the dashed line marks the model's overall saturation step.
    """
    models = list(ds["model"].values)
    bins = ds["bin"].values[ds["bin"].values != UNSEEN_BIN]
    norm = _bin_norm(bins)
    cmap = plt.get_cmap(BIN_CMAP)
    ncols = min(len(models), 2 if len(models) == 4 else 3)
    nrows = -(-len(models) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.6 * ncols + 1.2, 3.2 * nrows),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    steps = ds["step"].values
    for ax, model in zip(axes.flat, models):
        m = ds.sel(model=model)
        for b in bins:
            loss = m["loss"].sel(bin=b).values
            ok = ~np.isnan(loss)
            if not ok.any():
                continue
            imp = m["improving"].sel(bin=b).values.astype(bool) & ok
            color = cmap(norm(b))
            ax.plot(steps[ok], loss[ok], color=color, lw=1.2)
            ax.scatter(steps[imp], loss[imp], color=color, s=14, zorder=3)
            sat = ok & ~imp
            ax.scatter(steps[sat], loss[sat], facecolor="white", edgecolor=color, s=14, zorder=3)
        sat_step = float(m["saturation_step"].values)
        if not np.isnan(sat_step):
            ax.axvline(sat_step, color="k", ls="--", lw=1)
            ax.text(
                sat_step,
                0.98,
                f" saturated\n from {sat_step:g}",
                transform=ax.get_xaxis_transform(),
                va="top",
                ha="left",
                fontsize=8,
            )
        ax.set_title(str(model))
        _step_axis(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel("mean loss (nats)")
    for ax in axes.flat[len(models) :]:
        ax.set_visible(False)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    cbar = fig.colorbar(sm, ax=axes, shrink=0.9, pad=0.01, ticks=np.unique(bins))
    cbar.set_label("token frequency bin  ⌊log2 f⌋")
    handles = [
        plt.Line2D([], [], marker="o", ls="", color="0.3", label="improving"),
        plt.Line2D([], [], marker="o", ls="", mfc="white", color="0.3", label="saturated"),
        plt.Line2D([], [], ls="--", color="k", label="saturation step"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle("Loss per frequency bin over training")
    return fig


def save(fig: Figure, png_path: str, pdf_path: str | None = None) -> None:
    """Write ``fig`` as PNG (and PDF) and close it."""
    fig.savefig(png_path, dpi=150)
    if pdf_path:
        fig.savefig(pdf_path)
    plt.close(fig)
