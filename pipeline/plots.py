"""The plots stage: the papers' figures, each one function ``plot_<thing>(dataset) -> Figure``.

Every function takes the summary dataset as ``pipeline.reduce.open_summary`` returns it (model
names as the ``model`` coordinate) and returns a matplotlib figure; ``save`` writes it as PNG and
PDF, and ``draw`` does both for one entry of ``FIGURES`` (what the workflow calls). Steps are
drawn on a symmetric-log axis so that step 0 and Pythia's log-spaced early checkpoints are visible
beside the evenly spaced later ones; loss curves that are compared with power laws are log-log
(step 0 left out).

Colours: a log2-frequency bin always has the same viridis colour (colorbar beside the panels; the
bin of ids never seen is left out), a transformer block a colour of a sequential colormap, and a
model the same qualitative colour in every cross-model figure (``model_colors``). Every function
copes with one or many models, NaNs (a model lacking a step or a layer), a single step, and
missing optional variables (no parameter gradients, no logit-gradient rank, no checkpoint pairs):
a panel whose data were not extracted shows a centred note instead.
"""

from __future__ import annotations

import zlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from pipeline.maths.frequency import UNSEEN_BIN  # noqa: E402
from pipeline.maths.bnsl import bnsl  # noqa: E402

BIN_CMAP = "viridis"
SATURATION_CMAP = "magma_r"  # early saturation dark, late saturation light
#: Transformer blocks: plasma without its pale yellow end (unreadable on white).
LAYER_CMAP = ListedColormap(plt.get_cmap("plasma")(np.linspace(0.0, 0.85, 256)), name="layers")
BIN_LABEL = "token frequency bin  ⌊log2 f⌋"
NO_PARAMETERS = "parameter gradients were not extracted"
COSINES = {  # the four cosines of the decomposition basis (Gradient Dissent Fig. 2, 6)
    "cos_h_attractive": r"$\cos(h, \nabla h^{+})$",
    "cos_h_repulsive": r"$\cos(h, \nabla h^{-})$",
    "cos_grad_attractive": r"$\cos(\nabla h, \nabla h^{+})$",
    "cos_grad_repulsive": r"$\cos(\nabla h, \nabla h^{-})$",
}
COS_DISSENT = r"$\cos(\nabla h^{+}, \nabla h^{-})$"


# -- helpers -------------------------------------------------------------------------------------


