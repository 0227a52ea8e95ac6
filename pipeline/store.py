"""Atomic Zarr writes: a store is written to a temporary sibling and renamed into place.

No reader ever sees half a store: if the writer dies (killed, disk full, an exception), only a
``.{name}.tmp-{pid}`` sibling is left, which the next write of the same store removes.
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
