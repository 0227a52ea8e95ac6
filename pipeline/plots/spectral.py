"""The figures of *Why do small language models underperform? Studying LM saturation via the
softmax bottleneck* (Godey, de la Clergerie & Sagot 2024), with Gradient Dissent's total dissent
beside them.

* ``head_spectrum``: the output layer's singular values over σ₁ at every step, one panel per
  model (their Fig. 4).
* ``spectral_saturation``: over training, the spectrum's KL divergence from uniform and the
  final hidden states' anisotropy, with each model's saturation and dissent-onset steps marked
  (their Fig. 3, 5); and the mean cos(∇h⁺, ∇h⁻) against the output layer's common-direction
  share, the geometric condition of total dissent.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from pipeline.plots.common import (
    COS_DISSENT,
    STEP_CMAP,
    View,
    finite_mean,
    has,
    hide_unused,
    line,
    model_legend,
    note,
    note_figure,
    number,
    panel_title,
    panels,
    per_model,
    step_axis,
    suptitle,
)
from pipeline.schema import overall

NOT_MEASURED = "the output layer's geometry was not extracted\n(stores from an older version)"


def plot_head_spectrum(ds: xr.Dataset) -> Figure:
    """One panel per model: σ_i / σ₁ against i (log-log), one line per step coloured by step."""
    if not has(ds, "head_singular_values"):
        return note_figure("Spectrum of the output layer", NOT_MEASURED)
    view, fig, axes = panels(ds, per_model, panel=(3.6, 3.0), margin=(1.2, 0.6), sharey=True)
    position = spectrum_travel(view)
    norm = Normalize(0.0, 1.0)
    for ax, model in zip(axes.flat, view.models):
        s = view.values("head_singular_values", model)  # (step, singular)
        done = np.flatnonzero(np.isfinite(s).any(axis=1))
        if not done.size:
            note(ax, f"{model}:\n{NOT_MEASURED}")
            continue
        for k in done:
            row = s[k][np.isfinite(s[k]) & (s[k] > 0)]
            ax.plot(np.arange(1, row.size + 1), row, color=STEP_CMAP(position[k]), lw=1.1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        top = int(np.isfinite(s[done]).sum(axis=1).max())
        marks = 2 ** np.arange(int(np.log2(max(top, 1))) + 1)
        ax.set_xticks(marks, [str(m) for m in marks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        panel_title(ax, model)
        ax.set_xlabel("singular value index i (log2)")
        ax.set_ylabel("σ_i / σ₁ (log)")
        ax.grid(True, which="major", alpha=0.3)
    hide_unused(axes, len(view.models))
    marks = _spread(position)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=STEP_CMAP), ax=axes, shrink=0.8)
    bar.set_ticks(position[marks], labels=[f"{int(view.steps[k]):,}" for k in marks])
    bar.set_label("training step")  # spaced by the spectrum's change: see the caption
    suptitle(fig, "Spectrum of the output layer U over training")
    return fig


def spectrum_travel(view: View) -> np.ndarray:
    """Each step's place on the colour scale, 0 (the first step) to 1 (the last): the distance
    the log spectrum has travelled since the first step (summed over steps, mean over the
    models), so that the colours go to the steps where the spectrum changes, not to the step
    numbers (a log of steps spends half its range on the first few, a linear one on the last)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.stack([np.log(view.values("head_singular_values", m)) for m in view.models])
        moves = finite_mean(finite_mean(np.diff(logs, axis=1) ** 2, axis=2) ** 0.5, axis=0)
    travel = np.concatenate([[0.0], np.cumsum(np.nan_to_num(moves))])
    return travel / travel[-1] if travel[-1] > 0 else np.linspace(0.0, 1.0, travel.size)


def _spread(position: np.ndarray, gap: float = 0.07) -> list[int]:
    """The steps to label on the colour bar: the first, then each at least ``gap`` beyond the
    last one labelled, and the last step."""
    marks = [0]
    for k in range(1, position.size):
        if position[k] - position[marks[-1]] >= gap:
            marks.append(k)
    if marks[-1] != position.size - 1 and position.size > 1:
        if position[-1] - position[marks[-1]] < gap and len(marks) > 1:
            marks.pop()
        marks.append(position.size - 1)
    return marks


