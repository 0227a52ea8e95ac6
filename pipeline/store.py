"""Zarr stores: atomic writes, and string labels kept beside integer coordinates.

No reader ever sees half a store: a store is written to a temporary sibling and renamed into
place; if the writer dies (killed, disk full, an exception), only a ``.{name}.tmp-{pid}`` sibling
is left, which the next write of the same store removes.

Zarr v3 does not yet specify a string data type, so dimensions labelled by names (``model``,
``param``) get integer coordinates and the names go into ``attrs["labels"][dim]``;
``open_labeled`` puts them back as coordinates. Plain ``xarray.open_zarr`` still reads every store.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import xarray as xr


def write_zarr(ds: xr.Dataset, path: str | os.PathLike, **to_zarr_kwargs) -> None:
    """Write ``ds`` to ``path`` (Zarr v3, consolidated metadata) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with warnings.catch_warnings():
            # consolidated metadata is not (yet) part of the v3 spec; xarray reads it all the same
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True, **to_zarr_kwargs)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def with_labels(ds: xr.Dataset, labels: dict[str, list[str]]) -> xr.Dataset:
    """Record ``labels[dim]`` (one name per position along ``dim``) in the attrs."""
    for dim, names in labels.items():
        if len(names) != ds.sizes[dim]:
            raise ValueError(f"{len(names)} labels for dimension {dim!r} of size {ds.sizes[dim]}")
    return ds.assign_attrs(labels={**ds.attrs.get("labels", {}), **labels})


def open_labeled(path: str | os.PathLike) -> xr.Dataset:
    """``xarray.open_zarr`` with the string labels of ``attrs["labels"]`` as coordinates."""
    ds = xr.open_zarr(path)
    labels = ds.attrs.get("labels", {})
    return ds.assign_coords({dim: list(names) for dim, names in labels.items() if dim in ds.dims})
