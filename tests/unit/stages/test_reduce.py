"""The per-model reduction and the summary against eager numpy (tests/reference.py), over several
chunkings of the step stores on disk."""

import json
import warnings

import numpy as np
import pytest
import xarray as xr

from pipeline.config import FitConfig, ReduceConfig
from pipeline.fit import fit_model, fit_train_curve, read_fit, write_train_curve
from pipeline.maths.interference import loss_change_interference
from pipeline.reduce import layer_summaries, loss_change_pairs, reduce_model
from pipeline.schema import FIT_FIELDS, MEASUREMENTS, bnsl, overall, quantile, quantile_overall
from pipeline.store import write_zarr
from pipeline.summary import open_summary, summarize
from tests.reference import (
    bin_means,
    bin_quantiles,
    improving_by_step,
    interference_of_changes,
    saturation_step_by_step,
)


def write_steps(tmp_path, steps, n_tokens, chunk, seed=0):
    """One store per step of random measurements (step 0 worse by 1), chunked by ``chunk``
    tokens on disk; returns the paths, the tokens' bins and the values by step."""
    rng = np.random.default_rng(seed)
    bins = rng.integers(-12, -4, size=n_tokens)
    values = {}
    paths = []
    for s in steps:
        v = {m: rng.random(n_tokens).astype(np.float32) + (s == 0) for m in MEASUREMENTS}
        v["kept_fraction"][rng.random(n_tokens) < 0.05] = np.nan  # p_t = 1 leaves κ undefined
        values[s] = v
        ds = xr.Dataset(
            {m: ("token", x) for m, x in v.items()},
            coords={"token": np.arange(n_tokens), "bin": ("token", bins)},
            attrs={"weights_sha256": f"sha{s}"},
        ).expand_dims(step=np.array([s], dtype=np.int64))
        path = tmp_path / f"step{s}.zarr"
        write_zarr(ds.chunk({"token": chunk}), path)
        paths.append(str(path))
    return paths, bins, values


@pytest.mark.parametrize(  # one chunk, odd chunks, many chunks (the last two: full tier only)
    "chunk",
    [1000, pytest.param(37, marks=pytest.mark.slow), pytest.param(11, marks=pytest.mark.slow)],
)
def test_reduce_matches_numpy(tmp_path, chunk):
    steps = [4, 0, 1, 16, 2, 3]  # given out of order: the reduction sorts by step
    q = [0.1, 0.5]
    paths, bins, values = write_steps(tmp_path, steps, 300, chunk)
    reduce_model(
        paths, str(tmp_path / "m.zarr"), "m", ReduceConfig(saturation_tolerance=0.01, quantiles=q)
    )
    red = xr.open_zarr(tmp_path / "m.zarr")
    order = sorted(steps)
    assert red["step"].values.tolist() == order
    assert red["loss"].dims == ("step", "bin")
    assert red["bin"].values.tolist() == sorted(set(bins.tolist()))
    for i, s in enumerate(order):
        for m in MEASUREMENTS:
            x = values[s][m]
            np.testing.assert_allclose(red[overall(m)].values[i], np.nanmean(x), rtol=1e-6)
            np.testing.assert_allclose(
                red[quantile_overall(m)].values[i], np.nanquantile(x, q), rtol=1e-6
            )
            means, quants = bin_means(x, bins), bin_quantiles(x, bins, q)
            for j, b in enumerate(red["bin"].values):
                np.testing.assert_allclose(red[m].values[i, j], means[b], rtol=1e-6)
                np.testing.assert_allclose(red[quantile(m)].values[i, j], quants[b], rtol=1e-6)
    ref_counts = [(bins == b).sum() for b in red["bin"].values]
    assert red["n_tokens"].values.tolist() == ref_counts
    # the saturation rule, one step at a time, per bin and overall
    loss = red["loss"].values
    for j in range(loss.shape[1]):
        assert red["improving"].values[:, j].tolist() == improving_by_step(loss[:, j].tolist())
        want = saturation_step_by_step(loss[:, j].tolist(), order)
        np.testing.assert_equal(red["saturation_step_bin"].values[j], want)
    curve = red[overall("loss")].values.tolist()
    assert red["improving_overall"].values.tolist() == improving_by_step(curve)
    np.testing.assert_equal(red["saturation_step"].item(), saturation_step_by_step(curve, order))
    # loss-change interference against numpy, pairs (t, 2t) or the next step
    partners = loss_change_pairs(np.array(order))
    assert partners.tolist() == [1, 2, 4, 4, 16, -1]
    for i, (t, t2) in enumerate(zip(order, partners)):
        if t2 < 0:
            assert np.isnan(red[overall("interference")].values[i])
            continue
        delta = values[t2]["loss"].astype(np.float64) - values[t]["loss"]
        D, M = interference_of_changes(delta)
        np.testing.assert_allclose(red[overall("interference")].values[i], D, rtol=1e-6)
        np.testing.assert_allclose(red[overall("change_magnitude")].values[i], M, rtol=1e-6)
        np.testing.assert_allclose(red[overall("loss_change")].values[i], delta.mean(), rtol=1e-6)
        for j, b in enumerate(red["bin"].values):
            Db, Mb = interference_of_changes(delta[bins == b])
            np.testing.assert_allclose(red["interference"].values[i, j], Db, rtol=1e-6)
            np.testing.assert_allclose(red["change_magnitude"].values[i, j], Mb, rtol=1e-6)