def plot_spectral_saturation(ds: xr.Dataset) -> Figure:
    """KL(spectrum ‖ uniform) and anisotropy over training with the saturation (▼) and
    dissent-onset (◆) steps; the mean cos(∇h⁺, ∇h⁻) against the common-direction share."""
    if not has(ds, "head_spectrum_kl"):
        return note_figure("Spectral saturation", NOT_MEASURED)
    view, fig, axes = panels(ds, lambda n: (1, 3), panel=(4.4, 4.0))
    ax_k, ax_a, ax_d = axes[0]
    for model in view.models:
        c = view.colors[model]
        for ax, var in ((ax_k, "head_spectrum_kl"), (ax_a, "anisotropy")):
            y = view.values(var, model)
            line(ax, view.steps, y, color=c, lw=1.5)
            _mark(ax, view, model, y, "saturation_step", "v")
            _mark(ax, view, model, y, "dissent_onset_step", "D")
        share = view.values("head_common_direction", model)
        cos = view.values(overall("cos_attractive_repulsive"), model)
        line(ax_d, share, cos, color=c, lw=1.0, marker="o", ms=3)
        if share is not None and cos is not None:
            ok = np.flatnonzero(np.isfinite(share) & np.isfinite(cos))
            if ok.size:  # the last step, larger
                ax_d.plot(share[ok[-1]], cos[ok[-1]], "o", color=c, ms=8, mec="k", mew=0.7)
    ax_k.set_ylabel("KL(σ / Σσ ‖ uniform) (nats)")
    panel_title(ax_k, "spectral saturation of U")
    step_axis(ax_k)
    ax_a.set_ylabel("mean pairwise cos(h_i, h_j)")
    panel_title(ax_a, "anisotropy of the final hidden states")
    step_axis(ax_a)
    threshold = view.setting("dissent_threshold")
    if threshold is not None:
        ax_d.axhline(threshold, color="0.4", ls=":", lw=1.2)
    ax_d.axhline(-1, color="0.6", lw=0.6)
    ax_d.set_xlabel("common direction ‖mean_j U_j‖ / mean_j ‖U_j‖")
    ax_d.set_ylabel(f"mean {COS_DISSENT}")
    panel_title(ax_d, "dissent against the common direction")
    ax_d.grid(True, alpha=0.3)
    rule = f" ({number(threshold)})" if threshold is not None else ""
    marks = {
        "saturation_step": Line2D([], [], color="0.3", marker="v", ls="", label="saturation step"),
        "dissent_onset_step": Line2D(
            [], [], color="0.3", marker="D", ls="", ms=5, label="dissent onset"
        ),
    }
    extra = [  # the steps marked where some model reaches them
        handle
        for var, handle in marks.items()
        if np.isfinite([view.scalar(var, m) for m in view.models]).any()
    ]
    extra += [
        Line2D([], [], color="0.4", ls=":", label=f"total-dissent threshold{rule}"),
        Line2D([], [], color="0.3", marker="o", ms=8, mec="k", ls="", label="last step"),
    ]
    model_legend(fig, view, extra, ncols=5)
    suptitle(fig, "Spectral saturation, anisotropy and the geometry of total dissent")
    return fig


def _mark(ax: Axes, view: View, model: str, y: np.ndarray | None, var: str, marker: str) -> None:
    """A marker on the model's curve ``y`` at its step ``var`` (nothing where it is NaN)."""
    step = view.scalar(var, model)
    if y is None or not np.isfinite(step):
        return
    k = np.flatnonzero(view.steps == step)
    if k.size and np.isfinite(y[k[0]]):
        ax.plot(step, y[k[0]], marker, color=view.colors[model], ms=8, mec="k", mew=0.7, zorder=4)
