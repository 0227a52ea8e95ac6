"""What the Zero-sum learning figures (``pipeline.plots.zsl``, ``pipeline.plots.single_step``)
show, read back from the figures drawn from ``test_plots``'s synthetic summary: the data drawn
equal the summary's, markers where two or three points would suggest a trend, zeros of a log
axis on its floor, legends of what is drawn only, and titles inside the figure.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import LineCollection, PolyCollection, QuadMesh

from pipeline.maths.bnsl import bnsl as bnsl_curve
from pipeline.plots import FIGURES
from pipeline.plots.common import ZERO_LABEL, model_colors
from pipeline.plots.zsl import NO_TRAIN_FIT
from pipeline.schema import FIT_FIELDS, UPDATE_SUMMARY, bnsl, overall
from tests.unit.plots.test_plots import (
    NAMES,
    data_axes,
    figure_texts,
    legend_labels,
    make,
    outside_the_figure,
    synthetic_summary,
    without_fit,
)

ZSL_FIGURES = [name for name, spec in FIGURES.items() if spec.module in ("zsl", "single_step")]
SINGLE_STEP = [name for name, spec in FIGURES.items() if spec.module == "single_step"]


@pytest.fixture(scope="module")
def summary() -> xr.Dataset:
    return synthetic_summary(3)


def displacement(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as a suite without optimizer states is analysed: along one displacement per step
    (one update batch), without update-batch ("train") variables, and step 0's displacement between
    identical revisions: every change 0, M = 0, D and r undefined."""
    train = [v.name for v in UPDATE_SUMMARY if v.name.startswith("train_") and v.name in ds]
    ds = ds.drop_vars(train).isel(update_batch=[0])
    first = ds["step"] == 0
    ds["eval_M"] = ds["eval_M"].where(~first, 0.0)
    ds["update_norm"] = ds["update_norm"].where(~first, 0.0)
    for v in ("eval_D", "eval_pearson", "coherence_g", "coherence_u", "update_grad_cos"):
        ds[v] = ds[v].where(~first)
    names = [str(m) for m in ds["model"].values]
    return ds.assign_attrs(update_direction={m: "displacement" for m in names})


def lines_of(ax, color) -> list:
    return [ln for ln in ax.get_lines() if ln.get_color() == color]


# -- interference: a heat map per model -----------------------------------------------------------


