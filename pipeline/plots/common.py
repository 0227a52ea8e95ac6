"""What every figure shares: colours, the step axis, colorbars, notes, legends and ``save``.

Every figure function takes the summary dataset as ``pipeline.store.open_labeled`` returns it
(model names as the ``model`` coordinate) and returns a ``matplotlib.figure.Figure`` built with
matplotlib's object API: no pyplot, no global backend, nothing to close. ``panels`` opens most of
them: the dataset's ``View`` (models, their colours, the bins, the steps) and a grid of axes.

Steps are drawn on a symmetric-log axis so that step 0 and Pythia's log-spaced early checkpoints
are visible beside the evenly spaced later ones. A log2-frequency bin always has the same viridis
colour (colorbar beside the panels; the bin of ids never seen is left out), a training step a
colour of magma (dark early), a transformer block a colour of a sequential colormap (keyed in
the legend where there are a few), and a model the same qualitative colour in every cross-model
figure (``model_colors``). Every figure copes with one or many models, NaNs (a model lacking a
step or a layer), a single step, and missing optional variables (no parameter gradients, no
logit-gradient rank, no checkpoint pairs): a panel whose data were not extracted shows a centred
note instead.
"""

from __future__ import annotations

import re
import textwrap
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from pipeline.maths.frequency import UNSEEN_BIN

BIN_CMAP = matplotlib.colormaps["viridis"]
#: Transformer blocks: plasma without its pale yellow end (unreadable on white).
LAYER_CMAP = ListedColormap(
    matplotlib.colormaps["plasma"](np.linspace(0.0, 0.85, 256)), name="layers"
)
#: Training steps (the colour of a step in any figure): magma, dark early to light late,
#: without its palest end (which would vanish on white).
STEP_CMAP = ListedColormap(matplotlib.colormaps["magma"](np.linspace(0.0, 0.85, 256)), name="steps")
BIN_LABEL = "token frequency bin  ⌊log2 f⌋"
NO_PARAMETERS = "parameter gradients were not extracted"
COS_DISSENT = r"$\cos(\nabla h^{+}, \nabla h^{-})$"

Color = tuple[float, ...] | str


# -- models and their colours ---------------------------------------------------------------------


def _model_palette(n_models: int) -> list[Color]:
    """tab10 (tab20 beyond 9 models) without its greys, which mark references (all tokens,
    the output layer) in the figures."""
    if n_models <= 9:
        return [c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 7]
    return [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i not in (14, 15)]


def model_colors(models: Iterable) -> dict[str, Color]:
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


# -- the summary as the figures read it -----------------------------------------------------------


@dataclass(frozen=True)
class View:
    """The summary dataset as a figure reads it.

    Attributes
    ----------
    ds : the dataset, model names as strings (integer ids too, if opened unlabelled).
    models : the model names, in the dataset's order. colors : their colours (``model_colors``).
    bins : the log2-frequency bins, without the bin of ids never seen.
    steps : the training steps.
    """

    ds: xr.Dataset
    models: list[str]
    colors: dict[str, Color]
    bins: np.ndarray
    steps: np.ndarray

    @classmethod
    def of(cls, ds: xr.Dataset) -> View:
        """The view of the summary ``ds``."""
        models = [str(m) for m in ds["model"].values]
        bins = ds["bin"].values
        return cls(
            ds=ds.assign_coords(model=models),
            models=models,
            colors=model_colors(models),
            bins=bins[bins != UNSEEN_BIN],
            steps=ds["step"].values,
        )

    def values(self, var: str, model: str, **sel) -> np.ndarray | None:
        """``ds[var]`` of one model (and ``sel``) as floats, steps first; None if missing."""
        if var not in self.ds:
            return None
        da = self.ds[var].sel(model=model, **sel)
        if "step" in da.dims:
            da = da.transpose("step", ...)
        return np.asarray(da.values, dtype=np.float64)

    def scalar(self, var: str, model: str) -> float:
        """A per-model number (``saturation_step``, ``n_params``, ...); NaN if missing."""
        v = self.values(var, model)
        return float(v) if v is not None and v.size == 1 else float("nan")

    def color(self, b: int) -> Color:
        """The colour of bin ``b`` (grey when only ids never seen are left: nothing is drawn)."""
        if not self.bins.size:
            return "0.5"
        return BIN_CMAP(bin_norm(self.bins)(b))

    def setting(self, key: str) -> float | None:
        """A number of the run's provenance (``saturation_tolerance``, ``dissent_threshold``)
        from the summary's attrs; None when the summary does not record it."""
        value = self.ds.attrs.get(key)
        return None if value is None else float(value)


