"""The interventions' figure: does reducing dissent or opposition delay deceleration?

* ``interventions``: one panel per number of the comparison (``pipeline.interventions``:
  deceleration t_d, L_d, r_d; final loss overall and in the rarest bins; single-step D on V and
  on the batch; D_W; cos(∇h⁺, ∇h⁻); the output layer's common direction, spectrum and the
  hidden states' anisotropy; the cross-seed KL), each intervention at each width as the mean
  over its seeds with their standard deviation, beside the baseline of its width (a line and a
  band of ± one standard deviation); below them, single-step D on the batch and on V over
  training at each width, one line per setting (Zero-sum learning Fig. 3b).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.interventions import BASELINE, METRICS, baseline_of, compare, course
from pipeline.plots.common import (
    legend_below,
    model_colors,
    note,
    note_figure,
    panel_title,
    step_axis,
    suptitle,
)

#: The single-step D drawn over training: (summary variable, where it is measured).
COURSES = (("train_D", "the update batch"), ("eval_D", "V"))


def plot_interventions(ds: xr.Dataset) -> Figure:
    """Each intervention against the baseline of its width, mean ± s.d. over seeds."""
    settings = compare(ds)
    treated = [s for s in settings if s.intervention != BASELINE]
    if not treated:
        return note_figure("Interventions", "no model of this run was trained with an intervention")
    names = list(dict.fromkeys(s.intervention for s in treated))
    widths = sorted({s.width for s in settings})
    colors = {int(w): c for w, c in model_colors(widths).items()}  # one colour per width
    seeds = sorted({len(s.models) for s in settings})
    n_metric, n_course = len(METRICS), len(COURSES) * len(widths)
    m_rows, c_rows = math.ceil(n_metric / 4), math.ceil(n_course / 4)  # 4 panels a row
    fig = Figure(figsize=(16, 3.6 * (m_rows + c_rows)), layout="constrained")
    axes = fig.subplots(m_rows + c_rows, 4).ravel()
    metric, course = axes[: 4 * m_rows], axes[4 * m_rows :]
    for ax in [*metric[n_metric:], *course[n_course:]]:
        ax.remove()
    _comparison(metric[:n_metric], settings, treated, names, widths, colors)
    _courses(course[:n_course], ds, settings, names, widths)
    spread = "one seed" if seeds == [1] else f"mean ± s.d. over {'/'.join(map(str, seeds))} seeds"
    suptitle(
        fig,
        f"Interventions against the baseline of their width ({spread}; dashed: the baseline, "
        "band: its ± s.d.); below: single-step D over training",
    )
    handles = [
        Line2D([], [], color=colors[w], marker="o", ls="--", label=f"d = {w}") for w in widths
    ]
    handles += [
        Line2D([], [], color=_setting_color(i), lw=1.6, ls="--" if i == 0 else "-", label=n)
        for i, n in enumerate([BASELINE, *names])
    ]
    legend_below(fig, handles)
    return fig


def _setting_color(i: int):
    """Setting ``i`` of the over-training panels: the baseline (0) black, the interventions in
    tab10's order."""
    return "black" if i == 0 else colormaps["tab10"]((i - 1) % 10)


def _comparison(axes, settings, treated, names, widths, colors) -> None:
    offset = {w: (i - (len(widths) - 1) / 2) * 0.25 for i, w in enumerate(widths)}
    for ax, (key, label, _) in zip(axes, METRICS, strict=True):
        for w in widths:
            base = baseline_of(settings, w)
            if base is not None and np.isfinite(base.mean(key)):
                m, sd = base.mean(key), base.spread(key)
                ax.axhline(m, color=colors[w], lw=1, ls="--")
                if np.isfinite(sd):
                    ax.axhspan(m - sd, m + sd, color=colors[w], alpha=0.12, lw=0)
            for i, name in enumerate(names):
                s = next((s for s in treated if s.intervention == name and s.width == w), None)
                if s is None or not np.isfinite(s.mean(key)):
                    continue
                sd = s.spread(key)
                ax.errorbar(
                    i + offset[w],
                    s.mean(key),
                    yerr=sd if np.isfinite(sd) else None,
                    fmt="o",
                    color=colors[w],
                    capsize=3,
                    ms=5,
                )
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.grid(axis="y", color="0.9")
        ax.set_xlabel("intervention", fontsize=8)
        ax.set_ylabel("mean ± s.d. over seeds", fontsize=8)
        panel_title(ax, label)


def _courses(axes, ds, settings, names, widths) -> None:
    panels = [(var, where, w) for var, where in COURSES for w in widths]
    for ax, (var, where, w) in zip(axes, panels, strict=True):
        drawn = False
        for i, name in enumerate([BASELINE, *names]):
            s = next((s for s in settings if s.intervention == name and s.width == w), None)
            if s is None or var not in ds:
                continue
            steps, mean, sd = course(ds, s, var)
            if not steps.size:
                continue
            color = _setting_color(i)
            base = {"lw": 1.6, "ls": "--", "zorder": 5} if i == 0 else {"lw": 1.2}  # on top
            ax.plot(steps, mean, color=color, marker="o", ms=3, **base)
            if np.isfinite(sd).all():
                ax.fill_between(steps, mean - sd, mean + sd, color=color, alpha=0.1, lw=0)
            drawn = True
        if not drawn:
            note(ax, "the update stage measured no step of these models")
        first = min((line.get_xdata().min() for line in ax.get_lines()), default=0)
        if first > 0:  # a log axis over the measured steps
            ax.set_xscale("log", base=2)
            ax.set_xlabel("training step (log)")
            ax.grid(True, alpha=0.3)
        else:
            step_axis(ax)
        ax.set_ylabel("single-step D", fontsize=8)
        ax.grid(color="0.9")
        panel_title(ax, f"D on {where}, d = {w}")