def test_interference_is_a_bin_by_step_heat_map_of_the_summarys_d(summary):
    fig = make("interference", summary)
    maps = [ax for ax in data_axes(fig) if any(isinstance(c, QuadMesh) for c in ax.collections)]
    assert len(maps) == summary.sizes["model"]
    d = summary["interference"]
    bins = d["bin"].values[1:]  # without the bin of ids never seen
    steps = d["step"].values[np.isfinite(d.values).any(axis=(0, 2))]
    for ax, model in zip(maps, summary["model"].values):
        (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
        grid = np.ma.filled(mesh.get_array(), np.nan).reshape(bins.size + 1, steps.size)
        want = d.sel(model=model, step=steps, bin=bins).values.T  # (bin, step)
        np.testing.assert_allclose(grid[:-1], want)
        np.testing.assert_allclose(
            grid[-1], summary[overall("interference")].sel(model=model, step=steps).values
        )
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels and set(labels) <= {str(s) for s in steps}
        assert [t.get_text() for t in ax.get_yticklabels()][-1] == "all"
        assert not [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]  # no tangle


def test_interference_of_a_model_without_pairs_says_so(summary):
    ds = summary.copy()
    model = NAMES[0]
    for v in ("interference", overall("interference")):
        ds[v] = ds[v].where(ds["model"] != model)
    fig = make("interference", ds)
    assert f"no checkpoint pair of {model}" in figure_texts(fig)


# -- first order: 1 − r on a log axis --------------------------------------------------------------


def test_first_order_draws_one_minus_r_on_a_log_axis(summary):
    fig = make("first_order", summary)
    ax = data_axes(fig)[0]
    assert ax.get_yscale() == "log" and "1 − Pearson r" in ax.get_ylabel()
    model = str(summary["model"].values[0])
    r = summary["eval_pearson"].sel(model=model).values  # (step, batch)
    ok = np.isfinite(r).any(axis=1)
    want = 1 - np.nanmean(r[ok], axis=1)
    solid = [ln for ln in lines_of(ax, model_colors(NAMES[:3])[model]) if ln.get_linestyle() == "-"]
    (mean,) = solid
    np.testing.assert_allclose(mean.get_xdata(), summary["step"].values[ok])
    np.testing.assert_allclose(mean.get_ydata(), want)
    lo, hi = ax.get_ylim()
    assert lo < want.min() and hi > want.max() and hi < 1  # not a 0.9–1 axis of r itself


# -- BNSL: the deceleration point on its model's curves, the training-curve fits -------------------


def fit_of(ds: xr.Dataset, model: str) -> dict[str, float]:
    return {f: float(ds[bnsl(f)].sel(model=model)) for f in FIT_FIELDS}


@pytest.mark.parametrize("model", [NAMES[0], NAMES[2]])  # a fit, a flagged fit
def test_bnsl_deceleration_point_lies_on_its_models_curves(summary, model):
    ds = summary.assign_attrs(bnsl_flag={**summary.attrs["bnsl_flag"], NAMES[0]: ""})
    fig = make("bnsl", ds)
    color = model_colors(NAMES[:3])[model]
    fit = fit_of(ds, model)
    ax = data_axes(fig)[0]
    (star,) = [
        ln
        for ln in ax.get_lines()
        if ln.get_marker() == "*" and color in (ln.get_markerfacecolor(), ln.get_markeredgecolor())
    ]
    t_d, L_d = star.get_xdata()[0], star.get_ydata()[0]
    assert (t_d, L_d) == pytest.approx((fit["t_d"], fit["L_d"]))
    mine = lines_of(ax, color)
    (pre,) = [ln for ln in mine if ln.get_linestyle() == ":"]
    (post,) = [ln for ln in mine if ln.get_linestyle() == "--"]
    # the pre-break power law ends, the post-break one starts at the star
    assert (pre.get_xdata()[-1], pre.get_ydata()[-1]) == pytest.approx((t_d, L_d))
    assert (post.get_xdata()[0], post.get_ydata()[0]) == pytest.approx((t_d, L_d))
    p = {k: fit[k] for k in ("a", "b", "c0")}
    t = pre.get_xdata()
    np.testing.assert_allclose(pre.get_ydata(), p["a"] + p["b"] * t ** -p["c0"])
    # the fitted BNSL curve approaches the pre-break law well before the break
    (curve,) = [ln for ln in mine if ln.get_linestyle() == "-"]
    params = {k: fit[k] for k in ("a", "b", "c0", "c1", "d1", "f1")}
    np.testing.assert_allclose(curve.get_ydata(), bnsl_curve(curve.get_xdata(), **params))


def test_bnsl_without_a_training_curve_fit_says_so(summary):
    fig = make("bnsl", summary)
    assert " ".join(NO_TRAIN_FIT.split()) in " ".join(figure_texts(fig).split())
    assert len(data_axes(fig)) == 1


def with_train_fits(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with training-loss curves and fits as the summary holds them (``train_loss`` over
    ``train_step``, ``bnsl_train_*``, ``attrs["bnsl_train_flag"]``): each model's evaluation
    loss fit 5% lower, its curve that fit at every step."""
    out = ds.copy()
    steps = np.arange(1, int(ds["step"].values.max()) + 1)
    loss = np.full((ds.sizes["model"], steps.size), np.nan)
    for f in FIT_FIELDS:
        v = ds[bnsl(f)]
        out[bnsl(f, "train")] = v * 0.95 if f in ("a", "b", "L_d", "L_hat_T", "L_T") else v
    for i, model in enumerate(ds["model"].values):
        fit = {f: float(out[bnsl(f, "train")].sel(model=model)) for f in FIT_FIELDS}
        if np.isfinite(fit["b"]):
            params = {k: fit[k] for k in ("a", "b", "c0", "c1", "d1", "f1")}
            loss[i] = bnsl_curve(steps.astype(float), **params)
    out["train_loss"] = xr.DataArray(
        loss, dims=("model", "train_step"), coords={"train_step": steps}
    )
    flags = {str(m): "" for m in ds["model"].values}
    return out.assign_attrs(bnsl_train_flag=flags)


def test_bnsl_draws_the_training_curve_fits_beside(summary):
    ds = with_train_fits(summary)
    fig = make("bnsl", ds)
    assert " ".join(NO_TRAIN_FIT.split()) not in " ".join(figure_texts(fig).split())
    eval_ax, train_ax = data_axes(fig)
    model = NAMES[0]
    color = model_colors(NAMES[:3])[model]
    mine = lines_of(train_ax, color)
    (curve,) = [ln for ln in mine if ln.get_linestyle() == "-"]
    fit = {f: float(ds[bnsl(f, "train")].sel(model=model)) for f in FIT_FIELDS}
    params = {k: fit[k] for k in ("a", "b", "c0", "c1", "d1", "f1")}
    np.testing.assert_allclose(curve.get_ydata(), bnsl_curve(curve.get_xdata(), **params))
    (points,) = [ln for ln in mine if ln.get_marker() == "o"]  # the training loss itself
    np.testing.assert_allclose(points.get_ydata(), ds["train_loss"].sel(model=model).values)
    table = [ax for ax in fig.axes if ax.tables][0].tables[0]
    cells = {rc: cell.get_text().get_text() for rc, cell in table.get_celld().items()}
    assert cells[(0, 1)] == "loss" and {cells[(1, 1)], cells[(2, 1)]} == {"eval", "train"}


def test_bnsl_legend_lists_only_what_is_drawn(summary):
    ds = summary
    for model in NAMES[:3]:
        ds = without_fit(ds, model)
    labels = [t.get_text() for t in data_axes(make("bnsl", ds))[0].get_legend().get_texts()]
    assert labels == NAMES[:3]  # the models' losses, no fitted line, no star


# -- single-step figures: displacements, zeros, few steps -----------------------------------------


@pytest.mark.parametrize("name", SINGLE_STEP)
def test_a_displacement_has_no_update_batch_in_its_legends(name, summary):
    fig = make(name, displacement(summary))
    assert not any("update batch" in label for label in legend_labels(fig))
    assert "displacement" in fig.get_suptitle()


def test_an_optimizer_step_lists_its_update_batch(summary):
    for name in ("single_step_interference", "first_order"):
        assert any("update batch" in label for label in legend_labels(make(name, summary)))


def test_a_zero_magnitude_is_a_zero_marker_not_a_point_off_the_axis(summary):
    ds = displacement(summary)
    fig = make("single_step_interference", ds)
    ax_m = data_axes(fig)[1]
    assert ax_m.get_yscale() == "log"
    for ln in ax_m.get_lines():
        if ln.get_marker() != "v":  # every data point positive
            assert (np.asarray(ln.get_ydata()) > 0).all()
    (zero,) = [ln for ln in ax_m.get_lines() if ln.get_marker() == "v"]
    assert list(zero.get_xdata()) == [0.0] and list(zero.get_ydata()) == [0.0]  # on the floor
    assert ZERO_LABEL in legend_labels(fig)
    # an optimizer step has no zero: no such entry
    assert ZERO_LABEL not in legend_labels(make("single_step_interference", summary))


def few_steps(ds: xr.Dataset, n: int) -> xr.Dataset:
    """``ds`` with update measurements at its first ``n`` measured steps only."""
    measured = ds["step"].values[np.isfinite(ds["eval_D"].values).any(axis=(0, 2))]
    keep = ds["step"].isin(measured[:n])
    out = ds.copy()
    for v in UPDATE_SUMMARY:
        if v.name in out and "step" in out[v.name].dims:
            out[v.name] = out[v.name].where(keep)
    return out


@pytest.mark.parametrize("name", ["single_step_interference", "first_order", "alignment"])
def test_two_or_three_steps_are_markers_with_bars(name, summary):
    fig = make(name, few_steps(summary, 3))
    color = model_colors(NAMES[:3])[NAMES[0]]
    ax = data_axes(fig)[0 if name != "alignment" else 2]
    mine = lines_of(ax, color)
    assert mine and all(ln.get_linestyle() == "None" and ln.get_marker() != "None" for ln in mine)
    assert any(isinstance(c, LineCollection) for c in ax.collections)  # ranges as bars
    assert not any(isinstance(c, PolyCollection) for c in ax.collections)  # no band
    many = lines_of(data_axes(make(name, summary))[0 if name != "alignment" else 2], color)
    assert any(ln.get_linestyle() != "None" for ln in many)


# -- titles inside the figure ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ZSL_FIGURES)
def test_a_one_model_displacement_figure_cuts_nothing_off(name):
    """Along displacements (longer titles) and with one model (the narrowest figure)."""
    assert not outside_the_figure(make(name, displacement(synthetic_summary(1))))