def finite_mean(x: np.ndarray, axis: int) -> np.ndarray:
    """The mean of the finite values along ``axis``; NaN (without a warning) where there are
    none (steps without a measurement)."""
    ok = np.isfinite(x)
    n = ok.sum(axis=axis)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def has(ds: xr.Dataset, var: str) -> bool:
    """Whether ``ds`` has ``var`` and it holds a finite value."""
    return var in ds and bool(np.isfinite(np.asarray(ds[var].values, dtype=np.float64)).any())


def per_model(n: int) -> tuple[int, int]:
    """Grid of one panel per model: at most three columns (two for four models)."""
    ncols = min(n, 2 if n == 4 else 3)
    return -(-n // ncols), ncols


def row_per_model(ncols: int) -> Callable[[int], tuple[int, int]]:
    """Grid of one row of ``ncols`` panels per model."""
    return lambda n: (n, ncols)


def panels(
    ds: xr.Dataset,
    grid: Callable[[int], tuple[int, int]],
    panel: tuple[float, float],
    margin: tuple[float, float] = (0.0, 0.0),
    **subplots,
) -> tuple[View, Figure, np.ndarray]:
    """The ``View`` of ``ds`` and a constrained-layout figure of ``grid(n_models)`` axes.

    Parameters
    ----------
    grid : (rows, columns) for the number of models (``per_model``, ``row_per_model``).
    panel : width and height of one panel (inches); ``margin`` : added to the figure's width
        and height (colorbar, legend, suptitle).
    subplots : passed to ``Figure.subplots`` (``sharey`` …).

    Returns
    -------
    The view, the figure and its axes as a 2-D array (rows, columns).
    """
    view = View.of(ds)
    nrows, ncols = grid(len(view.models))
    size = (margin[0] + panel[0] * ncols, margin[1] + panel[1] * nrows)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return view, fig, axes


# -- axes -----------------------------------------------------------------------------------------


#: Up to this many points, a series is drawn as markers: a line through two or three points
#: suggests a trend that nothing measured.
MARKERS_UP_TO = 3


def line(ax: Axes, x, y, **kwargs) -> Line2D | None:
    """Plot the finite points of (x, y) only, so that NaN gaps do not hide isolated points;
    nothing where ``y`` is None (a variable the summary lacks). Up to ``MARKERS_UP_TO`` points
    are markers without a line."""
    if y is None:
        return None
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    if ok.sum() <= MARKERS_UP_TO and "marker" not in kwargs:
        kwargs.update(marker="o", ls="none")
        kwargs.setdefault("ms", 4)
    return ax.plot(x[ok], y[ok], **kwargs)[0]


def dots(y, **style) -> dict:
    """``style`` for ``common.line`` with small dots on the line, so that each measured point
    of a sparse schedule shows; up to ``MARKERS_UP_TO`` points ``line`` draws markers alone."""
    n = int(np.isfinite(np.asarray(y, dtype=np.float64)).sum()) if y is not None else 0
    if n > MARKERS_UP_TO:
        style.setdefault("marker", "o")
        style.setdefault("ms", 3)
    else:
        style.update(ls="none", ms=style.get("ms", 3) + 2)
        style.setdefault("marker", "o")
    return style


def _log_number(v: float) -> str:
    """A tick of a log axis: plain from 0.001 to 1000, else m×10ᵉ."""
    if not np.isfinite(v) or v <= 0:
        return ""
    e = int(np.floor(np.log10(v) + 1e-9))
    if -3 <= e <= 3:
        return f"{v:.{max(0, -e)}f}"
    m = v / 10.0**e
    return f"$10^{{{e}}}$" if round(m, 6) == 1 else f"${m:g}\\times10^{{{e}}}$"


def log_labels(axis: Axis) -> None:
    """Labels of a log axis that never crowd: the decades, and where the axis spans less than
    two decades also 2 and 5 times them (2, 3, 5, 7 within one), plain from 0.001 to 1000."""

    def minor(v: float, _) -> str:
        lo, hi = sorted(axis.get_view_interval())
        if not 0 < lo < hi < 100 * lo:
            return ""
        m = v / 10.0 ** np.floor(np.log10(v) + 1e-9)
        labelled = (2, 3, 5, 7) if hi < 10 * lo else (2, 5)  # within a decade: more labels
        return _log_number(v) if any(abs(m - k) < 1e-6 for k in labelled) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: _log_number(v)))
    axis.set_minor_formatter(FuncFormatter(minor))


