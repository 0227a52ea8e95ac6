"""Zarr stores: atomic, verifiable writes, and string labels kept beside integer coordinates.

**Atomic.** A store is written to a temporary sibling ``.{name}.tmp-{host}-{pid}-{random}`` whose
name no other writer can share, while its writer holds a lock on ``{tmp}.lock`` (``flock``,
which Linux maps onto NFS's locks as well); it is checked complete, then renamed into place. A
writer removes only the leftovers of dead writers (a lock it can take), never a live writer's
temporary store, so a job orphaned by a killed Snakemake cannot lose its store to the resumed
one (stop orphaned jobs, or ``scancel`` them, before ``snakemake --unlock`` all the same: two
live writers of one store waste the work of one).

**Verifiable.** Every chunk is written, even one that holds only the fill value, and a
manifest, ``.manifest.json`` inside the store, is written last: per array its shape, its chunk
count and a sha256 over its chunk files, and the sha256 of every metadata file (each
``zarr.json``, the root's with the consolidated metadata). ``open_store`` checks a store
against its manifest before a stage reads it, so a deleted, truncated or altered chunk, an
edited or unparsable metadata file (a ``scale_factor`` added to an array's attributes would
rescale it silently), or a store that was never completed, is an error that names the store and
what is wrong, never a silent fill value. The manifest is hidden from Zarr: plain
``xarray.open_zarr`` reads every store as usual. ``python -m pipeline.verify results/`` checks a
whole results tree.

**Labels.** Dimensions labelled by names (``model``, ``param``) have string coordinates, of
numpy's variable-length ``StringDType`` (zarr 3's string data type: plain ``xarray.open_zarr``
reads them as strings, without warnings), so ``summary.sel(model="toy-d16")`` works.
``open_labeled`` remains only as the reader of stores written before: they kept integer
coordinates and the names in ``attrs["labels"]``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import time
import warnings
from pathlib import Path

import xarray as xr

MANIFEST = ".manifest.json"
#: A lock file without its temporary store is removed only when older than this: a writer
#: creates its lock just before its store.
STALE_LOCK_SECONDS = 3600


class StoreError(ValueError):
    """A store that is missing, incomplete or damaged; the message names it and the fix."""


def write_zarr(ds: xr.Dataset, path: str | os.PathLike, **to_zarr_kwargs) -> None:
    """Write ``ds`` to ``path`` (Zarr v3, consolidated metadata) atomically, with a manifest and
    ``attrs["provenance"]`` (``pipeline.provenance.record``: the job's inputs, the software)."""
    from pipeline.provenance import record

    ds = ds.assign_attrs(provenance=record())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers(path)
    tmp = (
        path.parent
        / f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    )
    lock = Path(f"{tmp}.lock")
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the writer exits, however it exits
        try:
            with warnings.catch_warnings():
                # consolidated metadata is not (yet) part of the v3 spec; xarray reads it all the same
                warnings.filterwarnings(
                    "ignore", message="Consolidated metadata", category=UserWarning
                )
                ds.to_zarr(
                    tmp,
                    mode="w",
                    zarr_format=3,
                    consolidated=True,
                    write_empty_chunks=True,
                    **to_zarr_kwargs,
                )
            manifest = build_manifest(tmp)
            check_complete(tmp, manifest)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            _replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            lock.unlink(missing_ok=True)


def _replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path``; an old store at ``path`` is moved aside first and removed after,
    so that ``path`` is never a half-deleted store."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_dead_writers(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` whose writers are dead (their lock can be
    taken, or they have none) and the old copies a replaced store left; return what was removed.
    A live writer's temporary store is left alone."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        if tmp.name.endswith(".lock") or not _writer_is_dead(Path(f"{tmp}.lock")):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        Path(f"{tmp}.lock").unlink(missing_ok=True)
        removed.append(tmp)
    for lock in path.parent.glob(f".{path.name}.tmp-*.lock"):  # a writer that died before mkdir
        stale = time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS
        if stale and not Path(str(lock)[: -len(".lock")]).exists() and _writer_is_dead(lock):
            lock.unlink(missing_ok=True)
    for old in path.parent.glob(f".{path.name}.old-*"):
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


def remove_dead_writers_in(directory: str | os.PathLike) -> list[Path]:
    """``remove_dead_writers`` for every store with leftovers in ``directory``, also stores no
    longer written (a step taken out of the config)."""
    names = set()
    for entry in Path(directory).glob(".*"):
        match = re.match(r"^\.(.+)\.(?:tmp|old)-", entry.name)
        if match:
            names.add(match.group(1))
    return [p for name in sorted(names) for p in remove_dead_writers(Path(directory) / name)]


def _writer_is_dead(lock: Path) -> bool:
    try:
        fh = open(lock)
    except FileNotFoundError:
        return True
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False  # its writer holds it
        return True


# --- the manifest ---------------------------------------------------------------------------


#: The manifest's format: 2 covers the metadata files too (format 1, chunks only, is still read).
MANIFEST_FORMAT = 2


def _metadata_files(root: Path) -> list[Path]:
    return sorted(root.rglob("zarr.json"))


def _metadata_digest(path: Path) -> str:
    """sha256 of a metadata file's JSON with its keys sorted (zarr lists arrays in directory
    order, so the consolidated metadata's key order differs between equal stores); of its bytes
    if it is not JSON, which then never matches."""
    data = path.read_bytes()
    try:
        data = json.dumps(json.loads(data), sort_keys=True).encode()
    except (ValueError, UnicodeDecodeError):
        pass
    return hashlib.sha256(data).hexdigest()


