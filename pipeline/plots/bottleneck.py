"""The figure of *Lost in Backpropagation: the LM head as a gradient bottleneck* (Godey &
Artzi 2026).

* ``bottleneck``: the share of the logit gradient lost in the output layer over training (per
  token and for V as one batch), the four forms "suppressed" may mean at each model's last step,
  and the ranks against the number of tokens N (Fig. 2): rank(G) under its bound min(N, V − 1),
  rank(GQ) of what survives the head under d, and 2d, the rank bound of a logit update.
* ``head_rank``: its head-rank experiment (Fig. 1, 3) at toy scale: the evaluation loss and the
  suppressed share of models whose output layer is factored through rank r, and the final loss
  against r.
* ``spamlang``: its SpamLang experiment (Fig. 4, 5) at toy scale: the final evaluation loss over
  vocabulary size × learning rate, against V/d, and over training.

The last two select their models by how the toy suite trained them (the summary's
``toy_models`` attrs: language, learning rate, width, head rank).
"""

from __future__ import annotations

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.plots import EXPERIMENTS
from pipeline.plots.common import (
    View,
    has,
    line,
    model_legend,
    note,
    note_figure,
    number,
    panel_title,
    panels,
    step_axis,
    suptitle,
)
from pipeline.schema import overall

#: The forms of the suppressed share, as labelled in the figure: the stored variable
#: (``pipeline.schema``) and how the share follows from it. The kept cosine √κ is a kept
#: share: its suppressed counterpart is 1 − √κ.
FORMS = {
    "1 − κ\nsq. norms": ("suppressed_squared", lambda v: v),
    "√(1 − κ)\nnorms": ("suppressed_norm", lambda v: v),
    "1 − √κ\nkept cosine": ("kept_cosine", lambda v: 1.0 - v),
    "batch form\nΣ over V": ("suppressed_batch", lambda v: v),
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
    panel_title(ax_k, "gradient lost in the output layer")
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
    suptitle(fig, "The output layer as a gradient bottleneck")
    return fig


def _forms_panel(ax: Axes, view: View) -> None:
    """The four forms of the suppressed share at each model's last step, as grouped bars."""
    width = 0.8 / max(len(view.models), 1)
    x = np.arange(len(FORMS))
    for i, model in enumerate(view.models):
        if any(var not in view.ds for var, _ in FORMS.values()):
            continue
        heights = [share(_final(view, var, model)) for var, share in FORMS.values()]
        ax.bar(
            x + (i - (len(view.models) - 1) / 2) * width, heights, width, color=view.colors[model]
        )
    ax.set_xticks(x, list(FORMS), fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_xlabel("per-token means (3 left), V as one batch (right)")
    ax.set_ylabel("share at the last step (fraction)")
    panel_title(ax, "forms of the suppressed share")
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
    ax.set_ylabel("rank")
    panel_title(ax, "logit-gradient ranks at the last step")
    ax.grid(True, which="major", alpha=0.3)


# -- the controlled experiments (toy suite) ------------------------------------------------------


def _toy(view: View, model: str) -> dict:
    """How the toy suite trained ``model`` (empty for a model it did not train)."""
    return (view.ds.attrs.get("toy_models") or {}).get(model) or {}


def _experiment(ds: xr.Dataset, select, title: str, missing: str, panel: tuple[float, float]):
    """The view of the models whose toy training ``select(toy_models[m])`` picks and a row of
    three panels, or a note figure saying ``missing`` where it picks none."""
    view = View.of(ds)
    models = [m for m in view.models if select(_toy(view, m))]
    if not models:
        return note_figure(title, missing)
    view, fig, axes = panels(ds.sel(model=models), lambda n: (1, 3), panel=panel)
    return view, fig, axes[0]


def _final(view: View, var: str, model: str) -> float:
    """``var`` at the model's last step with a finite value; NaN if none."""
    v = view.values(var, model)
    if v is None:
        return float("nan")
    done = v[np.isfinite(v)]
    return float(done[-1]) if done.size else float("nan")


def plot_head_rank(ds: xr.Dataset) -> Figure:
    """Models whose output layer is factored through rank r (U = A·B): the evaluation loss and
    the suppressed share over training, and the final loss against r."""
    picked = _experiment(
        ds,
        EXPERIMENTS["head_rank"],
        "Head rank",
        "no model of this run factors its output layer\n(models.<name>.head_rank; "
        "config/bottleneck.yaml runs the sweep)",
        panel=(4.4, 4.0),
    )
    if isinstance(picked, Figure):
        return picked
    view, fig, (ax_l, ax_s, ax_r) = picked
    for model in view.models:
        c = view.colors[model]
        line(ax_l, view.steps, view.values(overall("loss"), model), color=c, lw=1.6)
        line(ax_s, view.steps, view.values("suppressed_squared", model), color=c, lw=1.6)
        r = _toy(view, model)["head_rank"]
        ax_r.plot([r], [_final(view, overall("loss"), model)], "o", color=c, ms=7)
    ax_l.set_ylabel("evaluation loss (nats)")
    panel_title(ax_l, "loss over training")
    step_axis(ax_l)
    ax_s.set_ylabel("1 − κ, mean over tokens (fraction)")
    panel_title(ax_s, "gradient lost in the output layer")
    step_axis(ax_s)
    ranks = sorted({_toy(view, m)["head_rank"] for m in view.models})
    ax_r.set_xscale("log", base=2)
    ax_r.set_xticks(ranks, [str(r) for r in ranks])
    ax_r.set_xlabel("head rank r (log2)")
    ax_r.set_ylabel("final evaluation loss (nats)")
    panel_title(ax_r, "final loss against the head rank")
    ax_r.grid(True, alpha=0.3)
    labels = {
        m: f"{m} (r = {_toy(view, m)['head_rank']}, d = {_toy(view, m)['hidden_size']})"
        for m in view.models
    }
    handles = [
        Line2D([], [], color=view.colors[m], marker="o", label=labels[m]) for m in view.models
    ]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=min(len(handles), 3), frameon=False
    )
    suptitle(fig, "Output layer factored through rank r (U = A·B), the body's width unchanged")
    return fig


def plot_spamlang(ds: xr.Dataset) -> Figure:
    """SpamLang models (every sequence one id repeated): the final evaluation loss over
    vocabulary size × learning rate at the sweep's width, the final loss as a share of ln V
    against V/d for every width, and the loss over training."""
    picked = _experiment(
        ds,
        EXPERIMENTS["spamlang"],
        "SpamLang",
        "no model of this run is trained on a SpamLang language\n(toy.languages with "
        "kind: spam; config/bottleneck.yaml runs the sweep)",
        panel=(4.6, 4.2),
    )
    if isinstance(picked, Figure):
        return picked
    view, fig, (ax_h, ax_v, ax_t) = picked
    info = {m: _toy(view, m) for m in view.models}
    final = {m: _final(view, overall("loss"), m) for m in view.models}
    widths = [info[m]["hidden_size"] for m in view.models]
    d = max(set(widths), key=lambda w: (widths.count(w), -w))  # the sweep's width
    _spam_grid(ax_h, view, [m for m in view.models if info[m]["hidden_size"] == d], final)
    panel_title(ax_h, f"final loss (nats) at d = {d}; colour: loss / ln V")
    rates = sorted({info[m]["learning_rate"] for m in view.models})
    markers = dict(zip(sorted(set(widths)), "osD^v<>"))
    cmap = matplotlib.colormaps["plasma"]
    for m in view.models:
        V, w = info[m]["language_vocab_size"], info[m]["hidden_size"]
        shade = cmap(0.15 + 0.7 * rates.index(info[m]["learning_rate"]) / max(len(rates) - 1, 1))
        ax_v.plot([V / w], [final[m] / np.log(V)], markers[w], color=shade, ms=7, mec="k", mew=0.5)
        loss = view.values(overall("loss"), m)
        if loss is not None:
            line(ax_t, view.steps, loss / np.log(V), color=view.colors[m], lw=1.3)
    ax_v.set_xscale("log", base=2)
    ax_v.set_ylim(0, 1.05)
    ax_v.set_xlabel("V / d (log2)")
    ax_v.set_ylabel("final loss / ln V (1: uniform guess)")
    panel_title(ax_v, "against vocabulary per dimension")
    ax_v.grid(True, alpha=0.3)
    ax_t.set_ylim(0, 1.05)
    ax_t.set_ylabel("loss / ln V")
    panel_title(ax_t, "over training")
    step_axis(ax_t)
    extra = [
        Line2D([], [], ls="", marker=markers[w], color="0.5", mec="k", label=f"d = {w}")
        for w in sorted(markers)
    ] + [
        Line2D(
            [],
            [],
            ls="",
            marker="s",
            ms=8,
            color=cmap(0.15 + 0.7 * i / max(len(rates) - 1, 1)),
            label=f"lr {number(r)}",
        )
        for i, r in enumerate(rates)
    ]
    model_legend(fig, view, extra, ncols=6)
    suptitle(fig, "SpamLang: every sequence one id repeated; can the output layer learn to copy?")
    return fig


def _spam_grid(ax: Axes, view: View, models: list[str], final: dict) -> None:
    """Final loss of ``models`` on a learning-rate × vocabulary grid, coloured by loss / ln V
    and annotated with the loss and the model's name."""
    info = {m: _toy(view, m) for m in models}
    vocab = sorted({info[m]["language_vocab_size"] for m in models})
    rates = sorted({info[m]["learning_rate"] for m in models})
    share = np.full((len(rates), len(vocab)), np.nan)
    for m in models:
        i, j = rates.index(info[m]["learning_rate"]), vocab.index(info[m]["language_vocab_size"])
        share[i, j] = final[m] / np.log(vocab[j])
        ax.text(
            j,
            i,
            f"{final[m]:.2f}\n{m}",
            ha="center",
            va="center",
            fontsize=6.5,
            color="w" if share[i, j] > 0.5 else "k",
        )
    im = ax.imshow(share, cmap="viridis_r", vmin=0, vmax=1, origin="lower", aspect="auto")
    ax.set_xticks(range(len(vocab)), [str(v) for v in vocab])
    ax.set_yticks(range(len(rates)), [number(r) for r in rates])
    ax.set_xlabel("vocabulary size V")
    ax.set_ylabel("peak learning rate")
    ax.figure.colorbar(im, ax=ax, label="final loss / ln V", shrink=0.8)