def handle_of(drawn: Line2D | None, label: str, color="0.3") -> Line2D | None:
    """A legend entry styled as ``drawn`` (in a neutral colour); None if nothing was drawn."""
    if drawn is None:
        return None
    hollow = str(drawn.get_markerfacecolor()) == "none"
    return Line2D(
        [],
        [],
        color=color,
        ls=drawn.get_linestyle(),
        lw=drawn.get_linewidth(),
        marker=drawn.get_marker(),
        ms=drawn.get_markersize(),
        mfc="none" if hollow else color,
        label=label,
    )


ZERO_LABEL = "0: a zero update (off the log axis)"


def log_line(ax: Axes, x, y, **kwargs) -> tuple[Line2D | None, Line2D | None]:
    """``line`` on a log y axis: the positive points as a line, and each exact zero (a step
    between identical weights, whose update is 0) as a hollow triangle on the axis's floor
    instead of a line falling off it. Returns the line and the zeros' marker (None if none)."""
    if y is None:
        return None, None
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    drawn = line(ax, x, np.where(y > 0, y, np.nan), **kwargs)
    zero = np.isfinite(x) & (y == 0)
    if not zero.any():
        return drawn, None
    color = kwargs.get("color", drawn.get_color() if drawn else "k")
    marks = ax.plot(
        x[zero],
        np.full(zero.sum(), 0.0),
        ls="none",
        marker="v",
        mfc="none",
        mec=color,
        ms=6,
        clip_on=False,
        transform=ax.get_xaxis_transform(),  # y in axes units: on the floor
    )[0]
    return drawn, marks


def zero_handle(color: Color = "k") -> Line2D:
    """The legend entry of ``log_line``'s zeros."""
    return Line2D([], [], ls="none", marker="v", mfc="none", mec=color, ms=6, label=ZERO_LABEL)


def step_axis(ax: Axes) -> None:
    """Training steps on a symmetric-log x axis (step 0 visible), with a grid."""
    ax.set_xscale("symlog", linthresh=1, linscale=0.4)
    if ax.get_xlim()[1] <= 1:  # nothing beyond step 0 (or nothing at all): a visible range
        ax.set_xlim(right=10)
    ax.set_xlim(left=-0.3)  # a margin, so that markers at step 0 are not cut in half
    ax.set_xlabel("training step (symlog)")
    ax.grid(True, which="major", alpha=0.3)


def zero_line(ax: Axes) -> None:
    """A thin line at 0 that does not stretch the y range to include 0."""
    ref = Line2D([0, 1], [0, 0], color="0.5", lw=0.6, transform=ax.get_yaxis_transform())
    ax.add_artist(ref)  # an artist, not a line: it takes no part in the data limits


