"""The per-model reduction against eager numpy, over several chunkings of the step stores."""

import numpy as np
import pytest
import xarray as xr

from pipeline.decomposition import MEASUREMENTS
from pipeline.reduce import ReduceConfig, open_summary, reduce_model, summarize
from pipeline.saturation import improving
from pipeline.store import write_zarr


def write_steps(tmp_path, steps, n_tokens, chunk, seed=0):
    rng = np.random.default_rng(seed)
    bins = rng.integers(-12, -4, size=n_tokens)
    values = {}
    paths = []
    for s in steps:
        v = {m: rng.random(n_tokens).astype(np.float32) + (s == 0) for m in MEASUREMENTS}
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


@pytest.mark.parametrize("chunk", [1000, 37, 5])  # one chunk, odd chunks, many chunks
def test_reduce_matches_numpy(tmp_path, chunk):
    steps = [4, 0, 1, 16, 2]  # given out of order: the reduction sorts by step
    paths, bins, values = write_steps(tmp_path, steps, 300, chunk)
    reduce_model(paths, str(tmp_path / "m.zarr"), "m", ReduceConfig(0.01))
    red = xr.open_zarr(tmp_path / "m.zarr")
    assert red["step"].values.tolist() == sorted(steps)
    assert red["loss"].dims == ("step", "bin")
    for i, s in enumerate(sorted(steps)):
        for m in MEASUREMENTS:
            np.testing.assert_allclose(
                red[f"{m}_overall"].values[i], values[s][m].mean(), rtol=1e-6
            )
            for j, b in enumerate(red["bin"].values):
                ref = values[s][m][bins == b].mean()
                np.testing.assert_allclose(red[m].values[i, j], ref, rtol=1e-6)
    ref_counts = [(bins == b).sum() for b in red["bin"].values]
    assert red["n_tokens"].values.tolist() == ref_counts
    np.testing.assert_array_equal(red["improving"].values, improving(red["loss"].values, axis=0))


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
