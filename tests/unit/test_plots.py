"""The figures of the plots stage, drawn from a synthetic summary dataset.

``synthetic_summary`` builds every variable of ``results/summary.zarr`` (as ``open_summary``
returns it) with plausible values: model names as the ``model`` coordinate, Pythia-like steps, a
model with fewer steps and fewer layers, one that never saturates, and scattered NaNs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.figure import Figure

from pipeline import plots
from pipeline.data import UNSEEN_BIN
from pipeline.fit import FitConfig, FitWarning, fit_bnsl
from pipeline.saturation import improving, saturation_step
from pipeline.schema import MEASUREMENTS
from pipeline.store import with_labels, write_zarr

NAMES = ["pythia-14m", "pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b"]
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000, 4000, 5000]
BINS = [UNSEEN_BIN, *range(-12, -4)]
RANK_TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def synthetic_summary(
    n_models: int = 3,
    n_layers: int = 4,
    steps=STEPS,
    layers: bool = True,
    seed: int = 0,
) -> xr.Dataset:
    """A summary dataset with every variable the figures read.

    Model 1 (if any) lacks the last three steps and its last layer; the last model never
    saturates (its loss keeps falling) and its dissent never sets in; a few bin means are NaN.
    Without ``layers`` there are no parameter variables (no ``layer`` dim) and ``n_params`` is -1,
    as ``reduce`` writes them when parameter gradients were off.
    """
    rng = np.random.default_rng(seed)
    names = NAMES[:n_models] + [f"model-{i}" for i in range(len(NAMES), n_models)]
    steps = np.asarray(steps, dtype=np.int64)
    bins = np.asarray(BINS, dtype=np.int64)
    nm, ns, nb = len(names), steps.size, bins.size
    t = steps.astype(np.float64)[None, :, None]  # (1, step, 1)
    seen = bins[bins != UNSEEN_BIN]
    rarity = np.clip((seen.max() - bins) / (seen.max() - seen.min()), 0, 1)[None, None, :]
    size = np.arange(nm, dtype=np.float64)[:, None, None]
    progress = np.log1p(t) / np.log1p(max(steps.max(), 1))  # 0..1
    late = np.clip((t - 300) / 1700, 0, 1)
    # loss falls as a broken power law; rare bins rise again late (saturation), bar the last model
    rise = np.where(size == nm - 1, 0.0, (0.5 + 1.5 * rarity) * late)
    loss = 2.5 + 3 * rarity + 5.0 * (1 + t / 40) ** -0.5 - 0.2 * size + rise
    loss = loss + 0.02 * rng.standard_normal((nm, ns, nb))

    def cos(centre, spread):
        return np.tanh(centre + spread * rng.standard_normal((nm, ns, nb)))

    v = {
        "loss": loss,
        "p_target": np.exp(-loss),
        "norm_attractive": 0.05 + progress * (1 - 0.3 * rarity) + 0 * size,
        "norm_repulsive": 0.003 + 0.5 * progress**2 + 0 * size + 0 * rarity,
        "norm_grad": 0.06 + progress * (1 - 0.2 * rarity) + 0 * size,
        "cos_h_attractive": cos(-1.0 * progress * (1 - 2 * rarity), 0.05),
        "cos_h_repulsive": cos(0.8 - 1.5 * np.sin(np.pi * progress), 0.05),
        "cos_grad_attractive": cos(2.5 - 0.8 * progress * rarity, 0.05),
        "cos_grad_repulsive": cos(0.1 - 0.6 * progress + 0.3 * rarity, 0.1),
        "cos_attractive_repulsive": cos(-2.0 * progress * (1 - 0.3 * size / nm), 0.1),
        "kept_fraction": 0.01 + 0.05 * progress * (1 + size) + 0 * rarity,
    }
    v = {k: np.broadcast_to(x, (nm, ns, nb)).astype(np.float64).copy() for k, x in v.items()}
    assert list(v) == list(MEASUREMENTS)
    missing_steps = slice(ns - 3, None) if nm > 1 and ns > 3 else slice(0, 0)
    for x in v.values():
        if nm > 1:
            x[1, missing_steps] = np.nan  # model 1 stops three steps early
        x[0, ns // 2, 2] = np.nan  # a bin without tokens at one step
    data = {m: (("model", "step", "bin"), x) for m, x in v.items()}
    with warnings.catch_warnings():  # all-NaN where a model lacks a step
        warnings.simplefilter("ignore", RuntimeWarning)
        for m, x in v.items():  # overall means: over the seen bins
            data[f"{m}_overall"] = (("model", "step"), np.nanmean(x[:, :, 1:], axis=2))
    overall = data["loss_overall"][1]
    data["n_tokens"] = (("model", "bin"), np.tile(2 ** (bins - bins.min()) + 1, (nm, 1)))
    data["improving"] = (("model", "step", "bin"), improving(v["loss"], axis=1))
    data["improving_overall"] = (("model", "step"), improving(overall, axis=1))
    sat = [
        saturation_step(overall[i][np.isfinite(overall[i])], steps[np.isfinite(overall[i])])
        for i in range(nm)
    ]
    sat[-1] = np.nan  # the last model never saturates (by construction, but be explicit)
    data["saturation_step"] = ("model", np.asarray(sat, dtype=np.float64))
    data["saturation_step_bin"] = (("model", "bin"), saturation_step(v["loss"], steps, axis=1))
    onset = [float(steps[min(ns - 1, 8 + i)]) for i in range(nm)]
    onset[-1] = np.nan
    data["dissent_onset_step"] = ("model", np.asarray(onset))

    # loss-change interference between (t, 2t or next step), indexed by t; NaN at the last step
    if ns > 1:
        D = np.clip(0.3 + 0.5 * progress * (1 - rarity) + 0.1 * rng.random((nm, ns, nb)), 0, 1)
        M = 0.01 + np.exp(-((np.log1p(t) - 4) ** 2) / 4) + 0 * size + 0.1 * rarity
        M = np.broadcast_to(M, (nm, ns, nb)).copy()
        D_all, M_all = D[:, :, 1:].mean(axis=2), M[:, :, 1:].mean(axis=2)
        pair = np.append(steps[1:], -1).astype(np.float64)
        pair = np.tile(pair, (nm, 1))
        for x in (D, M, D_all, M_all, pair):
            x[:, -1] = np.nan
            if nm > 1:
                x[1, ns - 4 :] = np.nan
        data |= {
            "interference": (("model", "step", "bin"), D),
            "change_magnitude": (("model", "step", "bin"), M),
            "interference_overall": (("model", "step"), D_all),
            "change_magnitude_overall": (("model", "step"), M_all),
            "loss_change_overall": (("model", "step"), -M_all * (1 - D_all)),
            "pair_step": (("model", "step"), pair),
        }

    hidden = 16 * 2 ** np.arange(nm)
    ranks = np.minimum(np.asarray(RANK_TOKENS)[None, :], 2 * hidden[:, None] - 3).astype(float)
    rank = np.repeat(ranks[:, None, :], ns, axis=1)
    if nm > 1:
        rank[1, missing_steps] = np.nan
    data["logit_grad_rank"] = (("model", "step", "rank_tokens"), rank)
    data["hidden_size"] = ("model", hidden.astype(np.int64))
    data["rank_ceiling"] = ("model", 2 * hidden.astype(np.int64))
    coords = {"model": names, "step": steps, "bin": bins, "rank_tokens": RANK_TOKENS}
    if layers:
        L = np.arange(n_layers)
        depth = (L / max(n_layers - 1, 1))[None, None, :]
        p2 = progress[:, :, 0][..., None]
        layer_cos = np.tanh(-0.4 - 2 * p2 * (1 - 0.5 * depth)) + 0 * size[..., :1]
        layer_cos = np.broadcast_to(layer_cos, (nm, ns, n_layers)).copy()
        layer_d = np.clip(0.9 + 0.08 * depth - 0.2 * p2 * depth, 0, 1) + 0 * size[..., :1]
        layer_d = np.broadcast_to(layer_d, (nm, ns, n_layers)).copy()
        layer_g = np.broadcast_to(0.1 + p2 * (1 + depth), (nm, ns, n_layers)).copy()
        for x in (layer_cos, layer_d, layer_g):
            if nm > 1:
                x[1, :, -1] = np.nan  # model 1 has one layer fewer
                x[1, missing_steps] = np.nan
        head = np.tanh(-0.1 - 2 * progress[:, :, 0]) + 0 * size[:, :, 0]
        data |= {
            "layer_cos_attractive_repulsive": (("model", "step", "layer"), layer_cos),
            "layer_interference": (("model", "step", "layer"), layer_d),
            "layer_norm_grad": (("model", "step", "layer"), layer_g),
            "head_cos_attractive_repulsive": (("model", "step"), head),
            "head_interference": (("model", "step"), 0.7 - 0.1 * head),
            "embed_interference": (("model", "step"), 0.3 + 0.05 * progress[:, :, 0] + 0 * head),
        }
        coords["layer"] = L
        data["n_params"] = ("model", (70_000 * 4.0 ** np.arange(nm)).astype(np.int64))
    else:
        data["n_params"] = ("model", np.full(nm, -1, dtype=np.int64))
    return xr.Dataset(data, coords=coords)


def synthetic_fits(ds: xr.Dataset) -> pd.DataFrame:
    """A fit table like ``results/fits/bnsl.csv`` (``fit_bnsl`` of each model's overall loss):
    model 1's row all NaN (a failed fit), model 2's flagged."""
    rows = []
    steps = ds["step"].values
    for i, model in enumerate(ds["model"].values):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            fit = fit_bnsl(steps, ds["loss_overall"].values[i], FitConfig(min_step=50))
        row = {"model": str(model), **fit.as_row()}
        if i == 1:
            row |= {k: np.nan for k in row if k not in ("model", "flag", "converged")}
            row |= dict(converged=False, flag="too_few_points")
        if i == 2:
            row["flag"] = "no_break"
        rows.append(row)
    return pd.DataFrame(rows)


#: The number of data axes each figure has for n models (with parameter gradients).
N_AXES = {
    "loss_by_bin": lambda n: n,
    "decomposition_basis": lambda n: 4 * n,
    "dissent": lambda n: 2 * n,
    "parameter_dissent": lambda n: n,
    "bnsl": lambda n: 1,
    "interference": lambda n: 2 * n,
    "layer_interference": lambda n: n,
    "bottleneck": lambda n: 2,
    "overview": lambda n: 3,
}


def data_axes(fig: Figure) -> list:
    """Visible axes that show data: not colorbars, not switched off (notes, the fit table)."""
    return [
        ax for ax in fig.axes if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>"
    ]


def figure_texts(fig: Figure) -> str:
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [t.get_text() for t in ax.texts]
    return "\n".join(texts)


def label_overlaps(fig: Figure) -> list[str]:
    """Axis labels and titles that overlap another one, or another data axes' frame."""
    fig.draw_without_rendering()  # the constrained layout, without rasterizing
    renderer = fig.canvas.get_renderer()
    axes = data_axes(fig)
    labels = []
    for i, ax in enumerate(axes):
        for kind, text in (("x", ax.xaxis.label), ("y", ax.yaxis.label), ("title", ax.title)):
            if text.get_visible() and text.get_text():
                labels.append((i, kind, text.get_window_extent(renderer)))
    bad = []
    for j, (i, kind, box) in enumerate(labels):
        for i2, kind2, box2 in labels[j + 1 :]:
            if box.overlaps(box2):
                bad.append(f"{kind} of axes {i} overlaps {kind2} of axes {i2}")
        for k, other in enumerate(axes):
            if k != i and box.overlaps(other.get_window_extent(renderer)):
                bad.append(f"{kind} of axes {i} overlaps axes {k}")
    return bad


def make(name: str, ds: xr.Dataset, fits: pd.DataFrame | None = None) -> Figure:
    function, needs_fits = plots.FIGURES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib/numpy warning while drawing
        return (
            function(ds, synthetic_fits(ds) if fits is None else fits)
            if needs_fits
            else (function(ds))
        )


def check_figure(fig: Figure, n_axes: int, overlaps: bool = True) -> None:
    assert isinstance(fig, Figure)
    axes = data_axes(fig)
    assert len(axes) == n_axes
    for ax in axes:
        assert ax.get_xlabel().strip() and ax.xaxis.label.get_visible()
        assert ax.get_ylabel().strip() and ax.yaxis.label.get_visible()
    assert fig._suptitle is not None and fig._suptitle.get_text()
    if overlaps:  # renders the figure: the slowest check
        assert not label_overlaps(fig)


@pytest.fixture(scope="module")
def summary() -> xr.Dataset:
    return synthetic_summary(3)


@pytest.fixture(scope="module")
def store(tmp_path_factory, summary):
    """The synthetic summary written the way ``summarize`` writes it, and its fit table."""
    root = tmp_path_factory.mktemp("summary")
    names = [str(m) for m in summary["model"].values]
    ds = summary.assign_coords(model=np.arange(len(names), dtype=np.int64))
    write_zarr(with_labels(ds, {"model": names}), root / "summary.zarr")
    synthetic_fits(summary).to_csv(root / "bnsl.csv", index=False)
    return root


def is_png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def check_files(png, pdf) -> None:
    assert png.stat().st_size > 10_000 and is_png(png)
    assert pdf.stat().st_size > 5_000 and pdf.read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_figure(name, summary, tmp_path):
    plt.close("all")
    fig = make(name, summary)
    check_figure(fig, N_AXES[name](summary.sizes["model"]))
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    plots.save(fig, str(png), str(pdf))
    check_files(png, pdf)
    assert not plt.get_fignums()  # save closes the figure


@pytest.mark.parametrize("name", ["loss_by_bin", "bnsl", "overview"])
def test_draw(name, store, tmp_path):
    """``draw`` as the workflow calls it: from the store ``summarize`` writes (integer model ids
    and their names as labels) and the fit table's CSV."""
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    fits = str(store / "bnsl.csv") if plots.FIGURES[name][1] else None
    plots.draw(name, str(store / "summary.zarr"), str(png), str(pdf), fits)
    check_files(png, pdf)
    assert not plt.get_fignums()


def test_registry_covers_every_figure_and_caption(repo):
    functions = {n: f for n, f in vars(plots).items() if n.startswith("plot_")}
    assert {f for f, _ in plots.FIGURES.values()} == set(functions.values())
    assert [n for n, (_, fits) in plots.FIGURES.items() if fits] == ["bnsl"]
    for name in plots.FIGURES:
        caption = (repo / "report" / f"{name}.rst").read_text()
        assert 4 <= len(caption.strip().splitlines()) <= 8


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_one_model(name):
    fig = make(name, synthetic_summary(1))
    check_figure(fig, N_AXES[name](1), overlaps=False)
    plt.close(fig)


@pytest.mark.parametrize("name", ["loss_by_bin", "dissent", "bnsl", "bottleneck", "overview"])
def test_many_models(name):
    fig = make(name, synthetic_summary(6, n_layers=2))
    check_figure(fig, N_AXES[name](6))
    plt.close(fig)


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_without_parameter_gradients(name):
    ds = synthetic_summary(2, layers=False)
    assert "layer" not in ds.dims
    fig = make(name, ds)
    if name in ("parameter_dissent", "layer_interference"):
        check_figure(fig, 0, overlaps=False)
        assert plots.NO_PARAMETERS in figure_texts(fig)
    else:
        check_figure(fig, N_AXES[name](2), overlaps=False)
    plt.close(fig)


def test_overlap_check_detects_crowding():
    fig, axes = plt.subplots(2, 2, figsize=(3, 3))
    for ax in axes.flat:
        ax.set(xlabel="training step (symlog)", ylabel="mean loss (nats)", title="a long title")
    assert label_overlaps(fig)
    plt.close(fig)


def test_overview_marks_the_saturated_bins(summary):
    fig = make("overview", summary)
    ax = data_axes(fig)[2]
    squares = [ln for ln in ax.get_lines() if ln.get_marker() == "s"]
    n_saturated = int(np.isfinite(summary["saturation_step_bin"].values[:, 1:]).sum())
    assert n_saturated > 0 and len(squares) == n_saturated
    plt.close(fig)
    ds = summary.drop_vars("saturation_step_bin")  # a summary reduced before it existed
    fig = make("overview", ds)
    assert "re-run the reduce rule" in figure_texts(fig)
    plt.close(fig)


def test_overview_without_sizes_names_the_models():
    fig = make("overview", synthetic_summary(2, layers=False))
    ax = data_axes(fig)[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES[:2]
    plt.close(fig)


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_single_step(name):
    ds = synthetic_summary(2, steps=[0])
    assert "interference" not in ds  # reduce writes no pairs for a single step
    fig = make(name, ds)
    if name == "interference":
        check_figure(fig, 0, overlaps=False)
        assert "two or more steps" in figure_texts(fig)
    else:
        check_figure(fig, N_AXES[name](2), overlaps=False)
    plt.close(fig)


def test_missing_optional_variables():
    ds = synthetic_summary(2).drop_vars(
        [
            "logit_grad_rank",
            "head_cos_attractive_repulsive",
            "head_interference",
            "embed_interference",
        ]
    )
    for name in ("bottleneck", "parameter_dissent", "layer_interference"):
        fig = make(name, ds)
        n = 1 if name == "bottleneck" else 2  # the rank panel becomes a note
        check_figure(fig, n, overlaps=False)
        if name == "bottleneck":
            assert "rank was not extracted" in figure_texts(fig)
        plt.close(fig)


def test_bnsl_flags_and_nan_fits(summary):
    fits = synthetic_fits(summary)
    fits = fits[fits["model"] != NAMES[0]]  # a model without a fit row
    fig = make("bnsl", summary, fits)
    labels = [t.get_text() for t in data_axes(fig)[0].get_legend().get_texts()]
    assert f"{NAMES[2]} (flag: no_break)" in labels
    assert f"{NAMES[1]} (flag: too_few_points)" in labels
    assert NAMES[0] in labels
    table = [ax for ax in fig.axes if ax.tables][0].tables[0]
    cells = {(r, c): cell.get_text().get_text() for (r, c), cell in table.get_celld().items()}
    assert cells[(1, 6)] == "no fit"  # first model: no row
    assert cells[(2, 1)] == "–"  # second model: NaN t_d
    # step 0 is left out of the log-log axes
    ax = data_axes(fig)[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert all((line.get_xdata() > 0).all() for line in ax.get_lines())
    plt.close(fig)


def test_bnsl_fits_from_csv_with_empty_flags(summary, tmp_path):
    path = tmp_path / "bnsl.csv"
    fits = synthetic_fits(summary)
    fits.loc[0, "flag"] = ""  # a good fit
    fits.to_csv(path, index=False)
    fits = pd.read_csv(path)  # empty flags come back as NaN
    assert np.isnan(fits.loc[0, "flag"])
    fig = make("bnsl", summary, fits)
    labels = [t.get_text() for t in data_axes(fig)[0].get_legend().get_texts()]
    assert NAMES[0] in labels and not any("nan" in lab for lab in labels)
    plt.close(fig)


def test_unseen_bin_left_out_of_colour_scale(summary):
    fig = make("loss_by_bin", summary)
    cbar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"][0]
    ticks = cbar.get_yticks()
    assert UNSEEN_BIN not in ticks and ticks.min() >= min(BINS[1:])
    assert "log2" in cbar.get_ylabel()
    plt.close(fig)


def test_model_colors_consistent():
    names = ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b"]
    colors = plots.model_colors(names)
    assert plots.model_colors(names[::-1]) == colors
    assert plots.model_colors(np.array(names)) == colors
    assert len(set(colors.values())) == len(names)  # distinct
    # a model keeps its colour whatever the other models (these names hash to distinct colours)
    for name in names:
        assert plots.model_colors([name])[name] == colors[name]
        assert plots.model_colors([name, "other-model"])[name] == colors[name]
        assert plots.model_colors([*names, "other-model"])[name] == colors[name]
    # no grey: it marks the references (all tokens, output layer)
    grey = plt.get_cmap("tab10").colors[7]
    assert grey not in colors.values()


def test_model_colors_resolve_clashes():
    # "other-model" and "pythia-14m" hash to the same colour: the first in name order keeps it
    both = plots.model_colors(["pythia-14m", "other-model"])
    assert both["other-model"] == plots.model_colors(["other-model"])["other-model"]
    assert both["pythia-14m"] != both["other-model"]
    for n in (9, 18):
        assert len(set(plots.model_colors([f"m{i}" for i in range(n)]).values())) == n
    assert len(plots.model_colors([f"m{i}" for i in range(30)])) == 30  # reused, no hang


def test_figures_use_the_model_colours(summary):
    colors = plots.model_colors(summary["model"].values)
    fig = make("bottleneck", summary)
    ax = data_axes(fig)[0]
    drawn = [tuple(line.get_color()) for line in ax.get_lines()]
    assert drawn == [colors[str(m)] for m in summary["model"].values]
    plt.close(fig)


def test_draw_rejects_unknown_and_missing_fits(store, tmp_path):
    with pytest.raises(KeyError):
        plots.draw("nope", str(store / "summary.zarr"), str(tmp_path / "a.png"), "b.pdf")
    with pytest.raises(ValueError, match="fit table"):
        plots.draw("bnsl", str(store / "summary.zarr"), str(tmp_path / "a.png"), "b.pdf")


def test_captions_are_valid_restructuredtext():
    """Snakemake renders the captions as reStructuredText: |x| would be a substitution."""
    import docutils.core

    for caption in sorted((Path(__file__).parents[2] / "report").glob("*.rst")):
        docutils.core.publish_string(
            caption.read_text(),
            writer="html",
            settings_overrides={"halt_level": 2, "report_level": 5},
        )