def test_summary_stacks_models_and_their_fits(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    steps = {"a": [0, 1], "b": [0, 1, 2]}
    reduce_paths, fit_paths = [], []
    for seed, (model, model_steps) in enumerate(steps.items(), start=1):
        paths, _, _ = write_steps(tmp_path / model, model_steps, 50, 50, seed=seed)
        reduce_paths.append(str(tmp_path / f"{model}.zarr"))
        fit_paths.append(str(tmp_path / f"{model}.json"))
        reduce_model(paths, reduce_paths[-1], model, ReduceConfig())
        with pytest.warns(UserWarning, match="too_few_points"):  # 1 or 2 points: no fit
            fit_model(reduce_paths[-1], fit_paths[-1], FitConfig(min_step=0))
    json.loads(open(fit_paths[0]).read())  # NaN written as null: strict JSON
    provenance = {"config_sha256": "0" * 64, "fit": {"min_step": 0}}
    groups = {"a": ("a", None), "b": ("b", 7)}  # b: a seed of setting b
    summarize(
        list(steps), reduce_paths, fit_paths, str(tmp_path / "s.zarr"), provenance, groups=groups
    )
    s = open_summary(str(tmp_path / "s.zarr")).load()
    assert list(s["model"].values) == list(steps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = xr.open_zarr(tmp_path / "s.zarr")
    assert plain["group"].values.tolist() == ["a", "b"] and "group" in plain.coords
    np.testing.assert_equal(plain["seed"].values, [np.nan, 7.0])
    assert s["step"].values.tolist() == [0, 1, 2]
    assert np.isnan(s["loss_overall"].sel(model="a", step=2).values)
    assert s["loss_overall"].sel(model="b", step=2).values == pytest.approx(
        xr.open_zarr(tmp_path / "b.zarr")["loss_overall"].sel(step=2).values
    )
    for field in FIT_FIELDS:
        assert s[bnsl(field)].dims == ("model",)
        for model, path in zip(steps, fit_paths):
            np.testing.assert_equal(
                s[bnsl(field)].sel(model=model).item(), float(read_fit(path)[field])
            )
    # the fitted points: the steps after min_step = 0
    assert s[bnsl("n_points")].values.tolist() == [sum(t > 0 for t in st) for st in steps.values()]
    assert s.attrs["bnsl_flag"] == {"a": "too_few_points", "b": "too_few_points"}
    assert s.attrs["weights_sha256"] == {m: [f"sha{t}" for t in st] for m, st in steps.items()}
    assert s.attrs["config_sha256"] == "0" * 64 and s.attrs["fit"] == {"min_step": 0}
    assert s.attrs["saturation_tolerance"] == ReduceConfig().saturation_tolerance
    assert "pipeline_version" in s.attrs


@pytest.mark.filterwarnings("ignore:BNSL fit flagged")  # whatever its flag, the fit is stored
def test_summary_holds_the_training_curves_and_their_fits(tmp_path):
    """A model with a training log: its curve, as the table holds it, and its fit, as the fit's
    JSON holds it; the model without one: NaN."""
    paths, _, _ = write_steps(tmp_path, [0, 1], 20, 20)
    for m in "ab":
        reduce_model(paths, str(tmp_path / f"{m}.zarr"), m, ReduceConfig())
        with pytest.warns(UserWarning, match="too_few_points"):
            fit_model(str(tmp_path / f"{m}.zarr"), str(tmp_path / f"{m}.json"), FitConfig())
    steps = np.arange(1, 301)
    loss = 2.0 + 3.0 * steps**-0.4 + 0.01 * np.sin(steps)
    write_train_curve(list(zip(steps.tolist(), loss.tolist())), tmp_path / "b.tsv")
    fit_train_curve(str(tmp_path / "b.tsv"), "b", str(tmp_path / "b_train.json"), FitConfig())
    summarize(
        ["a", "b"],
        [str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")],
        [str(tmp_path / "a.json"), str(tmp_path / "b.json")],
        str(tmp_path / "s.zarr"),
        train_fits={"b": (str(tmp_path / "b_train.json"), str(tmp_path / "b.tsv"), None)},
    )
    s = open_summary(str(tmp_path / "s.zarr")).load()
    assert s["train_step"].values.tolist() == steps.tolist()
    np.testing.assert_array_equal(s["train_loss"].sel(model="b").values, loss)
    assert np.isnan(s["train_loss"].sel(model="a").values).all()
    fit = read_fit(str(tmp_path / "b_train.json"))
    for field in FIT_FIELDS:
        np.testing.assert_equal(s[bnsl(field, "train")].sel(model="b").item(), float(fit[field]))
        assert np.isnan(s[bnsl(field, "train")].sel(model="a").item())
    assert s.attrs["bnsl_train_flag"] == {"b": fit["flag"]}


def test_summary_stacks_reduced_updates_without_casting_its_gaps(tmp_path):
    """A model's reduced update store (one step of two) stacked into the summary: its values
    where measured, NaN at the other step, even for a variable stored as bool (a store's
    encoding must not cast the gap back: NaN as bool is True)."""
    from pipeline.schema import conform

    paths, _, _ = write_steps(tmp_path, [0, 1], 20, 20)
    reduce_model(paths, str(tmp_path / "a.zarr"), "a", ReduceConfig())
    with pytest.warns(UserWarning, match="too_few_points"):
        fit_model(str(tmp_path / "a.zarr"), str(tmp_path / "a.json"), FitConfig())
    improved = np.array([[True, False, True]])
    u = xr.Dataset(
        {
            "sample_improved": (("step", "sample"), improved),
            "update_norm": (("step", "update_batch"), [[0.5, 0.25]]),
        },
        coords={"step": [1], "sample": np.arange(3), "update_batch": np.arange(2)},
    )
    u = conform(u, "reduce_update")
    u.attrs = {"direction": "optimizer"}
    write_zarr(u, str(tmp_path / "a_update.zarr"))
    summarize(
        ["a"],
        [str(tmp_path / "a.zarr")],
        [str(tmp_path / "a.json")],
        str(tmp_path / "s.zarr"),
        update_paths={"a": str(tmp_path / "a_update.zarr")},
    )
    s = open_summary(str(tmp_path / "s.zarr")).load()
    got = s["sample_improved"].sel(model="a")
    assert np.isnan(got.sel(step=0).values.astype(float)).all()
    np.testing.assert_array_equal(got.sel(step=1).values.astype(float), improved[0])
    np.testing.assert_array_equal(s["update_norm"].sel(model="a", step=1).values, [0.5, 0.25])
    assert s.attrs["update_direction"] == {"a": "optimizer"}


def test_summary_refuses_reductions_with_different_settings(tmp_path):
    paths, _, _ = write_steps(tmp_path, [0, 1], 20, 20)
    reduce_model(paths, str(tmp_path / "a.zarr"), "a", ReduceConfig(saturation_tolerance=0.01))
    reduce_model(paths, str(tmp_path / "b.zarr"), "b", ReduceConfig(saturation_tolerance=0.02))
    with pytest.warns(UserWarning, match="too_few_points"):
        for m in "ab":
            fit_model(str(tmp_path / f"{m}.zarr"), str(tmp_path / f"{m}.json"), FitConfig())
    with pytest.raises(ValueError, match="disagree on saturation_tolerance"):
        summarize(
            ["a", "b"],
            [str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")],
            [str(tmp_path / "a.json"), str(tmp_path / "b.json")],
            str(tmp_path / "s.zarr"),
        )
    assert not (tmp_path / "s.zarr").exists()


def test_loss_change_interference_hand_cases():
    D, M = loss_change_interference(np.array([-1.0, -2.0, -0.5]))  # all improve: no interference
    assert D == 0 and M == pytest.approx(3.5 / 3)
    D, M = loss_change_interference(np.array([-1.0, 1.0, -2.0, 2.0]))  # exact cancellation
    assert D == 1 and M == 1.5
    D, _ = loss_change_interference(np.zeros(4))
    assert np.isnan(D)
    delta = np.random.default_rng(0).normal(size=(3, 50))
    D, M = loss_change_interference(delta, axis=1)
    np.testing.assert_allclose(np.abs(delta.mean(1)), M * (1 - D))  # |ΔL| = M (1 − D)
    for row, d, m in zip(delta, D, M):  # and each row is the plain sums' D and M
        np.testing.assert_allclose((d, m), interference_of_changes(row), rtol=1e-12)


def test_layer_summaries_match_concatenated_tensors():
    rng = np.random.default_rng(3)
    names = [
        "embed.weight",
        "layers.0.a.weight",
        "layers.0.norm.weight",
        "layers.1.b.weight",
        "head.weight",
    ]
    layer = np.array([-1, 0, 0, 1, -1])
    tensors = {n: (rng.normal(size=(2, 5)), rng.normal(size=(2, 5))) for n in names}  # (∇θ⁺, ∇θ⁻)
    na = np.array([[np.linalg.norm(tensors[n][0]) for n in names]])
    nr = np.array([[np.linalg.norm(tensors[n][1]) for n in names]])
    cos = np.array([[(tensors[n][0] * tensors[n][1]).sum() for n in names]]) / (na * nr)
    dw = np.array([[0.2, 0.4, np.nan, 0.6, 0.8]])
    size = np.array([10, 30, 10, 20, 10])
    ds = xr.Dataset(
        {
            "param_norm_attractive": (("step", "param"), na),
            "param_norm_repulsive": (("step", "param"), nr),
            "param_norm_grad": (("step", "param"), na),
            "param_cos_attractive_repulsive": (("step", "param"), cos),
            "param_interference": (("step", "param"), dw),
        },
        coords={
            "step": [7],
            "param": names,
            "layer": ("param", layer),
            "param_size": ("param", size),
        },
        attrs={
            "output_param": "head.weight",
            "input_param": "embed.weight",
        },
    )
    out = layer_summaries(ds)
    assert out["layer"].values.tolist() == [0, 1]
    a0 = np.concatenate([tensors[n][0].ravel() for n in names[1:3]])
    r0 = np.concatenate([tensors[n][1].ravel() for n in names[1:3]])
    ref = a0 @ r0 / np.linalg.norm(a0) / np.linalg.norm(r0)
    np.testing.assert_allclose(out["layer_cos_attractive_repulsive"].sel(layer=0), [ref])
    np.testing.assert_allclose(out["layer_interference"].sel(layer=0), [0.4])  # NaN D_W skipped
    np.testing.assert_allclose(out["head_interference"], [0.8])
    np.testing.assert_allclose(out["embed_interference"], [0.2])
    np.testing.assert_allclose(out["head_cos_attractive_repulsive"], cos[:, 4])


@pytest.mark.slow  # starts a dask.distributed cluster
def test_reduction_on_a_distributed_cluster_matches_local_threads(tmp_path):
    from dask.distributed import LocalCluster

    paths, _, _ = write_steps(tmp_path, [0, 1, 2], 200, 64)
    local = reduce_model(paths, str(tmp_path / "local.zarr"), "m", ReduceConfig())
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        cfg = ReduceConfig(scheduler=cluster.scheduler_address)
        remote = reduce_model(paths, str(tmp_path / "remote.zarr"), "m", cfg)
    xr.testing.assert_identical(local, remote)
    xr.testing.assert_identical(
        xr.open_zarr(tmp_path / "local.zarr").load(), xr.open_zarr(tmp_path / "remote.zarr").load()
    )


def test_a_step_store_of_another_model_is_named():
    from pipeline.reduce import check_sizes

    def part(d):
        return xr.Dataset({"singular": (("step", "singular"), np.ones((1, d)))})

    paths = ["m/step0.zarr", "m/step4.zarr", "m/step8.zarr"]
    check_sizes(paths, [part(16), part(16), part(16)])
    with pytest.raises(
        ValueError, match=r"m/step4.zarr has singular 8, the model's other 2 have 16"
    ):
        check_sizes(paths, [part(16), part(8), part(16)])
