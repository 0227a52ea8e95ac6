"""The per-model reduction against eager numpy, over several chunkings of the step stores."""

import numpy as np
import pytest
import xarray as xr

from pipeline.interference import loss_change_interference
from pipeline.reduce import (
    ReduceConfig,
    layer_summaries,
    loss_change_pairs,
    open_summary,
    reduce_model,
    summarize,
)
from pipeline.saturation import improving, saturation_step
from pipeline.schema import MEASUREMENTS
from pipeline.store import write_zarr


def write_steps(tmp_path, steps, n_tokens, chunk, seed=0):
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


@pytest.mark.parametrize("chunk", [1000, 37, 11])  # one chunk, odd chunks, many chunks
def test_reduce_matches_numpy(tmp_path, chunk):
    steps = [4, 0, 1, 16, 2, 3]  # given out of order: the reduction sorts by step
    paths, bins, values = write_steps(tmp_path, steps, 300, chunk)
    cfg = ReduceConfig(0.01, quantiles=[0.1, 0.5], token_chunk=chunk)
    reduce_model(paths, str(tmp_path / "m.zarr"), "m", cfg)
    red = xr.open_zarr(tmp_path / "m.zarr")
    order = sorted(steps)
    assert red["step"].values.tolist() == order
    assert red["loss"].dims == ("step", "bin")
    for i, s in enumerate(order):
        for m in MEASUREMENTS:
            x = values[s][m]
            np.testing.assert_allclose(red[f"{m}_overall"].values[i], np.nanmean(x), rtol=1e-5)
            for j, b in enumerate(red["bin"].values):
                ref = np.nanmean(x[bins == b])
                np.testing.assert_allclose(red[m].values[i, j], ref, rtol=1e-5)
                q = np.nanquantile(x[bins == b], [0.1, 0.5])
                np.testing.assert_allclose(red[f"{m}_quantile"].values[i, j], q, rtol=1e-5)
    ref_counts = [(bins == b).sum() for b in red["bin"].values]
    assert red["n_tokens"].values.tolist() == ref_counts
    np.testing.assert_array_equal(red["improving"].values, improving(red["loss"].values, axis=0))
    loss = red["loss"].values
    per_bin = [saturation_step(loss[:, j], np.array(order)) for j in range(loss.shape[1])]
    np.testing.assert_array_equal(red["saturation_step_bin"].values, per_bin)
    overall = saturation_step(red["loss_overall"].values, np.array(order))
    np.testing.assert_equal(red["saturation_step"].item(), overall)
    # loss-change interference against numpy, pairs (t, 2t) or the next step
    partners = loss_change_pairs(np.array(order))
    assert partners.tolist() == [1, 2, 4, 4, 16, -1]
    for i, (t, t2) in enumerate(zip(order, partners)):
        if t2 < 0:
            assert np.isnan(red["interference_overall"].values[i])
            continue
        delta = values[t2]["loss"].astype(np.float64) - values[t]["loss"]
        D, M = loss_change_interference(delta)
        np.testing.assert_allclose(red["interference_overall"].values[i], D, rtol=1e-5)
        np.testing.assert_allclose(red["change_magnitude_overall"].values[i], M, rtol=1e-5)
        for j, b in enumerate(red["bin"].values):
            Db, Mb = loss_change_interference(delta[bins == b])
            np.testing.assert_allclose(red["interference"].values[i, j], Db, rtol=1e-4)
            np.testing.assert_allclose(red["change_magnitude"].values[i, j], Mb, rtol=1e-5)


def test_summary_stacks_models(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, _, _ = write_steps(tmp_path / "a", [0, 1], 50, 50, seed=1)
    b, _, _ = write_steps(tmp_path / "b", [0, 1, 2], 50, 50, seed=2)
    reduce_model(a, str(tmp_path / "a.zarr"), "a", ReduceConfig())
    reduce_model(b, str(tmp_path / "b.zarr"), "b", ReduceConfig())
    summarize(
        {"a": str(tmp_path / "a.zarr"), "b": str(tmp_path / "b.zarr")}, str(tmp_path / "s.zarr")
    )
    s = open_summary(str(tmp_path / "s.zarr"))
    assert list(s["model"].values) == ["a", "b"]
    assert s["step"].values.tolist() == [0, 1, 2]
    assert np.isnan(s["loss_overall"].sel(model="a", step=2).values)
    assert s["loss_overall"].sel(model="b", step=2).values == pytest.approx(
        xr.open_zarr(tmp_path / "b.zarr")["loss_overall"].sel(step=2).values
    )


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
            "param": np.arange(5),
            "layer": ("param", layer),
            "param_size": ("param", size),
        },
        attrs={
            "labels": {"param": names},
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


def test_reduction_on_a_distributed_cluster_matches_local_threads(tmp_path):
    from dask.distributed import LocalCluster

    paths, _, _ = write_steps(tmp_path, [0, 1, 2], 200, 64)
    local = reduce_model(paths, str(tmp_path / "local.zarr"), "m", ReduceConfig(token_chunk=64))
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        cfg = ReduceConfig(token_chunk=64, scheduler=cluster.scheduler_address)
        remote = reduce_model(paths, str(tmp_path / "remote.zarr"), "m", cfg)
    xr.testing.assert_identical(local, remote)
    xr.testing.assert_identical(
        xr.open_zarr(tmp_path / "local.zarr").load(), xr.open_zarr(tmp_path / "remote.zarr").load()
    )