def _arrays(root: Path) -> dict[str, dict]:
    """Each array of the Zarr v3 store at ``root``: its metadata (``zarr.json``), by path; a
    metadata file that is not JSON is a ``StoreError`` naming it."""
    out = {}
    for meta in _metadata_files(root):
        try:
            doc = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise StoreError(
                f"store {root} is damaged: {meta.relative_to(root)} is not valid JSON ({err}); "
                "delete it and re-run the workflow to write it again"
            ) from None
        if doc.get("node_type") == "array":
            out[meta.parent.relative_to(root).as_posix()] = doc
    return out


def _expected_chunks(doc: dict) -> int:
    shape = doc["shape"]
    chunk = doc["chunk_grid"]["configuration"]["chunk_shape"]
    return math.prod(math.ceil(s / c) for s, c in zip(shape, chunk)) if shape else 1


def _chunk_files(root: Path, array: str) -> list[Path]:
    return sorted(p for p in (root / array).rglob("*") if p.is_file() and p.name != "zarr.json")


def _digest(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def build_manifest(root: str | os.PathLike) -> dict:
    """Per array of the store: shape, expected chunk count, chunk files found, their sha256."""
    root = Path(root)
    arrays = {}
    for name, doc in _arrays(root).items():
        files = _chunk_files(root, name)
        arrays[name] = {
            "shape": doc["shape"],
            "chunks": _expected_chunks(doc),
            "files": len(files),
            "sha256": _digest(root, files),
        }
    metadata = {f.relative_to(root).as_posix(): _metadata_digest(f) for f in _metadata_files(root)}
    return {"format": MANIFEST_FORMAT, "arrays": arrays, "metadata": metadata}


def check_complete(root: Path, manifest: dict) -> None:
    """Raise ``StoreError`` unless every array has all its chunks (every chunk is written)."""
    short = {n: a for n, a in manifest["arrays"].items() if a["files"] != a["chunks"]}
    if short:
        detail = ", ".join(f"{n} ({a['files']} of {a['chunks']} chunks)" for n, a in short.items())
        raise StoreError(f"{root} is incomplete: {detail}")


def verify_store(path: str | os.PathLike) -> None:
    """Check the store at ``path`` against its manifest; raise ``StoreError`` naming the store
    and what is wrong (missing, no manifest, an array missing or added, chunks missing or
    changed), with the fix."""
    path = Path(path)
    fix = "delete it and re-run the workflow to write it again"
    if not path.is_dir():
        raise StoreError(f"store {path} does not exist; re-run the workflow to write it")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as err:
        raise StoreError(
            f"store {path} has no readable manifest ({MANIFEST}): it was not completely written, "
            f"or by an older version of this workflow; {fix}"
        ) from err
    problems = []
    if "metadata" in manifest:  # (format 1 manifests cover the chunks only)
        now = {f.relative_to(path).as_posix(): _metadata_digest(f) for f in _metadata_files(path)}
        was = manifest["metadata"]
        problems += [f"metadata file {n} is missing" for n in sorted(set(was) - set(now))]
        problems += [f"metadata file {n} was added" for n in sorted(set(now) - set(was))]
        problems += [
            f"metadata file {n} differs from what was written (checksum)"
            for n in sorted(set(was) & set(now))
            if was[n] != now[n]
        ]
        if problems:
            raise StoreError(f"store {path} is damaged: {'; '.join(problems)}; {fix}")
    found = build_manifest(path)["arrays"]
    expected = manifest["arrays"]
    problems = [f"array {n!r} is missing" for n in sorted(set(expected) - set(found))]
    problems += [f"array {n!r} is not in the manifest" for n in sorted(set(found) - set(expected))]
    for name in sorted(set(expected) & set(found)):
        e, f = expected[name], found[name]
        if f["files"] != e["files"]:
            problems.append(f"array {name!r} has {f['files']} of its {e['files']} chunk files")
        elif f["sha256"] != e["sha256"] or f["shape"] != e["shape"]:
            problems.append(f"array {name!r} differs from what was written (checksum)")
    if problems:
        raise StoreError(f"store {path} is damaged: {'; '.join(problems)}; {fix}")


def open_store(path: str | os.PathLike, **open_zarr_kwargs) -> xr.Dataset:
    """``xarray.open_zarr`` after ``verify_store``: what every stage reads its inputs with."""
    verify_store(path)
    return xr.open_zarr(path, **open_zarr_kwargs)


# --- labels ---------------------------------------------------------------------------------


def with_labels(ds: xr.Dataset, labels: dict[str, list[str]]) -> xr.Dataset:
    """Label ``dim`` with the names ``labels[dim]`` (one per position) as a string coordinate."""
    import numpy as np

    for dim, names in labels.items():
        if len(names) != ds.sizes[dim]:
            raise ValueError(f"{len(names)} labels for dimension {dim!r} of size {ds.sizes[dim]}")
    return ds.assign_coords(
        {
            dim: np.array([str(n) for n in names], dtype=np.dtypes.StringDType())
            for dim, names in labels.items()
        }
    )


def open_labeled(path: str | os.PathLike) -> xr.Dataset:
    """``open_store``, with ``labeled``: the reader of stores old and new."""
    return labeled(open_store(path))


def labeled(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` itself; or, for a store written before names were coordinates (integer
    coordinates, the names in ``attrs["labels"]``), with its names as coordinates."""
    labels = ds.attrs.get("labels", {})
    old = {dim: names for dim, names in labels.items() if dim in ds.dims}
    if not old:
        return ds
    ds = with_labels(ds, old)
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "labels"}
    return ds
