"""The figures of the plots stage, drawn from a synthetic summary dataset.

``synthetic_summary`` builds every variable of ``results/summary.zarr`` (as ``open_labeled``
returns it) with plausible values: model names as the ``model`` coordinate, Pythia-like steps, a
model with fewer steps and fewer layers, one that never saturates, scattered NaNs, the BNSL fits
of the models' losses (``bnsl_*``, ``attrs["bnsl_flag"]``) and the run's provenance attrs. Every
test iterates ``plots.FIGURES``; what a figure should show is derived from the data or from the
figure itself, never listed per figure.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline import plots
from pipeline.fit import FitConfig, fit_bnsl
from pipeline.maths.frequency import UNSEEN_BIN
from pipeline.maths.saturation import improving, saturation_step
from pipeline.plots.common import NO_PARAMETERS, model_colors, save
from pipeline.schema import FIT_FIELDS, MEASUREMENTS, bnsl, overall
from pipeline.store import open_labeled, with_labels, write_zarr

NAMES = ["pythia-14m", "pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b"]
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000, 4000, 5000]
BINS = [UNSEEN_BIN, *range(-12, -4)]
RANK_TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
FIT = FitConfig(min_step=50)
PROVENANCE = {"saturation_tolerance": 0.01, "dissent_threshold": -0.9}


def synthetic_summary(
    n_models: int = 3,
    n_layers: int = 4,
    steps=STEPS,
    layers: bool = True,
    seed: int = 0,
    fit: FitConfig = FIT,
) -> xr.Dataset:
    """A summary dataset with every variable the figures read.

    Model 1 (if any) lacks the last three steps and its last layer; the last model never
    saturates (its loss keeps falling) and its dissent never sets in; a few bin means are NaN.
    Without ``layers`` there are no parameter variables (no ``layer`` dim) and ``n_params`` is -1,
    as ``reduce`` writes them when parameter gradients were off. The fits are ``with_fits``'s.
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
        "logit_grad_sq": 0.3 + 0.6 * (1 - progress) * (1 + rarity) + 0 * size,
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
            data[overall(m)] = (("model", "step"), np.nanmean(x[:, :, 1:], axis=2))
    loss_all = data[overall("loss")][1]
    data["n_tokens"] = (("model", "bin"), np.tile(2 ** (bins - bins.min()) + 1, (nm, 1)))
    data["improving"] = (("model", "step", "bin"), improving(v["loss"], axis=1))
    data["improving_overall"] = (("model", "step"), improving(loss_all, axis=1))
    sat = [
        saturation_step(loss_all[i][np.isfinite(loss_all[i])], steps[np.isfinite(loss_all[i])])
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
            overall("interference"): (("model", "step"), D_all),
            overall("change_magnitude"): (("model", "step"), M_all),
            overall("loss_change"): (("model", "step"), -M_all * (1 - D_all)),
            "pair_step": (("model", "step"), pair),
        }

    hidden = 16 * 2 ** np.arange(nm)
    ranks = np.minimum(np.asarray(RANK_TOKENS)[None, :], 2 * hidden[:, None] - 3).astype(float)
    rank = np.repeat(ranks[:, None, :], ns, axis=1)
    if nm > 1:
        rank[1, missing_steps] = np.nan
    data["logit_grad_rank"] = (("model", "step", "rank_tokens"), rank)
    kept = np.minimum(rank, hidden[:, None, None])
    data["logit_grad_rank_kept"] = (("model", "step", "rank_tokens"), kept)
    data["hidden_size"] = ("model", hidden.astype(np.int64))
    data["vocab_size"] = ("model", np.full(nm, 512, dtype=np.int64))
    kappa = data[overall("kept_fraction")][1]
    data["suppressed_squared"] = (("model", "step"), 1 - kappa)
    data["suppressed_norm"] = (("model", "step"), np.sqrt(1 - kappa))
    data["kept_cosine"] = (("model", "step"), np.sqrt(kappa))
    data["suppressed_batch"] = (("model", "step"), 1 - 0.8 * kappa)
    data["update_rank_bound"] = ("model", 2 * hidden.astype(np.int64))
    # the output layer's spectrum flattens, then collapses (model 1 lacks its late steps)
    index = np.arange(1, hidden.max() + 1, dtype=np.float64)
    slope = (
        0.8 - 0.5 * progress[:, :, 0] + 1.2 * late[:, :, 0] + 0.1 * size[:, :, 0]
    )  # (model, step)
    spectrum = index[None, None, :] ** -slope[:, :, None]
    spectrum = np.where(index[None, None, :] > hidden[:, None, None], np.nan, spectrum)  # d each
    if nm > 1:
        spectrum[1, missing_steps] = np.nan
    data["head_singular_values"] = (("model", "step", "singular"), spectrum)
    data["head_spectrum_kl"] = (("model", "step"), 0.1 + slope)
    data["head_sigma_ratio"] = (("model", "step"), 2.0**slope)
    data["head_common_direction"] = (("model", "step"), 0.05 + 0.5 * progress[:, :, 0] + 0 * slope)
    data["anisotropy"] = (("model", "step"), 0.1 + 0.6 * late[:, :, 0] + 0 * slope)
    # Zipfian training counts over 2,000 ids, the rarest ids below the law, 48 ids never seen;
    # V's targets a sample of them
    zipf = 1e7 / np.arange(1, 2049) ** 1.1
    zipf[1900:2000] *= np.linspace(1, 1e-3, 100)
    zipf[2000:] = 0
    train = np.floor(zipf).astype(np.int64)
    held = rng.multinomial(20000, train / train.sum())
    data["train_count"] = ("vocab", train)
    data["eval_count"] = ("vocab", held)
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
        # two parts of norms a and r whose sum has norm 1: a ≈ r ≈ 1 / √(2(1 + cos))
        ratio_a = 1.1 / np.sqrt(2 * (1 + layer_cos) + 1e-3)
        ratio_r = 0.9 / np.sqrt(2 * (1 + layer_cos) + 1e-3)
        for x in (layer_cos, layer_d, layer_g, ratio_a, ratio_r):
            if nm > 1:
                x[1, :, -1] = np.nan  # model 1 has one layer fewer
                x[1, missing_steps] = np.nan
        head = np.tanh(-0.1 - 2 * progress[:, :, 0]) + 0 * size[:, :, 0]
        data |= {
            "layer_cos_attractive_repulsive": (("model", "step", "layer"), layer_cos),
            "layer_interference": (("model", "step", "layer"), layer_d),
            "layer_norm_grad": (("model", "step", "layer"), layer_g),
            "layer_norm_ratio_attractive": (("model", "step", "layer"), ratio_a),
            "layer_norm_ratio_repulsive": (("model", "step", "layer"), ratio_r),
            "head_cos_attractive_repulsive": (("model", "step"), head),
            "head_interference": (("model", "step"), 0.7 - 0.1 * head),
            "embed_interference": (("model", "step"), 0.3 + 0.05 * progress[:, :, 0] + 0 * head),
        }
        coords["layer"] = L
        data["n_params"] = ("model", (70_000 * 4.0 ** np.arange(nm)).astype(np.int64))
    else:
        data["n_params"] = ("model", np.full(nm, -1, dtype=np.int64))
    data_u, coords_u = update_variables(names, steps, bins, missing_steps, rng)
    # every model a toy model on a SpamLang language with a factored head, so that the
    # controlled experiments' figures draw them all: two widths, two learning rates
    toy_models = {
        m: {
            "language": f"spam-v{256 * 2 ** (i % 3)}",
            "language_kind": "spam",
            "language_vocab_size": 256 * 2 ** (i % 3),
            "learning_rate": [1e-3, 1e-2][i // 3 % 2],
            "hidden_size": int(hidden[i]),
            "head_rank": 2 ** (i + 1),
            "intervention": ("muon", "baseline")[i % 2],
        }
        for i, m in enumerate(names)
    }
    attrs = {
        **PROVENANCE,
        "update_direction": {m: "optimizer" for m in names},
        "toy_models": toy_models,
    }
    ds = xr.Dataset({**data, **data_u}, coords={**coords, **coords_u}, attrs=attrs)
    return with_fits(ds, fit)


def update_variables(names, steps, bins, missing_steps, rng) -> tuple[dict, dict]:
    """The update stage's summary variables (``pipeline.schema.UPDATE_SUMMARY``): measured at
    every other step, K = 3 batches; D rises over training on V and stays low on the batch."""
    nm, ns, nb = len(names), steps.size, bins.size
    K, alpha = 3, np.array([-4.0, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0])
    n_sample, n_grad = 40, 16
    measured = np.zeros(ns, bool)
    measured[::2] = True
    measured[missing_steps if nm > 1 else slice(0, 0)] = False  # (model 1's are NaN below)
    p = (np.log1p(steps) / np.log1p(max(steps.max(), 1)))[None, :, None]  # (1, step, 1)
    noise = lambda *shape: 0.02 * rng.standard_normal(shape)  # noqa: E731
    stats = {
        "eval_D": 0.2 + 0.75 * p + noise(nm, ns, K),
        "train_D": 0.05 + 0.1 * p + noise(nm, ns, K),
        "eval_M": 0.01 * (1.2 - p) + 0 * noise(nm, ns, K),
        "train_M": 0.02 * (1.2 - p) + 0 * noise(nm, ns, K),
        "eval_pearson": 0.99 - 0.01 * p + 0.1 * noise(nm, ns, K),
        "train_pearson": 0.99 - 0.02 * p + 0.1 * noise(nm, ns, K),
        "update_norm": 0.1 + 0.4 * p + 0 * noise(nm, ns, K),
        "coherence_g": 0.25 + noise(nm, ns, K),
        "coherence_u": 3.0 - 2.7 * p + noise(nm, ns, K),
    }
    data = {}
    for name, v in stats.items():
        data[name] = (("model", "step", "update_batch"), v)
    for s in ("eval", "train"):
        data[f"{s}_D_bin"] = (
            ("model", "step", "update_batch", "bin"),
            np.repeat(stats[f"{s}_D"][..., None], nb, -1),
        )
        data[f"{s}_M_bin"] = (
            ("model", "step", "update_batch", "bin"),
            np.repeat(stats[f"{s}_M"][..., None], nb, -1),
        )
    slope = rng.normal(0, 0.05, (nm, ns, 1, n_sample))
    curve = slope * alpha[None, None, :, None] + 0.01 * alpha[None, None, :, None] ** 2
    data["landscape_token"] = (("model", "step", "alpha", "sample"), 3 + curve)
    data["sample_improved"] = (("model", "step", "sample"), slope[:, :, 0] < 0)
    change = slope[:, :, 0] + 0.005
    data["sample_loss_change"] = (("model", "step", "sample"), change)
    data["sample_loss_change_pred"] = (("model", "step", "sample"), slope[:, :, 0])
    mean = curve.mean(-1)  # (model, step, alpha)
    data["landscape_change"] = (
        ("model", "step", "update_batch", "alpha"),
        np.repeat(mean[:, :, None], K, 2) - 0.02 * alpha * (1 - p[..., None]),
    )
    data["update_grad_cos"] = (
        ("model", "step", "gradient_token"),
        rng.normal(0, 0.01, (nm, ns, n_grad)),
    )
    data["grad_norm"] = (
        ("model", "step", "gradient_token"),
        rng.lognormal(1, 0.5, (nm, ns, n_grad)),
    )
    for name, (dims, v) in data.items():
        v = np.asarray(v, dtype=np.float64).copy()
        v[:, ~measured] = np.nan
        if nm > 1:
            v[1, missing_steps] = np.nan
        data[name] = (dims, v)
    coords = {
        "update_batch": np.arange(K),
        "alpha": alpha,
        "sample": np.arange(n_sample),
        "gradient_token": np.arange(n_grad),
    }
    return data, coords


def with_fits(ds: xr.Dataset, cfg: FitConfig) -> xr.Dataset:
    """``ds`` with the BNSL fits as the summary stage adds them: ``fit_bnsl`` of each model's
    overall loss as ``bnsl_*`` variables, the flags in ``attrs["bnsl_flag"]``. Model 1's fit
    failed (NaN, ``too_few_points``), model 2's is flagged ``no_break``."""
    steps = ds["step"].values
    rows, flags = [], {}
    for i, model in enumerate(ds["model"].values):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # FitWarning: a flagged fit
            fit = fit_bnsl(steps, ds[overall("loss")].values[i], cfg)
        row = {field: float(getattr(fit, field)) for field in FIT_FIELDS}
        flags[str(model)] = fit.flag
        if i == 1:
            row = {field: np.nan for field in FIT_FIELDS} | {"converged": 0.0}
            flags[str(model)] = "too_few_points"
        if i == 2:
            flags[str(model)] = "no_break"
        rows.append(row)
    fits = {bnsl(f): ("model", np.array([r[f] for r in rows])) for f in FIT_FIELDS}
    return ds.assign(fits).assign_attrs(bnsl_flag=flags)


def without_fit(ds: xr.Dataset, model: str) -> xr.Dataset:
    """``ds`` as if ``model`` had no fit: NaN ``bnsl_*`` and no flag."""
    out = ds.copy()
    for field in FIT_FIELDS:
        out[bnsl(field)] = out[bnsl(field)].where(out["model"] != model)
    flags = {m: f for m, f in ds.attrs["bnsl_flag"].items() if m != model}
    return out.assign_attrs(bnsl_flag=flags)


# -- what a figure shows -------------------------------------------------------------------------


def make(name: str, ds: xr.Dataset) -> Figure:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib/numpy warning while drawing
        return plots.figure_function(name)(ds)


def layout(fig: Figure):
    """Run the constrained layout (without rasterizing) and return the renderer it used."""
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    return canvas.get_renderer()


def colorbars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def data_axes(fig: Figure) -> list:
    """Visible axes that show data: not colorbars, not switched off (notes, the fit table)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison and ax not in colorbars(fig)]


def figure_texts(fig: Figure) -> str:
    """Every text of the figure: titles, labels, notes, tick labels, legends, table cells, one
    per line (a text wrapped to its panel's width joined again)."""
    texts = [t.get_text() for t in fig.texts]
    texts += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    for ax in fig.axes:
        texts += [t.get_text() for t in ax.texts]
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels()]
        if ax.get_legend():
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
        for table in ax.tables:
            texts += [cell.get_text().get_text() for cell in table.get_celld().values()]
    return "\n".join(" ".join(t.split()) for t in texts)


def legend_labels(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def label_overlaps(fig: Figure) -> list[str]:
    """Axis labels and titles that overlap another one, or another data axes' frame."""
    renderer = layout(fig)
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


def colorbar_overlaps(fig: Figure) -> list[str]:
    """Colorbars (with their ticks and label) drawn over a data axes."""
    renderer = layout(fig)
    bad = []
    for bar in colorbars(fig):
        box = bar.get_tightbbox(renderer)
        for k, ax in enumerate(data_axes(fig)):
            if box.overlaps(ax.get_window_extent(renderer)):
                bad.append(f"colorbar {bar.get_ylabel()!r} overlaps axes {k} ({ax.get_title()})")
    return bad


def check_figure(fig: Figure, overlaps: bool = True) -> int:
    """Check what every figure must have; return its number of data axes."""
    assert isinstance(fig, Figure)
    axes = data_axes(fig)
    for ax in axes:
        assert ax.get_xlabel().strip() and ax.xaxis.label.get_visible()
        assert ax.get_ylabel().strip() and ax.yaxis.label.get_visible()
    assert fig.get_suptitle()
    if overlaps:  # renders the figure: the slowest check
        assert not label_overlaps(fig)
    return len(axes)


def n_axes(name: str, ds: xr.Dataset) -> int:
    return len(data_axes(make(name, ds)))


@pytest.fixture(scope="module")
def summary() -> xr.Dataset:
    return synthetic_summary(3)


@pytest.fixture(scope="module")
def store(tmp_path_factory, summary) -> Path:
    """The synthetic summary written the way the summary stage writes it."""
    path = tmp_path_factory.mktemp("summary") / "summary.zarr"
    names = [str(m) for m in summary["model"].values]
    ds = summary.assign_coords(model=np.arange(len(names), dtype=np.int64))
    write_zarr(with_labels(ds, {"model": names}), path)
    return path


def is_png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def check_files(png, pdf) -> None:
    assert png.stat().st_size > 10_000 and is_png(png)
    assert pdf.stat().st_size > 5_000 and pdf.read_bytes()[:5] == b"%PDF-"


# -- every figure --------------------------------------------------------------------------------


#: Figures of data every model shares (the token counts), which name no model.
SHARED_BY_THE_MODELS = {"token_frequency"}
#: Figures of groups of seeds, which name the settings the groups were trained under.
BY_SETTING = {"interventions"}


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_figure(name, summary, tmp_path):
    fig = make(name, summary)
    assert check_figure(fig) > 0
    texts = figure_texts(fig)
    for model in summary["model"].values if name not in BY_SETTING | SHARED_BY_THE_MODELS else ():
        assert str(model) in texts  # in a title, a label, a legend or the table
    if name in BY_SETTING:  # the settings the seeds' models were trained under, by name
        toy = summary.attrs["toy_models"].values()
        assert all(t["intervention"] in texts for t in toy if t["intervention"] != "baseline")
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    save(fig, str(png), str(pdf))
    check_files(png, pdf)


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_one_and_many_models(name, summary):
    """A figure has either a fixed number of panels or the same panels for each model (or, a
    comparison of settings, for each width)."""
    counts = {n: check_figure(make(name, synthetic_summary(n, n_layers=2))) for n in (1, 6)}
    counts[3] = n_axes(name, summary)
    fixed = counts[1] == counts[3] == counts[6]
    per_model = counts[3] == 3 * counts[1] and counts[6] == 6 * counts[1]
    # a comparison of settings: its panels, then a row with as many per width (here: per model)
    per_width = name in BY_SETTING and (counts[6] - counts[1]) * 2 == (counts[3] - counts[1]) * 5
    assert counts[1] > 0 and (fixed or per_model or per_width), counts


@pytest.mark.parametrize("n_models", [1, 3, 6])
@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_colorbars_beside_the_axes(name, n_models):
    fig = make(name, synthetic_summary(n_models, n_layers=2 if n_models > 3 else 4))
    assert not colorbar_overlaps(fig)


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_without_parameter_gradients(name):
    """A figure of the transformer blocks (one with their colorbar) becomes a note; every other
    figure keeps its panels."""
    ds = synthetic_summary(2, layers=False)
    assert "layer" not in ds.dims
    with_layers = make(name, synthetic_summary(2))
    per_block = any("transformer block" in bar.get_ylabel() for bar in colorbars(with_layers))
    per_block |= any(label.startswith("block ") for label in legend_labels(with_layers))
    fig = make(name, ds)
    if per_block:
        assert check_figure(fig, overlaps=False) == 0
        assert NO_PARAMETERS in figure_texts(fig)
    else:
        assert check_figure(fig, overlaps=False) == len(data_axes(with_layers))


#: Figures with one row of panels per (update) step.
STEP_ROWS = {"landscape_tokens"}


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_single_step(name):
    ds = synthetic_summary(2, steps=[0])
    assert "interference" not in ds  # reduce writes no pairs for a single step
    fig = make(name, ds)
    n = check_figure(fig, overlaps=False)
    if n == 0:
        assert "two or more steps" in figure_texts(fig)
    elif name in STEP_ROWS:  # one row of panels per step (at most four): one row here
        assert n == ds.sizes["model"]
    else:
        assert n == n_axes(name, synthetic_summary(2))


def test_interference_needs_two_steps():
    fig = make("interference", synthetic_summary(2, steps=[0]))
    assert "two or more steps" in figure_texts(fig)


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_missing_optional_variables(name):
    """Without the logit-gradient rank its panel is a note; without the output layer's and the
    embedding's parameter measurements, the blocks are still drawn; without the fits, the
    losses are; without the provenance attrs, the rules are named without their values."""
    full = synthetic_summary(2)
    optional = ["logit_grad_rank", "logit_grad_rank_kept"]
    optional += ["head_cos_attractive_repulsive", "head_interference"]
    optional += ["embed_interference", *(bnsl(f) for f in FIT_FIELDS)]
    ds = full.drop_vars(optional)
    ds.attrs = {}
    fig = make(name, ds)
    n = check_figure(fig, overlaps=False)
    if plots.FIGURES[name].experiment:  # without the record of how the toy models were trained
        assert "no model of this run" in figure_texts(fig)
    elif "rank was not extracted" in figure_texts(fig):
        assert n == n_axes(name, full) - 1
    else:
        assert n == n_axes(name, full)


#: Figures of the toy suite's controlled experiments, which select models by how they were
#: trained (the summary's ``toy_models`` attrs).
TOY_EXPERIMENTS = {"head_rank", "spamlang"}


@pytest.mark.parametrize("name", sorted(TOY_EXPERIMENTS))
def test_toy_experiments_draw_only_their_models(name):
    ds = synthetic_summary(3)
    toy = dict(ds.attrs["toy_models"])
    first = str(ds["model"].values[0])
    # the first model is neither factored nor a SpamLang model: it is left out
    toy[first] = {**toy[first], "head_rank": None, "language_kind": "markov"}
    ds.attrs = {**ds.attrs, "toy_models": toy}
    texts = figure_texts(make(name, ds))
    assert first not in texts
    assert all(str(m) in texts for m in ds["model"].values[1:])
    ds.attrs = {**ds.attrs, "toy_models": {first: toy[first]}}
    assert "no model of this run" in figure_texts(make(name, ds))


def interventions_summary() -> xr.Dataset:
    """Six models: three seeds of a baseline and three of Muon, all of one width."""
    ds = synthetic_summary(6)
    names = [str(m) for m in ds["model"].values]
    groups = ["baseline-d16"] * 3 + ["muon-d16"] * 3
    toy = {m: {"hidden_size": 16, "intervention": g.split("-")[0]} for m, g in zip(names, groups)}
    return ds.assign_coords(group=("model", groups)).assign_attrs(toy_models=toy)


def test_interventions_figure_shows_each_settings_mean_and_spread():
    """Muon's point in the final-loss panel is the mean of its three seeds' last losses with
    their sample standard deviation as its bar; the baseline's line is its seeds' mean."""
    ds = interventions_summary()
    fig = make("interventions", ds)
    ax = next(a for a in fig.axes if "final loss (nats)" in a.get_title())
    last = []
    for m in ds["model"].values:
        loss = ds[overall("loss")].sel(model=m).values
        last.append(loss[np.isfinite(loss)][-1])
    base, muon = np.array(last[:3]), np.array(last[3:])
    (points,) = [c for c in ax.containers]
    ((x, y),) = points.lines[0].get_xydata()
    np.testing.assert_allclose(y, muon.mean(), rtol=1e-12)
    segments = points.lines[2][0].get_segments()
    np.testing.assert_allclose(np.ptp(segments[0][:, 1]) / 2, muon.std(ddof=1), rtol=1e-12)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    np.testing.assert_allclose(dashed[0].get_ydata()[0], base.mean(), rtol=1e-12)
    assert "muon" in figure_texts(fig)


def test_spamlang_grid_shows_each_models_final_loss():
    """The grid's annotations are the overall loss at each model's last finite step."""
    ds = synthetic_summary(6)
    texts = figure_texts(make("spamlang", ds))
    widths = [ds.attrs["toy_models"][str(m)]["hidden_size"] for m in ds["model"].values]
    d = max(set(widths), key=lambda w: (widths.count(w), -w))
    for m, w in zip(ds["model"].values, widths):
        loss = ds[overall("loss")].sel(model=m).values
        last = loss[np.isfinite(loss)][-1]
        assert (f"{last:.2f} {m}" in texts) == (w == d)


def test_overlap_check_detects_crowding():
    fig = Figure(figsize=(3, 3))
    for ax in fig.subplots(2, 2).flat:
        ax.set(xlabel="training step (symlog)", ylabel="mean loss (nats)", title="a long title")
    assert label_overlaps(fig)


def test_colorbar_check_detects_overlap():
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.subplots()
    ax.set(xlabel="x", ylabel="y")
    cax = fig.add_axes((0.5, 0.2, 0.05, 0.6), label="<colorbar>")
    fig.colorbar(matplotlib.cm.ScalarMappable(), cax=cax)
    assert colorbar_overlaps(fig)


# -- Gradient dissent ----------------------------------------------------------------------------


def test_unseen_bin_left_out_of_colour_scale(summary):
    fig = make("loss_by_bin", summary)
    cbar = colorbars(fig)[0]
    ticks = cbar.get_yticks()
    assert UNSEEN_BIN not in ticks and ticks.min() >= min(BINS[1:])
    assert "log2" in cbar.get_ylabel()


def test_rules_state_their_settings(summary):
    """The saturation tolerance and dissent threshold of the run, from the summary's attrs."""
    assert "saturated (≥ 1% above the best earlier loss)" in legend_labels(
        make("loss_by_bin", summary)
    )
    assert "dissent onset (mean cos ≤ −0.9)" in legend_labels(make("dissent", summary))
    assert "≤ −0.9" in figure_texts(make("overview", summary))
    unknown = summary.copy()
    unknown.attrs = {k: v for k, v in summary.attrs.items() if k not in PROVENANCE}
    assert "saturated" in legend_labels(make("loss_by_bin", unknown))
    assert "dissent onset" in legend_labels(make("dissent", unknown))


# -- Zero-sum learning ---------------------------------------------------------------------------


def bnsl_lines(fig: Figure, color) -> tuple[list, list]:
    """The fitted curves (solid) and post-break power laws (dashed) drawn in ``color``."""
    lines = [ln for ln in data_axes(fig)[0].get_lines() if ln.get_color() == color]
    solid = [ln for ln in lines if ln.get_linestyle() == "-"]
    return solid, [ln for ln in lines if ln.get_linestyle() == "--"]


def test_bnsl_flags_and_nan_fits(summary):
    ds = without_fit(summary, NAMES[0])
    fig = make("bnsl", ds)
    labels = [t.get_text() for t in data_axes(fig)[0].get_legend().get_texts()]
    assert f"{NAMES[2]} (flag: no_break)" in labels
    assert f"{NAMES[1]} (flag: too_few_points)" in labels
    assert NAMES[0] in labels
    table = [ax for ax in fig.axes if ax.tables][0].tables[0]
    cells = {(r, c): cell.get_text().get_text() for (r, c), cell in table.get_celld().items()}
    assert cells[(1, 6)] == "no fit"  # first model: no fit
    assert cells[(2, 1)] == "–"  # second model: NaN t_d
    colors = model_colors(NAMES[:3])
    for model in NAMES[:2]:  # no fit, a failed fit: the loss only
        assert bnsl_lines(fig, colors[model]) == ([], [])
    assert all(bnsl_lines(fig, colors[NAMES[2]]))
    # step 0 is left out of the log-log axes
    ax = data_axes(fig)[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert all((line.get_xdata() > 0).all() for line in ax.get_lines())


def test_bnsl_curve_spans_the_fitted_steps():
    """The fitted curve runs from ``bnsl_t_first`` to ``bnsl_T`` however many of the steps
    between them were fitted (a subsampled fit), and wherever the fit started."""
    ds = synthetic_summary(3, fit=FitConfig(min_step=50, subsample=7))
    model = NAMES[2]
    fit = {f: float(ds[bnsl(f)].sel(model=model)) for f in ("t_first", "T", "n_points")}
    steps = ds["step"].values
    assert fit["n_points"] < ((steps >= fit["t_first"]) & (steps <= fit["T"])).sum()
    late = ds.copy()
    late[bnsl("t_first")] = late[bnsl("t_first")].where(late["model"] != model, 1000.0)
    color = model_colors(NAMES[:3])[model]
    for summary, t_first in ((ds, fit["t_first"]), (late, 1000.0)):
        (curve,), _ = bnsl_lines(make("bnsl", summary), color)
        assert curve.get_xdata()[0] == pytest.approx(t_first)
        assert curve.get_xdata()[-1] == pytest.approx(fit["T"])


def test_bnsl_good_fit_has_no_flag_in_legend(summary):
    ds = summary.assign_attrs(bnsl_flag={**summary.attrs["bnsl_flag"], NAMES[0]: ""})
    labels = [t.get_text() for t in data_axes(make("bnsl", ds))[0].get_legend().get_texts()]
    assert NAMES[0] in labels and not any("flag: )" in lab for lab in labels)


# -- across models -------------------------------------------------------------------------------


def test_overview_marks_the_saturated_bins(summary):
    fig = make("overview", summary)
    ax = data_axes(fig)[2]
    squares = [ln for ln in ax.get_lines() if ln.get_marker() == "s"]
    n_saturated = int(np.isfinite(summary["saturation_step_bin"].values[:, 1:]).sum())
    assert n_saturated > 0 and len(squares) == n_saturated
    ds = summary.drop_vars("saturation_step_bin")  # a summary reduced before it existed
    assert "re-run the reduce rule" in figure_texts(make("overview", ds))


def test_overview_without_sizes_names_the_models():
    fig = make("overview", synthetic_summary(2, layers=False))
    ax = data_axes(fig)[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES[:2]


def test_model_colors_consistent():
    names = ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b"]
    colors = model_colors(names)
    assert model_colors(names[::-1]) == colors
    assert model_colors(np.array(names)) == colors
    assert len(set(colors.values())) == len(names)  # distinct
    # a model keeps its colour whatever the other models (these names hash to distinct colours)
    for name in names:
        assert model_colors([name])[name] == colors[name]
        assert model_colors([name, "other-model"])[name] == colors[name]
        assert model_colors([*names, "other-model"])[name] == colors[name]
    # no grey: it marks the references (all tokens, output layer)
    grey = matplotlib.colormaps["tab10"].colors[7]
    assert grey not in colors.values()


def test_model_colors_resolve_clashes():
    # "other-model" and "pythia-14m" hash to the same colour: the first in name order keeps it
    both = model_colors(["pythia-14m", "other-model"])
    assert both["other-model"] == model_colors(["other-model"])["other-model"]
    assert both["pythia-14m"] != both["other-model"]
    for n in (9, 18):
        assert len(set(model_colors([f"m{i}" for i in range(n)]).values())) == n
    assert len(model_colors([f"m{i}" for i in range(30)])) == 30  # reused, no hang


def test_figures_use_the_model_colours(summary):
    colors = model_colors(summary["model"].values)
    ax = data_axes(make("bottleneck", summary))[0]
    drawn = [tuple(line.get_color()) for line in ax.get_lines()]
    assert list(dict.fromkeys(drawn)) == [colors[str(m)] for m in summary["model"].values]


# -- the workflow's entry point and the registry -------------------------------------------------


@pytest.mark.parametrize("name", ["loss_by_bin", "bnsl", "overview"])
def test_draw(name, store, tmp_path):
    """``draw`` as the workflow calls it: from the store the summary stage writes (integer model
    ids and their names as labels)."""
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    plots.draw(name, str(store), str(png), str(pdf), dpi=80)
    check_files(png, pdf)


def test_store_keeps_fits_and_provenance(store):
    ds = open_labeled(store).load()
    labels = [t.get_text() for t in data_axes(make("bnsl", ds))[0].get_legend().get_texts()]
    assert f"{NAMES[2]} (flag: no_break)" in labels
    assert "dissent onset (mean cos ≤ −0.9)" in legend_labels(make("dissent", ds))


def test_draw_rejects_unknown_figures(store, tmp_path):
    with pytest.raises(KeyError, match="unknown figure"):
        plots.draw("nope", str(store), str(tmp_path / "a.png"), str(tmp_path / "a.pdf"))


def test_registry_covers_every_figure_and_caption(repo):
    modules = [m.name for m in pkgutil.iter_modules(plots.__path__)]
    functions = {
        name: getattr(module, name)
        for module in (importlib.import_module(f"pipeline.plots.{m}") for m in modules)
        for name in vars(module)
        if name.startswith("plot_")
    }
    assert set(functions) == {f"plot_{name}" for name in plots.FIGURES}
    captions = set()
    for name, spec in plots.FIGURES.items():
        assert spec.name == name and spec.category
        assert (repo / spec.source).is_file()
        function = plots.figure_function(name)
        assert function is functions[f"plot_{name}"]
        assert function.__module__ == f"pipeline.plots.{spec.module}"
        caption = (repo / spec.caption).read_text()
        assert 4 <= len(caption.strip().splitlines()) <= 8
        captions.add(repo / spec.caption)
    # no caption without a figure (workflow.rst: the provenance report's description)
    assert set((repo / "report").glob("*.rst")) - {repo / "report/workflow.rst"} == captions


def test_registry_imports_no_plotting_library():
    """Snakemake imports ``pipeline.plots`` to build the DAG: no matplotlib, torch or xarray.
    The figure modules use matplotlib's object API: no pyplot either."""
    code = (
        "import sys\n"
        "import pipeline.plots as p\n"
        "print(sorted(m for m in ('matplotlib', 'torch', 'xarray') if m in sys.modules))\n"
        "for name in p.FIGURES: p.figure_function(name)\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split("\n")[:2] == ["[]", "False"]


def test_captions_are_valid_restructuredtext(repo):
    """Snakemake renders the captions as reStructuredText: |x| would be a substitution."""
    import docutils.core

    for spec in plots.FIGURES.values():
        docutils.core.publish_string(
            (repo / spec.caption).read_text(),
            writer="html",
            settings_overrides={"halt_level": 2, "report_level": 5},
        )


def test_interference_title_names_how_the_pairs_were_formed(summary):
    """A sparse schedule pairs t with the next checkpoint, not 2t: the title must say so."""
    doubling = summary.copy()
    steps = doubling["step"].values
    doubling["pair_step"] = doubling["pair_step"].copy(
        data=np.broadcast_to(2 * steps, doubling["pair_step"].shape).astype(float)
    )
    assert make("interference", doubling)._suptitle.get_text().endswith("(t, t′ = 2t)")
    sparse = summary.copy()
    sparse["pair_step"] = sparse["pair_step"] + 1  # (t, t + 1): not doubling
    title = make("interference", sparse)._suptitle.get_text()
    assert "else the next checkpoint" in title


@pytest.mark.parametrize("name", ["head_spectrum", "spectral_saturation"])
def test_without_the_geometry_the_spectral_figures_say_so(name):
    from pipeline.schema import GEOMETRY

    ds = synthetic_summary(2).drop_vars([v.name for v in GEOMETRY])
    assert "was not extracted" in figure_texts(make(name, ds))


def test_a_figure_killed_while_saving_leaves_no_file(tmp_path, monkeypatch):
    """Saving goes to a temporary name renamed once complete: a job killed while drawing leaves
    no PNG that looks finished (the report then refuses the missing figure)."""
    import matplotlib.pyplot as plt

    from pipeline.plots.common import save

    fig = plt.figure()
    real = fig.savefig

    def killed(path, **kwargs):
        real(path, **kwargs)
        with open(path, "r+b") as fh:
            fh.truncate(100)  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(fig, "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        save(fig, str(tmp_path / "f.png"), str(tmp_path / "f.pdf"))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(fig, "savefig", real)
    save(fig, str(tmp_path / "f.png"), str(tmp_path / "f.pdf"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]
    plt.close(fig)


# -- what every figure shares ----------------------------------------------------------------------


def outside_the_figure(fig: Figure) -> list[str]:
    """The texts of ``fig`` drawn (partly) outside its canvas: cut off in the PNG."""
    renderer = layout(fig)
    box = fig.bbox
    hidden = set()  # labels of ticks beyond the axis's range, which matplotlib does not draw
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * abs(high - low)
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not low - slack <= tick.get_loc() <= high + slack:
                    hidden |= {id(tick.label1), id(tick.label2)}
    out = []
    for t in fig.findobj(matplotlib.text.Text):
        if not t.get_visible() or not t.get_text().strip() or id(t) in hidden:
            continue
        if t.axes is not None and not t.axes.get_visible():
            continue
        e = t.get_window_extent(renderer)
        if e.x0 < box.x0 - 1 or e.x1 > box.x1 + 1 or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1:
            out.append(t.get_text())
    return out


@pytest.mark.parametrize("n_models", [1, 6])
@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_nothing_is_cut_off(name, n_models):
    """Titles, labels, notes and legends lie inside the figure at one model and at many."""
    assert not outside_the_figure(make(name, synthetic_summary(n_models, n_layers=2)))


def test_a_text_outside_the_figure_is_found():
    fig = Figure(figsize=(2, 2))
    fig.subplots().set_title("a title far too long to fit a figure two inches wide " * 2)
    assert outside_the_figure(fig)


def test_wrapping_keeps_formulas_whole():
    from pipeline.plots.common import COS_DISSENT, wrap

    text = f"total dissent: {COS_DISSENT} ≤ −0.9, the mean over all tokens of every bin"
    for width in (1.0, 2.0, 3.0, 8.0):
        wrapped = wrap(text, width, 10)
        assert " ".join(wrapped.split()) == " ".join(text.split())  # only spaces became breaks
        assert all(line.count("$") % 2 == 0 for line in wrapped.split("\n"))
    assert wrap(text, 8.0, 10) == text and wrap(text, 1.0, 10).count("\n") >= 3


def test_up_to_three_points_are_markers():
    from pipeline.plots.common import MARKERS_UP_TO, line

    ax = Figure().subplots()
    for n in (1, MARKERS_UP_TO, MARKERS_UP_TO + 1):
        drawn = line(ax, np.arange(n), np.ones(n))
        assert (drawn.get_linestyle() == "None") == (n <= MARKERS_UP_TO), n
        assert (drawn.get_marker() == "o") == (n <= MARKERS_UP_TO)


def test_zeros_on_a_log_axis_are_marked_on_its_floor():
    from pipeline.plots.common import log_line

    ax = Figure().subplots()
    ax.set_yscale("log")
    drawn, zeros = log_line(ax, [0, 1, 2, 4], [0.0, 1e-3, 2e-3, np.nan], color="C0")
    assert drawn.get_xdata().tolist() == [1, 2] and zeros.get_xdata().tolist() == [0]
    assert zeros.get_ydata().tolist() == [0.0]  # in axes units: the floor of the axis
    assert log_line(ax, [1, 2], [1.0, 2.0])[1] is None


def test_a_few_blocks_are_keyed_in_the_legend():
    """Two blocks: legend entries, no colour bar; many: a colour bar."""
    few = make("parameter_dissent", synthetic_summary(2, n_layers=2))
    assert not colorbars(few)
    assert [s for s in legend_labels(few) if s.startswith("block ")] == [
        "block 0 (nearest the input)",
        "block 1 (nearest the output)",
    ]
    many = make("parameter_dissent", synthetic_summary(2, n_layers=6))
    assert any("transformer block" in bar.get_ylabel() for bar in colorbars(many))


def test_overview_saturation_colours_dark_early():
    """The caption's "dark = early": the first step's colour darker than the last's."""
    from pipeline.plots.overview import SATURATION_CMAP

    luminance = [np.dot(SATURATION_CMAP(x)[:3], [0.2126, 0.7152, 0.0722]) for x in (0.0, 1.0)]
    assert luminance[0] < luminance[1]
    caption = Path(__file__).parents[3] / plots.FIGURES["overview"].caption
    assert "dark = early" in caption.read_text()


def test_head_spectrum_colours_follow_the_spectrum():
    """Steps whose spectra coincide share a colour; the colours rise with the distance moved."""
    from pipeline.plots.common import View
    from pipeline.plots.spectral import spectrum_travel

    ds = synthetic_summary(2)
    sv = ds["head_singular_values"].values.copy()
    sv[:, 5] = sv[:, 4]  # step 5's spectrum is step 4's
    travel = spectrum_travel(
        View.of(ds.assign(head_singular_values=(ds["head_singular_values"].dims, sv)))
    )
    assert travel[0] == 0 and travel[-1] == pytest.approx(1)
    assert travel[5] == pytest.approx(travel[4]) and (np.diff(travel) >= 0).all()
    # against numpy: the mean over the models of the RMS change of log σ, cumulated
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps without a spectrum: NaN
        logs = np.log(sv)
        moves = np.nanmean(np.sqrt(np.nanmean(np.diff(logs, axis=1) ** 2, axis=2)), axis=0)
    moves = np.nan_to_num(moves)
    want = np.concatenate([[0], np.cumsum(moves)])
    np.testing.assert_allclose(travel, want / want[-1], rtol=1e-12)


def test_bottleneck_forms_are_all_suppressed_shares(summary):
    """The middle panel's bars: 1 − κ, √(1 − κ), 1 − √κ and the batch form at each model's
    last step."""
    from pipeline.plots.common import View

    fig = make("bottleneck", summary)
    ax = data_axes(fig)[1]
    view = View.of(summary)
    bars = np.array([p.get_height() for p in ax.patches]).reshape(len(view.models), 4)
    for i, m in enumerate(view.models):
        last = {}
        for var in ("suppressed_squared", "suppressed_norm", "kept_cosine", "suppressed_batch"):
            v = summary[var].sel(model=m).values
            last[var] = v[np.isfinite(v)][-1]
        want = [
            last["suppressed_squared"],
            last["suppressed_norm"],
            1 - last["kept_cosine"],
            last["suppressed_batch"],
        ]
        np.testing.assert_allclose(bars[i], want, rtol=1e-6)
    assert "√κ\nkept cosine" not in [t.get_text() for t in ax.get_xticklabels()]
    assert "rank (rank)" not in figure_texts(fig)
