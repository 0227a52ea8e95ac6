"""The summary stage: every model's reduction and BNSL fit in one dataset,
``results/summary.zarr``, the one input of every figure.

The per-model stores are stacked along ``model`` (outer join on steps and bins); each model's
fit becomes the per-model variables ``bnsl_*`` (``pipeline.schema.FITS``) with its flag in
``attrs["bnsl_flag"]``; the attrs carry the run's provenance: the saturation tolerance and
dissent threshold the flags used, the fit settings, each model's weights hashes and the config
digest (``pipeline.config.digest``). Model names are labels of the integer ``model`` coordinate
(``pipeline.store``); ``open_summary`` restores them as the coordinate.
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

import pipeline
from pipeline.fit import read_fit
from pipeline.schema import FIT_FIELDS, bnsl, conform
from pipeline.store import open_labeled, open_store, with_labels, write_zarr

log = logging.getLogger(__name__)

#: Attrs of the per-model reductions that must agree across models (the run's settings).
SHARED_ATTRS = ("saturation_tolerance", "dissent_threshold", "unseen_bin")


def summarize(
    models: list[str],
    reduce_paths: list[str],
    fit_paths: list[str],
    out_path: str,
    provenance: dict | None = None,
) -> xr.Dataset:
    """Stack the models' reductions and fits (both in ``models`` order) and write the summary.

    ``provenance`` (e.g. the config digest and the fit settings) is added to the attrs.
    """
    parts = [open_store(p) for p in reduce_paths]
    attrs = _shared_attrs(models, [p.attrs for p in parts])
    attrs["weights_sha256"] = {m: list(p.attrs["weights_sha256"]) for m, p in zip(models, parts)}
    for p in parts:
        p.attrs = {}
    ds = xr.concat(parts, dim="model", join="outer", coords="minimal", compat="override")
    ds = ds.assign_coords(model=np.arange(len(models), dtype=np.int64))
    fits = [read_fit(p) for p in fit_paths]
    for field in FIT_FIELDS:
        ds[bnsl(field)] = ("model", np.array([float(f[field]) for f in fits]))
    attrs["bnsl_flag"] = {m: f["flag"] for m, f in zip(models, fits)}
    ds.attrs = {**attrs, **(provenance or {}), "pipeline_version": pipeline.__version__}
    ds = with_labels(conform(ds.compute(), "summary"), {"model": models})
    write_zarr(ds, out_path)
    log.info("%d models, %d steps, %d bins", len(models), ds.sizes["step"], ds.sizes["bin"])
    return ds


def _shared_attrs(models: list[str], attrs: list[dict]) -> dict:
    out = {}
    for key in SHARED_ATTRS:
        values = {m: a.get(key) for m, a in zip(models, attrs)}
        if len({repr(v) for v in values.values()}) > 1:
            raise ValueError(f"the models' reductions disagree on {key}: {values}; re-run reduce")
        out[key] = next(iter(values.values()), None)
    return out


def open_summary(path: str) -> xr.Dataset:
    """Open ``results/summary.zarr`` with the model names as the ``model`` coordinate."""
    return open_labeled(path)