def ticks(values: np.ndarray, most: int = 12) -> np.ndarray:
    """At most ``most`` evenly thinned integer ticks."""
    values = np.unique(values)
    return values[:: -(-values.size // most)] if values.size else values


def hide_unused(axes: np.ndarray, n: int) -> None:
    """Hide the axes of a grid beyond the first ``n``."""
    for ax in axes.flat[n:]:
        ax.set_visible(False)


def note(ax: Axes, text: str, keep_axes: bool = False) -> None:
    """A centred note in a panel that has nothing to draw, saying why ("no model saturates by
    the 1% rule within 2,048 steps"); the axes go unless ``keep_axes`` (a panel whose other
    series are drawn)."""
    if not keep_axes:
        ax.set_axis_off()
    width = _inches(ax)[0]
    ax.text(
        0.5,
        0.5,
        wrap(text, width, 10),
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=10,
        color="0.25",
        bbox={"fc": "white", "ec": "0.8", "pad": 4} if keep_axes else None,
    )


def note_figure(title: str, text: str) -> Figure:
    """A figure that only says why it has nothing to show."""
    fig = Figure(figsize=(6, 2.5), layout="constrained")
    note(fig.subplots(), text)
    suptitle(fig, title)
    return fig


# -- titles ---------------------------------------------------------------------------------------


def _inches(ax: Axes) -> tuple[float, float]:
    """The size of ``ax`` in inches, as laid out before drawing."""
    box = ax.get_position()
    w, h = ax.figure.get_size_inches()
    return box.width * w, box.height * h


def wrap(text: str, width: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width`` inches at ``fontsize`` points (each of
    its own lines wrapped apart)."""
    chars = max(12, int(width * 72 / (0.52 * fontsize)))
    # mathtext ($…$) is never broken: each formula is held as one word of about its drawn
    # length (its commands as one character each) while the rest wraps
    parts = text.split("$")
    formulas = {}
    for i in range(1, len(parts) - 1, 2):
        key = chr(0xE000 + i) * drawn_length(parts[i])
        formulas[key] = f"${parts[i]}$"
        parts[i] = key
    held = "".join(parts)
    out = "\n".join(textwrap.fill(part, chars) for part in held.split("\n"))
    for key, formula in formulas.items():  # one private-use character per formula
        out = out.replace(key, formula)
    return out


_MARKUP = str.maketrans("", "", "{}^_ $")


def drawn_length(text: str) -> int:
    """About how many characters ``text`` draws: its mathtext commands as one each, without
    the markup (braces, ``^``, ``_``, ``$``)."""
    return max(1, len(re.sub(r"\\[a-zA-Z]+", "x", text).translate(_MARKUP)))


def suptitle(fig: Figure, text: str, fontsize: float = 12) -> None:
    """The figure's title, wrapped to its width: never cut off at the edges, whatever the
    number of panels."""
    fig.suptitle(wrap(text, fig.get_figwidth() * 0.95, fontsize), fontsize=fontsize)


def panel_title(ax: Axes, text: str, fontsize: float = 10, **kwargs) -> None:
    """A panel's title, wrapped to the panel's width."""
    ax.set_title(wrap(text, _inches(ax)[0] * 1.1, fontsize), fontsize=fontsize, **kwargs)


def number(x: float) -> str:
    """``x`` as text, with a typographic minus (−0.9)."""
    return f"{x:g}".replace("-", "−")


# -- colour scales --------------------------------------------------------------------------------


def integer_norm(values: np.ndarray, cmap: Colormap) -> BoundaryNorm:
    """One colour of ``cmap`` per integer from ``values.min()`` to ``values.max()``."""
    edges = np.arange(values.min() - 0.5, values.max() + 1.5)
    return BoundaryNorm(edges, cmap.N)


def bin_norm(bins: np.ndarray) -> BoundaryNorm:
    """One colour per integer log2-frequency bin."""
    return integer_norm(bins, BIN_CMAP)


def bin_colorbar(fig: Figure, axes: np.ndarray, bins: np.ndarray) -> None:
    """The bins' colour scale beside ``axes`` (all of them, or the column that colours by bin)."""
    if not bins.size:
        return
    sm = ScalarMappable(norm=bin_norm(bins), cmap=BIN_CMAP)
    cbar = fig.colorbar(sm, ax=axes, shrink=0.9, pad=0.02, ticks=ticks(bins))
    cbar.set_label(BIN_LABEL)


#: Up to this many categories (transformer blocks), colours are keyed in the legend: a colour
#: bar would suggest a continuum between them.
CATEGORIES_UP_TO = 4


def layer_key(fig: Figure, axes: np.ndarray, layers: np.ndarray) -> list[Line2D]:
    """The transformer blocks' colours: a colour bar beside ``axes`` for more than
    ``CATEGORIES_UP_TO`` blocks; for fewer, the legend entries to list below the panels."""
    norm = integer_norm(layers, LAYER_CMAP)
    if layers.size <= CATEGORIES_UP_TO:
        return [
            Line2D([], [], color=LAYER_CMAP(norm(b)), lw=2.5, label=_block(b, layers))
            for b in layers
        ]
    sm = ScalarMappable(norm=norm, cmap=LAYER_CMAP)
    cbar = fig.colorbar(sm, ax=axes, shrink=0.9, pad=0.01, ticks=ticks(layers))
    cbar.set_label("transformer block (0 = nearest the input)")
    return []


def _block(b: int, layers: np.ndarray) -> str:
    if b == layers.min():
        return f"block {b} (nearest the input)"
    return f"block {b} (nearest the output)" if b == layers.max() else f"block {b}"


# -- legends --------------------------------------------------------------------------------------


def legend_columns(fig: Figure, labels: Sequence[str], fontsize: float = 10) -> int:
    """How many legend entries of ``labels`` fit side by side in ``fig``'s width."""
    longest = max((drawn_length(s) for s in labels), default=1)
    entry = (longest * 0.52 * fontsize + 40) / 72  # label, handle and padding, in inches
    return max(1, min(len(labels), int(fig.get_figwidth() * 0.95 // entry)))


def legend_below(fig: Figure, handles: Sequence[Line2D | None], ncols: int | None = None) -> None:
    """A frameless legend centred below the panels of what is drawn (``None`` handles, series
    with nothing to draw, are left out), in as many columns as fit the figure's width."""
    handles = [h for h in handles if h is not None]
    if not handles:
        return
    fit = legend_columns(fig, [h.get_label() for h in handles])
    ncols = fit if ncols is None else min(ncols, fit)
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False)


def model_legend(fig: Figure, view: View, extra: Sequence[Line2D] = (), ncols: int = 6) -> None:
    """One marker per model in its colour, then ``extra`` handles, below the panels, in rows
    of at most ``ncols``."""
    handles = [Line2D([], [], color=view.colors[m], marker="o", label=m) for m in view.models]
    handles += [h for h in extra if h is not None]
    legend_below(fig, handles, ncols=min(len(handles), ncols))


# -- per-block figures ----------------------------------------------------------------------------


def layer_panels(
    ds: xr.Dataset,
    var: str,
    title: str,
    ylabel: str,
    extras: list[tuple[str, str, str]],
    ylim: tuple[float, float],
) -> Figure:
    """One panel per model: ``var (model, step, layer)`` coloured by transformer block, plus
    ``extras`` (variable, label, line style) in black: the parameter figures of both Gradient
    dissent (Fig. 7) and Zero-sum learning (Fig. 3a). Without parameter gradients, a note."""
    if var not in ds or "layer" not in ds[var].dims or not has(ds, var):
        return note_figure(title, NO_PARAMETERS)
    view, fig, axes = panels(ds, per_model, panel=(3.6, 3.0), margin=(1.3, 0.6), sharey=True)
    layers = ds["layer"].values
    norm = integer_norm(layers, LAYER_CMAP)
    for ax, model in zip(axes.flat, view.models):
        y = view.values(var, model)  # (step, layer)
        if not np.isfinite(y).any():
            note(ax, f"{model}:\n{NO_PARAMETERS}")
            continue
        for k, layer in enumerate(layers):
            line(ax, view.steps, y[:, k], color=LAYER_CMAP(norm(layer)), lw=1.1)
        for extra, _, ls in extras:
            line(ax, view.steps, view.values(extra, model), color="k", ls=ls, lw=1.5)
        ax.set_ylim(*ylim)
        ax.axhline(0, color="0.5", lw=0.6)
        panel_title(ax, model)
        ax.set_ylabel(ylabel)
        step_axis(ax)
    hide_unused(axes, len(view.models))
    handles = layer_key(fig, axes, layers)
    handles += [
        Line2D([], [], color="k", ls=ls, lw=1.5, label=lab) for v, lab, ls in extras if has(ds, v)
    ]
    legend_below(fig, handles)
    suptitle(fig, title)
    return fig


# -- output ---------------------------------------------------------------------------------------


def save(fig: Figure, png: str, pdf: str, dpi: int = 150) -> None:
    """Write ``fig`` as PNG (at ``dpi``) and PDF, each to a temporary sibling renamed into place
    once complete: a job killed while drawing leaves no figure that looks finished."""
    import os
    from pathlib import Path

    for path, kwargs in ((Path(png), {"dpi": dpi}), (Path(pdf), {})):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
        try:
            fig.savefig(tmp, **kwargs)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
