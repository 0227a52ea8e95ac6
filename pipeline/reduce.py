"""The reduce stage: one model's step stores → means per (step, bin), saturation flags.

The per-step stores are opened lazily with dask and concatenated along ``step``; nothing is
loaded whole. For every per-token measurement m the reduction writes ``m (step, bin)``, the mean
over the evaluation tokens of each log2 frequency bin, and ``m_overall (step)``, the mean over all
tokens (token-weighted). The saturation rule (``pipeline.saturation``, Gradient Dissent §2) flags
each (step, bin) and the overall curve, and gives the model's ``saturation_step``.

``summarize`` stacks the per-model stores along ``model`` into ``results/summary.zarr``. Model
names are labels of the integer ``model`` coordinate (``pipeline.store``); ``open_summary``
restores them as the coordinate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import xarray as xr

from pipeline.decomposition import MEASUREMENTS
from pipeline.saturation import improving, saturation_step
from pipeline.store import open_labeled, with_labels, write_zarr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReduceConfig:
    """The ``reduce`` section of the config."""

    saturation_tolerance: float = 0.01


def open_steps(paths: list[str]) -> xr.Dataset:
    """Open per-step extraction stores lazily as one dataset over (step, token), sorted by step."""
    if not paths:
        raise ValueError("no extraction stores to reduce: the model has no steps in the config")
    parts = [xr.open_zarr(p) for p in paths]
    ds = xr.concat(parts, dim="step", coords="minimal", compat="override", join="exact")
    return ds.sortby("step")


def binned_means(ds: xr.Dataset) -> xr.Dataset:
    """Means of every measurement per (step, bin) and overall per step, and tokens per bin."""
    bins = ds["bin"].values  # (token,) small: one int per evaluation token
    present = np.unique(bins)
    data = ds[list(MEASUREMENTS)].drop_vars(["target", "bin"], errors="ignore")
    binned = data.groupby(xr.DataArray(bins, dims="token", name="bin")).mean("token")
    overall = data.mean("token").rename({m: f"{m}_overall" for m in MEASUREMENTS})
    counts = xr.DataArray(
        np.array([(bins == b).sum() for b in present], dtype=np.int64),
        dims="bin",
        coords={"bin": present},
        name="n_tokens",
    )
    return xr.merge([binned, overall, counts.to_dataset()]).transpose("step", "bin").compute()


def reduce_model(paths: list[str], out_path: str, model_name: str, cfg: ReduceConfig) -> xr.Dataset:
    """Reduce one model's step stores and write ``results/reduce/{model}.zarr``."""
    ds = open_steps(paths)
    steps = ds["step"].values
    log.info("%s: %d steps x %d tokens", model_name, steps.size, ds.sizes["token"])
    red = binned_means(ds)
    tol = cfg.saturation_tolerance
    red["improving"] = (("step", "bin"), improving(red["loss"].values, axis=0, tolerance=tol))
    red["improving_overall"] = (
        "step",
        improving(red["loss_overall"].values, axis=0, tolerance=tol),
    )
    red["saturation_step"] = saturation_step(red["loss_overall"].values, steps, tol)
    red.attrs = {
        "model": model_name,
        "saturation_tolerance": tol,
        "unseen_bin": ds.attrs.get("unseen_bin", -64),
        "weights_sha256": [xr.open_zarr(p).attrs["weights_sha256"] for p in paths],
    }
    red["step"] = red["step"].astype(np.int64)
    write_zarr(red, out_path)
    sat = red["saturation_step"].item()
    log.info(
        "%s: final loss %.4f, saturation step %s",
        model_name,
        red["loss_overall"].values[-1],
        "none" if np.isnan(sat) else int(sat),
    )
    return red


def summarize(paths: dict[str, str], out_path: str) -> xr.Dataset:
    """Stack the per-model reductions along ``model`` (outer join on steps and bins)."""
    names = list(paths)
    parts = [xr.open_zarr(paths[n]).drop_attrs() for n in names]
    ds = xr.concat(parts, dim="model", join="outer", coords="minimal", compat="override")
    ds = ds.assign_coords(model=np.arange(len(names), dtype=np.int64))
    ds = with_labels(ds.compute(), {"model": names})
    write_zarr(ds, out_path)
    return ds


def open_summary(path: str) -> xr.Dataset:
    """Open ``results/summary.zarr`` with the model names as the ``model`` coordinate."""
    return open_labeled(path)