def _model_palette(n_models: int) -> list[tuple]:
    """tab10 (tab20 beyond 9 models) without its greys, which mark references (all tokens,
    the output layer) in the figures."""
    if n_models <= 9:
        return [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    return [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]


def model_colors(models) -> dict[str, tuple]:
    """One qualitative colour per model name, the same in every figure.

    A model's preferred colour is a hash (CRC-32) of its name into the palette, so it depends
    neither on the order of ``models`` nor, unless two names hash alike, on the other models.
    Clashes are resolved in name order (the first name keeps its colour, the next takes the
    next free one), so up to 9 models (18 with tab20) always get distinct colours.
    """
    names = sorted({str(m) for m in models})
    palette = _model_palette(len(names))
    n = len(palette)
    colors, used = {}, set()
    for name in names:
        if len(used) == n:  # more models than colours: start reusing
            used = set()
        s = zlib.crc32(name.encode()) % n
        while s in used:
            s = (s + 1) % n
        used.add(s)
        colors[name] = tuple(palette[s])
    return colors


def _named(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the model names as strings (integer ids too, if a store was opened unlabelled)."""
    return ds.assign_coords(model=[str(m) for m in ds["model"].values])


def _models(ds: xr.Dataset) -> list[str]:
    return [str(m) for m in ds["model"].values]


def _bins(ds: xr.Dataset) -> np.ndarray:
    bins = ds["bin"].values
    return bins[bins != UNSEEN_BIN]


def _values(ds: xr.Dataset, var: str, model: str, **sel) -> np.ndarray | None:
    """``ds[var]`` of one model (and ``sel``) as floats; None if the variable is missing."""
    if var not in ds:
        return None
    da = ds[var].sel(model=model, **sel)
    if "step" in da.dims:
        da = da.transpose("step", ...)
    return np.asarray(da.values, dtype=np.float64)


def _scalar(ds: xr.Dataset, var: str, model: str) -> float:
    """A per-model number (``saturation_step``, ``n_params``, ...); NaN if missing."""
    v = _values(ds, var, model)
    return float(v) if v is not None and v.size == 1 else float("nan")


def _has(ds: xr.Dataset, var: str) -> bool:
    return var in ds and bool(np.isfinite(np.asarray(ds[var].values, dtype=np.float64)).any())


def _line(ax, x, y, **kwargs):
    """Plot the finite points of (x, y) only, so that NaN gaps do not hide isolated points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    if ok.sum() == 1 and "marker" not in kwargs:
        kwargs["marker"] = "o"
        kwargs.setdefault("ms", 3)
    return ax.plot(x[ok], y[ok], **kwargs)[0]


def _step_axis(ax) -> None:
    ax.set_xscale("symlog", linthresh=1, linscale=0.4)
    if ax.get_xlim()[1] <= 1:  # nothing beyond step 0 (or nothing at all): a visible range
        ax.set_xlim(right=10)
    ax.set_xlim(left=-0.3)  # a margin, so that markers at step 0 are not cut in half
    ax.set_xlabel("training step (symlog)")
    ax.grid(True, which="major", alpha=0.3)


def _zero_line(ax) -> None:
    """A thin line at 0 that does not stretch the y range to include 0."""
    line = Line2D([0, 1], [0, 0], color="0.5", lw=0.6, transform=ax.get_yaxis_transform())
    ax.add_artist(line)  # an artist, not a line: it takes no part in the data limits


def _bin_norm(bins: np.ndarray) -> BoundaryNorm:
    # one color per integer log2-frequency bin
    edges = np.arange(bins.min() - 0.5, bins.max() + 1.5)
    return BoundaryNorm(edges, plt.get_cmap(BIN_CMAP).N)


def _ticks(values: np.ndarray, most: int = 12) -> np.ndarray:
    """At most ``most`` evenly thinned integer ticks."""
    values = np.unique(values)
    return values[:: -(-values.size // most)] if values.size else values


def _bin_colorbar(fig: Figure, axes, bins: np.ndarray) -> None:
    if not bins.size:
        return
    sm = plt.cm.ScalarMappable(norm=_bin_norm(bins), cmap=plt.get_cmap(BIN_CMAP))
    cbar = fig.colorbar(sm, ax=axes, shrink=0.9, pad=0.02, ticks=_ticks(bins))
    cbar.set_label(BIN_LABEL)


def _bin_color(bins: np.ndarray):
    if not bins.size:  # only ids never seen: nothing is drawn per bin
        return lambda b: "0.5"
    norm, cmap = _bin_norm(bins), plt.get_cmap(BIN_CMAP)
    return lambda b: cmap(norm(b))


def _layer_norm(layers: np.ndarray) -> BoundaryNorm:
    edges = np.arange(layers.min() - 0.5, layers.max() + 1.5)
    return BoundaryNorm(edges, LAYER_CMAP.N)


def _panels(n: int, ncols_max: int = 3) -> tuple[int, int]:
    ncols = min(n, 2 if n == 4 else ncols_max)
    return -(-n // ncols), ncols


def _note(ax, text: str) -> None:
    """A centred note in place of a panel whose data were not extracted."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11)


def _note_figure(title: str, text: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 2.5), layout="constrained")
    _note(ax, text)
    fig.suptitle(title)
    return fig


def _hide_unused(axes, n: int) -> None:
    for ax in axes.flat[n:]:
        ax.set_visible(False)


def _model_legend(fig: Figure, models: list[str], colors: dict, extra=(), **kwargs) -> None:
    handles = [Line2D([], [], color=colors[m], marker="o", label=m) for m in models]
    handles += list(extra)
    ncols = kwargs.pop("ncols", min(len(handles), 4))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False, **kwargs)


# -- Gradient Dissent ----------------------------------------------------------------------------


def plot_loss_by_bin(ds: xr.Dataset) -> Figure:
    """Mean loss per log2-frequency bin over steps, one panel per model (Gradient Dissent Fig. 1).

    Filled markers are improving points, open markers saturated ones (loss more than the tolerance
    above the best earlier loss); the dashed line marks the model's overall saturation step.
    """
    ds = _named(ds)
    models = _models(ds)
    bins = _bins(ds)
    color = _bin_color(bins)
    nrows, ncols = _panels(len(models))
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
        for b in bins:
            loss = _values(ds, "loss", model, bin=b)
            ok = ~np.isnan(loss)
            if not ok.any():
                continue
            imp = ds["improving"].sel(model=model, bin=b).values.astype(bool) & ok
            c = color(b)
            ax.plot(steps[ok], loss[ok], color=c, lw=1.2)
            ax.scatter(steps[imp], loss[imp], color=c, s=14, zorder=3)
            sat = ok & ~imp
            ax.scatter(steps[sat], loss[sat], facecolor="white", edgecolor=c, s=14, zorder=3)
        ax.set_title(model)
        ax.set_ylabel("mean loss (nats)")
        _step_axis(ax)
        sat_step = _scalar(ds, "saturation_step", model)
        if not np.isnan(sat_step):
            ax.axvline(sat_step, color="k", ls="--", lw=1)
            # the note on the side of the line with room, inside the panel
            x = ax.transAxes.inverted().transform(ax.transData.transform((sat_step, 0)))[0]
            right = x < 0.6
            ax.text(
                sat_step,
                0.98,
                f" saturated\n from {sat_step:g}" if right else f"saturated \nfrom {sat_step:g} ",
                transform=ax.get_xaxis_transform(),
                va="top",
                ha="left" if right else "right",
                fontsize=8,
            )
    _hide_unused(axes, len(models))
    _bin_colorbar(fig, axes, bins)
    handles = [
        Line2D([], [], marker="o", ls="", color="0.3", label="improving"),
        Line2D([], [], marker="o", ls="", mfc="white", color="0.3", label="saturated"),
        Line2D([], [], ls="--", color="k", label="saturation step"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle("Loss per frequency bin over training")
    return fig


def plot_decomposition_basis(ds: xr.Dataset) -> Figure:
    """The four cosines between h, ∇h and the attractive/repulsive parts ∇h⁺, ∇h⁻, per bin over
    steps (Gradient Dissent Fig. 2, 6): one row per model, one column per cosine; the black line
    is the mean over all tokens."""
    ds = _named(ds)
    models = _models(ds)
    bins = _bins(ds)
    color = _bin_color(bins)
    steps = ds["step"].values
    n = len(models)
    fig, axes = plt.subplots(
        n,
        len(COSINES),
        figsize=(2.9 * len(COSINES) + 1.3, 2.5 * n + 1.0),
        sharey="col",
        squeeze=False,
        layout="constrained",
    )
    for row, model in zip(axes, models):
        for j, (ax, (var, label)) in enumerate(zip(row, COSINES.items())):
            for b in bins:
                y = _values(ds, var, model, bin=b)
                if y is not None:
                    _line(ax, steps, y, color=color(b), lw=1.0)
            overall = _values(ds, f"{var}_overall", model)
            if overall is not None:
                _line(ax, steps, overall, color="k", lw=1.6, ls="--")
            _zero_line(ax)
            if ax in axes[0]:
                ax.set_title(label)
            ax.set_ylabel(f"{model}\ncosine" if j == 0 else "cosine")
            _step_axis(ax)
    _bin_colorbar(fig, axes, bins)
    fig.legend(
        handles=[Line2D([], [], color="k", ls="--", lw=1.6, label="all tokens")],
        loc="outside lower center",
        frameon=False,
    )
    fig.suptitle("Decomposition basis: cosines of the attractive and repulsive gradients at h")
    return fig


def plot_dissent(ds: xr.Dataset) -> Figure:
    """Per model: the norms of ∇h⁺, ∇h⁻ and ∇h (mean over all tokens, log scale) and
    cos(∇h⁺, ∇h⁻) per bin over steps (Gradient Dissent Fig. 3); the dotted line marks the onset
    of total dissent."""
    ds = _named(ds)
    models = _models(ds)
    colors = model_colors(models)
    bins = _bins(ds)
    color = _bin_color(bins)
    steps = ds["step"].values
    n = len(models)
    fig, axes = plt.subplots(
        n, 2, figsize=(9.0, 2.6 * n + 1.0), squeeze=False, layout="constrained"
    )
    norms = (
        ("norm_grad", "-", r"$\|\nabla h\|$"),
        ("norm_attractive", "--", r"$\|\nabla h^{+}\|$"),
        ("norm_repulsive", ":", r"$\|\nabla h^{-}\|$"),
    )
    for (ax_n, ax_c), model in zip(axes, models):
        for var, ls, _ in norms:
            y = _values(ds, f"{var}_overall", model)
            if y is not None:
                _line(ax_n, steps, np.where(y > 0, y, np.nan), color=colors[model], ls=ls, lw=1.5)
        ax_n.set_yscale("log")
        ax_n.set_ylabel(f"{model}\ngradient norm (nats / unit h)")
        _step_axis(ax_n)
        for b in bins:
            _line(
                ax_c, steps, _values(ds, "cos_attractive_repulsive", model, bin=b), color=color(b)
            )
        overall = _values(ds, "cos_attractive_repulsive_overall", model)
        _line(ax_c, steps, overall, color="k", lw=1.6, ls="--")
        onset = _scalar(ds, "dissent_onset_step", model)
        if np.isfinite(onset):
            ax_c.axvline(onset, color="k", ls=":", lw=1.2)
        ax_c.axhline(0, color="0.5", lw=0.6)
        ax_c.set_ylim(-1.05, 1.05)
        ax_c.set_ylabel("cosine")
        _step_axis(ax_c)
    axes[0, 0].set_title("gradient norms at h (all tokens)")
    axes[0, 1].set_title(f"{COS_DISSENT} per bin")
    _bin_colorbar(fig, axes[:, 1], bins)
    handles = [Line2D([], [], color="0.3", ls=ls, lw=1.5, label=lab) for _, ls, lab in norms]
    handles += [
        Line2D([], [], color="k", ls="--", lw=1.6, label=f"{COS_DISSENT}, all tokens"),
        Line2D([], [], color="k", ls=":", lw=1.2, label="dissent onset"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, frameon=False)
    fig.suptitle("Gradient dissent: attractive against repulsive gradient at h")
    return fig


def _layer_panels(ds: xr.Dataset, var: str, title: str, ylabel: str, extras, ylim=None) -> Figure:
    """One panel per model: ``var (model, step, layer)`` coloured by layer, plus ``extras``
    (variable, label, line style) in black."""
    ds = _named(ds)
    if var not in ds or "layer" not in ds[var].dims or not _has(ds, var):
        return _note_figure(title, NO_PARAMETERS)
    models = _models(ds)
    steps = ds["step"].values
    layers = ds["layer"].values
    norm = _layer_norm(layers)
    nrows, ncols = _panels(len(models))
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.6 * ncols + 1.3, 3.0 * nrows + 0.6),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for ax, model in zip(axes.flat, models):
        y = _values(ds, var, model)  # (step, layer)
        if not np.isfinite(y).any():
            _note(ax, f"{model}:\n{NO_PARAMETERS}")
            continue
        for k, layer in enumerate(layers):
            _line(ax, steps, y[:, k], color=LAYER_CMAP(norm(layer)), lw=1.1)
        for extra, _, ls in extras:
            e = _values(ds, extra, model)
            if e is not None:
                _line(ax, steps, e, color="k", ls=ls, lw=1.5)
        if ylim:
            ax.set_ylim(*ylim)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_title(model)
        ax.set_ylabel(ylabel)
        _step_axis(ax)
    _hide_unused(axes, len(models))
    sm = plt.cm.ScalarMappable(norm=norm, cmap=LAYER_CMAP)
    cbar = fig.colorbar(sm, ax=axes, shrink=0.9, pad=0.01, ticks=_ticks(layers))
    cbar.set_label("transformer block (0 = nearest the input)")
    handles = [
        Line2D([], [], color="k", ls=ls, lw=1.5, label=lab) for v, lab, ls in extras if v in ds
    ]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle(title)
    return fig


def plot_parameter_dissent(ds: xr.Dataset) -> Figure:
    """cos(∇θ⁺, ∇θ⁻) of each transformer block's parameters over steps, one panel per model,
    with the output layer's and the mean cosine at h over all tokens (Gradient Dissent Fig. 7)."""
    return _layer_panels(
        ds,
        "layer_cos_attractive_repulsive",
        "Gradient dissent in the parameters, per transformer block",
        "cosine",
        [
            ("head_cos_attractive_repulsive", "output layer (head)", "--"),
            ("cos_attractive_repulsive_overall", "at h, all tokens", ":"),
        ],
        ylim=(-1.05, 1.05),
    )


# -- Zero-sum learning ---------------------------------------------------------------------------


def _fmt(x, spec: str) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "–"
    return format(x, spec) if np.isfinite(x) else "–"


def _cell(row, key: str):
    return np.nan if row is None else row.get(key, np.nan)


def _flag(row) -> str:
    flag = row.get("flag", "") if row is not None else ""
    return "" if flag is None or (isinstance(flag, float) and np.isnan(flag)) else str(flag)


def _plain_log_labels(axis, lo: float, hi: float) -> None:
    """Plain numbers (3, 4, 6 rather than 3×10⁰) on a log axis spanning less than ~1.5 decades."""
    if np.isfinite([lo, hi]).all() and 0 < lo < hi < 30 * lo:
        fmt = FuncFormatter(lambda v, _: f"{v:g}")
        axis.set_major_formatter(fmt)
        axis.set_minor_formatter(fmt)


def _fit_params(row) -> dict[str, float] | None:
    """The BNSL parameters of a fit row (a = 0 where missing), or None if any is not finite."""
    p = {k: float(_cell(row, k)) for k in ("a", "b", "c0", "c1", "d1", "f1")}
    p["a"] = p["a"] if np.isfinite(p["a"]) else 0.0
    return p if np.isfinite(list(p.values())).all() and p["b"] > 0 and p["d1"] > 0 else None


def plot_bnsl(ds: xr.Dataset, fits: pd.DataFrame) -> Figure:
    """The overall loss of each model over steps (log-log, step 0 left out) with its fitted
    smoothly broken power law over the fitted steps, the deceleration point (t_d, L_d) and the
    post-break power law extrapolated to the last step T (ZSL Fig. 1), and the fitted numbers as
    a table (ZSL Table 2). A model without a fit row, or a fit with NaNs, shows its loss only.
    """
    ds = _named(ds)
    models = _models(ds)
    colors = model_colors(models)
    steps = ds["step"].values.astype(np.float64)
    rows = {str(r["model"]): r for _, r in fits.iterrows()} if "model" in fits else {}
    fig = plt.figure(figsize=(9.5, 5.0 + 0.26 * len(models)), layout="constrained")
    gs = fig.add_gridspec(2, 1, height_ratios=[4.2, 0.5 + 0.26 * (len(models) + 1)])
    ax = fig.add_subplot(gs[0])
    tax = fig.add_subplot(gs[1])
    tax.set_axis_off()
    handles, table, seen = [], [], []
    for model in models:
        c = colors[model]
        loss = _values(ds, "loss_overall", model)
        pos = (steps > 0) & np.isfinite(loss) & (loss > 0)
        t_obs, L_obs = steps[pos], loss[pos]
        seen.append(L_obs)
        row = rows.get(model)
        flag = _flag(row)
        ax.plot(t_obs, L_obs, "o", color=c, ms=3.5, alpha=0.8)
        label = f"{model} (flag: {flag})" if flag else model
        handles.append(Line2D([], [], color=c, marker="o", ms=3.5, label=label))
        T = float(_cell(row, "T"))
        T = T if np.isfinite(T) else (float(t_obs.max()) if t_obs.size else np.nan)
        p = _fit_params(row)
        n_fit = float(_cell(row, "n_points"))
        fitted = t_obs[t_obs <= T] if np.isfinite(T) else t_obs
        if np.isfinite(n_fit) and 0 < n_fit <= fitted.size:
            fitted = fitted[-int(n_fit) :]  # the fit uses the last n_points steps up to T
        if p is not None and fitted.size and T > fitted[0]:
            t = np.geomspace(fitted[0], T, 200)
            ax.plot(t, bnsl(t, **p), color=c, lw=1.6)
        a = p["a"] if p is not None else 0.0
        t_d, L_d, r_d = (float(_cell(row, k)) for k in ("t_d", "L_d", "r_d"))
        if np.isfinite([t_d, L_d, r_d, T]).all() and 0 < t_d < T:
            t = np.geomspace(t_d, T, 50)
            ax.plot(t, a + (L_d - a) * (t / t_d) ** -r_d, color=c, ls="--", lw=1.3)
        if np.isfinite([t_d, L_d]).all() and t_d > 0 and L_d > 0:
            # a flagged fit's point is open and does not stretch the loss range
            edge = dict(mfc="white", mec=c, mew=1.5) if flag else dict(mfc=c, mec="k", mew=0.8)
            ax.plot(t_d, L_d, marker="*", ms=13, ls="", zorder=4, **edge)
            if not flag:
                seen.append(np.array([L_d]))
        table.append(
            [
                model,
                _fmt(_cell(row, "t_d"), ".4g"),
                _fmt(_cell(row, "L_d"), ".3f"),
                _fmt(_cell(row, "r_d"), ".3f"),
                _fmt(_cell(row, "L_hat_T_over_L_T"), ".3f"),
                _fmt(_cell(row, "rsle"), ".2g"),
                "no fit" if row is None else flag,
            ]
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    seen = np.concatenate(seen) if seen else np.array([])
    if seen.size:  # the observed losses set the range: a fit curve never stretches it
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
    grey = "0.3"
    handles += [
        Line2D([], [], color=grey, lw=1.6, label="BNSL fit (fitted steps)"),
        Line2D([], [], color=grey, ls="--", lw=1.3, label="post-break power law to T"),
        Line2D(
            [], [], color=grey, marker="*", ms=11, mec="k", ls="", label="deceleration (t_d, L_d)"
        ),
        Line2D(
            [], [], color=grey, marker="*", ms=11, mec="k", mfc="w", ls="", label="… flagged fit"
        ),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    cols = ["model", "t_d (step)", "L_d (nats)", "r_d", "L̂_T / L_T", "RSLE", "flag"]
    tab = tax.table(cellText=table, colLabels=cols, loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8.5)
    tab.auto_set_column_width(list(range(len(cols))))
    tab.scale(1.0, 1.3)
    for i, model in enumerate(models, start=1):
        tab[i, 0].get_text().set_color(colors[model])
        tab[i, 0].get_text().set_fontweight("bold")
    for j in range(len(cols)):
        tab[0, j].get_text().set_fontweight("bold")
    fig.suptitle("Loss deceleration: broken power-law fits of the overall loss")
    return fig


def plot_interference(ds: xr.Dataset) -> Figure:
    """Loss-change interference between checkpoint pairs (t, t′) per model (ZSL Fig. 2): the
    mean magnitude M of the per-token loss changes with the net change |ΔL| = M (1 − D), and the
    interference D per bin and overall, at the first step t of each pair."""
    ds = _named(ds)
    title = "Loss-change interference between checkpoint pairs (t, t′ = 2t)"
    if "interference" not in ds:
        return _note_figure(title, "loss-change interference needs two or more steps")
    models = _models(ds)
    colors = model_colors(models)
    bins = _bins(ds)
    color = _bin_color(bins)
    steps = ds["step"].values
    n = len(models)
    fig, axes = plt.subplots(
        n, 2, figsize=(9.0, 2.6 * n + 1.0), squeeze=False, layout="constrained"
    )
    for (ax_m, ax_d), model in zip(axes, models):
        m = _values(ds, "change_magnitude_overall", model)
        net = _values(ds, "loss_change_overall", model)
        _line(ax_m, steps, np.where(m > 0, m, np.nan), color=colors[model], lw=1.6)
        if net is not None:
            net = np.abs(net)
            _line(ax_m, steps, np.where(net > 0, net, np.nan), color=colors[model], ls="--")
        ax_m.set_yscale("log")
        ax_m.set_ylabel(f"{model}\n|loss change| (nats / token)")
        _step_axis(ax_m)
        for b in bins:
            _line(ax_d, steps, _values(ds, "interference", model, bin=b), color=color(b))
        _line(ax_d, steps, _values(ds, "interference_overall", model), color="k", ls="--", lw=1.6)
        ax_d.set_ylim(-0.03, 1.03)
        ax_d.set_ylabel("interference D (fraction)")
        _step_axis(ax_d)
    axes[0, 0].set_title("magnitude of the loss changes")
    axes[0, 1].set_title("interference D per bin")
    _bin_colorbar(fig, axes[:, 1], bins)
    handles = [
        Line2D([], [], color="0.3", lw=1.6, label="M: mean |Δloss| per token"),
        Line2D([], [], color="0.3", ls="--", label="|ΔL| = M (1 − D): net change"),
        Line2D([], [], color="k", ls="--", lw=1.6, label="D, all tokens"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle(title)
    return fig


def plot_layer_interference(ds: xr.Dataset) -> Figure:
    """Parameter-level interference D_W of each transformer block over steps, one panel per
    model, with the output layer's and the input embedding's (ZSL Fig. 3a)."""
    return _layer_panels(
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


# -- the bottleneck (Godey & Artzi) --------------------------------------------------------------


def plot_bottleneck(ds: xr.Dataset) -> Figure:
    """The LM head as a gradient bottleneck (Godey & Artzi): the suppressed fraction 1 − κ of
    the logit gradient's squared norm over steps, and the rank of the logit gradients of the
    first N tokens at each model's last step against the 2d ceiling."""
    ds = _named(ds)
    models = _models(ds)
    colors = model_colors(models)
    steps = ds["step"].values
    fig, (ax_k, ax_r) = plt.subplots(1, 2, figsize=(10.0, 4.4), layout="constrained")
    for model in models:
        kappa = _values(ds, "kept_fraction_overall", model)
        if kappa is not None:
            _line(ax_k, steps, 1 - kappa, color=colors[model], lw=1.6)
    ax_k.set_ylabel("suppressed fraction 1 − κ (fraction)")
    ax_k.set_title("gradient norm lost in the output layer")
    _step_axis(ax_k)
    extra = []
    if _has(ds, "logit_grad_rank") and "rank_tokens" in ds.dims:
        sizes = ds["rank_tokens"].values.astype(np.float64)
        for i, model in enumerate(models):
            rank = _values(ds, "logit_grad_rank", model)  # (step, rank_tokens)
            done = np.flatnonzero(np.isfinite(rank).any(axis=1))
            if not done.size:
                continue
            # earlier models larger, so that models with the same ranks all stay visible
            ms = 4.0 + 9.0 * (len(models) - 1 - i) / max(len(models) - 1, 1)
            y = rank[done[-1]]
            _line(ax_r, sizes, y, color=colors[model], marker="o", mfc="none", ms=ms, mew=1.4)
            ceiling = _scalar(ds, "rank_ceiling", model)  # -1 where the hidden size is unknown
            if ceiling > 0:
                ax_r.axhline(ceiling, color=colors[model], ls="--", lw=1.2)
        ax_r.plot(sizes, sizes, color="0.5", ls=":", lw=1.0, zorder=1)
        ax_r.set_xscale("log", base=2)
        ax_r.set_yscale("log", base=2)
        ax_r.set_xlabel("tokens N (log2)")
        ax_r.set_ylabel("rank of the logit gradients (rank)")
        ax_r.set_title("logit-gradient rank at the last step")
        ax_r.grid(True, which="major", alpha=0.3)
        extra = [
            Line2D([], [], color="0.3", ls="--", label="2d ceiling"),
            Line2D([], [], color="0.5", ls=":", label="rank = N"),
        ]
    else:
        _note(ax_r, "the logit-gradient rank was not extracted")
    _model_legend(fig, models, colors, extra, ncols=min(len(models) + len(extra), 6))
    fig.suptitle("The output layer as a gradient bottleneck")
    return fig


# -- across models -------------------------------------------------------------------------------


def plot_overview(ds: xr.Dataset) -> Figure:
    """When saturation and total dissent set in, against model size, one marker per model.

    Left: the overall saturation step; middle: the onset of total dissent (a model for which it
    never happens is an open marker in the "never" row above the last checkpoint). Right: which
    frequency bins each model ends saturated on, coloured by the step from which they stay
    saturated (Gradient Dissent: small models saturate on the long tail of rare tokens).
    """
    ds = _named(ds)
    models = _models(ds)
    colors = model_colors(models)
    n_params = np.array([_scalar(ds, "n_params", m) for m in models])
    sized = bool((n_params > 0).all())  # -1 (or missing) where the size is unknown
    x = n_params if sized else np.arange(len(models), dtype=np.float64)
    last = float(ds["step"].values.max())
    top = max(last, 1.0)
    never = top * 3.0  # the "never" row, above the last checkpoint on the log axis
    fig = plt.figure(figsize=(14.5, 4.4), layout="constrained")
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1, 1.25])
    first = fig.add_subplot(grid[0])
    axes = [first, fig.add_subplot(grid[1], sharey=first), fig.add_subplot(grid[2])]
    panels = (
        ("saturation_step", "overall loss saturates"),
        ("dissent_onset_step", "total dissent: " + COS_DISSENT + " ≤ threshold"),
    )
    for ax, (var, title) in zip(axes, panels):
        for xi, model in zip(x, models):
            v = _scalar(ds, var, model)
            c = colors[model]
            if np.isfinite(v):
                ax.plot(xi, v, "o", color=c, ms=9, mec="k", mew=0.6, zorder=3)
            else:
                ax.plot(xi, never, "o", mfc="white", mec=c, mew=2.0, ms=9, zorder=3)
        ax.axhline(last, color="0.4", ls="--", lw=0.9)
        ax.text(
            0.01,
            last,
            " last checkpoint",
            transform=ax.get_yaxis_transform(),
            va="bottom",
            fontsize=8,
        )
        ax.set_yscale("symlog", linthresh=1, linscale=0.4)
        ax.set_ylim(0, never * 2.0)
        ticks = [t for t in ax.get_yticks() if 0 <= t <= last] + [never]
        ax.set_yticks(
            ticks, [f"$10^{{{np.log10(t):.0f}}}$" if t > 0 else "0" for t in ticks[:-1]] + ["never"]
        )
        ax.set_title(title)
        ax.set_ylabel("training step (symlog)")
        ax.grid(True, which="major", alpha=0.3)
        _size_axis(ax, x, models, sized)
    _bin_saturation_panel(fig, axes[2], ds, models, x, sized)
    extra = [Line2D([], [], ls="", marker="o", mfc="white", mec="0.3", mew=2, label="never")]
    _model_legend(fig, models, colors, extra, ncols=min(len(models) + 1, 6))
    fig.suptitle("When saturation and total dissent set in, by model size")
    return fig


def _size_axis(ax, x: np.ndarray, models: list[str], sized: bool) -> None:
    """Model size (log) on the x axis, or the model names where sizes are unknown."""
    if sized:
        ax.set_xscale("log")
        ax.set_xlim(x.min() / 2.0, x.max() * 2.0)
        ax.set_xlabel("model size (parameters, log)")
    else:
        ax.set_xticks(x, models, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(models) - 0.5)
        ax.set_xlabel("model (parameters unknown)")


def _bin_saturation_panel(fig: Figure, ax, ds: xr.Dataset, models, x, sized: bool) -> None:
    """Per model and bin: a filled square coloured by ``saturation_step_bin`` where the bin ends
    saturated, a small open circle where it is improving at the last checkpoint."""
    ax.set_title("bins saturated at the last checkpoint")
    if not _has(ds, "loss") or "saturation_step_bin" not in ds:
        _note(ax, "no per-bin saturation steps in this summary:\nre-run the reduce rule")
        return
    bins = _bins(ds)
    steps = ds["step"].values
    first = float(steps[steps > 0].min()) if (steps > 0).any() else 1.0
    norm = LogNorm(vmin=first, vmax=max(float(steps.max()), first * 2.0))
    cmap = plt.get_cmap(SATURATION_CMAP)
    for xi, model in zip(x, models):
        has_loss = np.isfinite(_values(ds, "loss", model)).any(axis=0)  # (bin,)
        step_bin = _values(ds, "saturation_step_bin", model)
        for b, s, seen in zip(ds["bin"].values, step_bin, has_loss):
            if b == UNSEEN_BIN or not seen:
                continue
            if np.isfinite(s):
                c = cmap(norm(max(s, first)))
                ax.plot(xi, b, "s", color=c, ms=9, mec="k", mew=0.5, zorder=3)
            else:
                ax.plot(xi, b, "o", mfc="white", mec="0.55", ms=5, zorder=2)
    ax.set_ylim(bins.min() - 0.7, bins.max() + 0.7)
    ax.set_yticks(_ticks(bins))
    ax.set_ylabel(BIN_LABEL)
    ax.grid(True, which="major", alpha=0.3)
    _size_axis(ax, x, models, sized)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
    bar.set_label("saturated from step (log)")
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


# -- output --------------------------------------------------------------------------------------


def save(fig: Figure, png_path: str, pdf_path: str | None = None, dpi: int = 150) -> None:
    """Write ``fig`` as PNG (and PDF) and close it."""
    fig.savefig(png_path, dpi=dpi)
    if pdf_path:
        fig.savefig(pdf_path)
    plt.close(fig)


FIGURES = {  # name -> (function, needs_fits)
    "loss_by_bin": (plot_loss_by_bin, False),
    "decomposition_basis": (plot_decomposition_basis, False),
    "dissent": (plot_dissent, False),
    "parameter_dissent": (plot_parameter_dissent, False),
    "bnsl": (plot_bnsl, True),
    "interference": (plot_interference, False),
    "layer_interference": (plot_layer_interference, False),
    "bottleneck": (plot_bottleneck, False),
    "overview": (plot_overview, False),
}


def draw(
    name: str, summary_path: str, png: str, pdf: str, fits_csv: str | None = None, dpi: int = 150
) -> None:
    """Open the summary (``open_summary``), draw figure ``name`` of ``FIGURES`` (with the fit
    table of ``fits_csv`` when it needs one) and save it as PNG (at ``dpi``) and PDF."""
    from pipeline.reduce import open_summary

    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    function, needs_fits = FIGURES[name]
    ds = open_summary(summary_path).load()
    if needs_fits:
        if fits_csv is None:
            raise ValueError(f"figure {name!r} needs the fit table (fits_csv)")
        fig = function(ds, pd.read_csv(fits_csv, keep_default_na=True))
    else:
        fig = function(ds)
    save(fig, png, pdf, dpi=dpi)
