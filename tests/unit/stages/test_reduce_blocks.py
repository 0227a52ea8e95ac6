"""What bounds the reductions' memory: each numpy kernel sees one step's tokens, however the
stores are chunked on disk and however many steps there are."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pipeline import reduce
from pipeline.config import ReduceConfig
from pipeline.schema import MEASUREMENTS, conform
from pipeline.store import write_zarr

N_TOKENS, STEPS = 300, [0, 1, 2, 4]


def write_steps(tmp_path, disk_chunk: int) -> list[str]:
    rng = np.random.default_rng(0)
    bins = rng.integers(-9, -3, N_TOKENS)
    paths = []
    for step in STEPS:
        data = {m: ("token", rng.random(N_TOKENS).astype(np.float32) + 0.1) for m in MEASUREMENTS}
        ds = xr.Dataset(data, coords={"token": np.arange(N_TOKENS), "bin": ("token", bins)})
        ds = ds.assign_attrs(model="m", step=step, weights_sha256=f"{step:064x}", hidden_size=8)
        ds = conform(ds.expand_dims(step=[step]), "extract")
        path = str(tmp_path / f"step{step}.zarr")
        write_zarr(ds, path, encoding={m: {"chunks": (1, disk_chunk)} for m in MEASUREMENTS})
        paths.append(path)
    return paths


@pytest.mark.parametrize("disk_chunk", [pytest.param(7, marks=pytest.mark.slow), 64, N_TOKENS])
def test_kernels_see_one_step_of_tokens(tmp_path, monkeypatch, disk_chunk):
    seen = {"statistics": [], "change": []}

    def spy(name, kernel):
        def wrapped(*arrays, **kwargs):
            seen[name].append([a.shape for a in arrays])
            return kernel(*arrays, **kwargs)

        return wrapped

    monkeypatch.setattr(reduce, "bin_statistics", spy("statistics", reduce.bin_statistics))
    monkeypatch.setattr(reduce, "bin_change", spy("change", reduce.bin_change))
    paths = write_steps(tmp_path, disk_chunk)
    assert xr.open_zarr(paths[0])["loss"].encoding["chunks"] == (1, disk_chunk)
    reduce.reduce_model(paths, str(tmp_path / "m.zarr"), "m", ReduceConfig(quantiles=[0.5]))
    # one call per measurement and step, each with all of one step's tokens
    calls = [s for s in seen["statistics"] if s != [(0,)] and s != [(1, 1)]]
    assert len(calls) == len(STEPS) * len(MEASUREMENTS)
    assert all(shapes == [(1, N_TOKENS)] for shapes in calls), calls[:3]
    changes = [s for s in seen["change"] if s != [(0,), (0,)] and s != [(1,), (1,)]]
    assert len(changes) == len(STEPS) - 1
    assert all(shapes == [(N_TOKENS,), (N_TOKENS,)] for shapes in changes), changes


def test_a_measurement_that_is_nan_everywhere_is_an_error(tmp_path):
    paths = write_steps(tmp_path, N_TOKENS)
    for p in paths:  # rewrite each store with a loss that is NaN for every token
        ds = xr.open_zarr(p).load()
        ds["loss"] = ds["loss"] * np.nan
        write_zarr(conform(ds, "extract"), p)
    with pytest.raises(ValueError, match="the mean of loss is NaN at every step"):
        reduce.reduce_model(paths, str(tmp_path / "m.zarr"), "m", ReduceConfig())
    assert not (tmp_path / "m.zarr").exists()
