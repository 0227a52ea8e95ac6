"""Stores are atomic and verifiable: a damaged or incomplete store is an error that names it,
and a writer never removes a live writer's temporary store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.store import (
    MANIFEST,
    StoreError,
    check_complete,
    open_labeled,
    open_store,
    remove_dead_writers,
    verify_store,
    write_zarr,
)


def dataset() -> xr.Dataset:
    x = np.arange(40, dtype=np.float32)
    # "fill" holds only NaN, the fill value: its chunks must be written all the same
    return xr.Dataset({"x": ("token", x), "fill": ("token", np.full(40, np.nan, np.float32))})


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "s.zarr"
    write_zarr(dataset(), path, encoding={v: {"chunks": (10,)} for v in ("x", "fill")})
    return path


def test_a_written_store_verifies_and_opens_without_warnings(store):
    (store / ".snakemake_timestamp").touch()  # what Snakemake adds to a directory output
    manifest = json.loads((store / MANIFEST).read_text())
    assert manifest["arrays"]["x"]["chunks"] == 4 and manifest["arrays"]["fill"]["files"] == 4
    verify_store(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(store).load()
    np.testing.assert_array_equal(ds["x"], dataset()["x"])
    assert not [p for p in store.parent.iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.parametrize("array", ["x", "fill"])
def test_a_deleted_chunk_is_an_error_naming_the_store_and_array(store, array):
    chunk = sorted(p for p in (store / array).rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk[1].unlink()
    with pytest.raises(StoreError, match=rf"{store}.*array '{array}' has 3 of its 4 chunk files"):
        open_store(store)


def test_a_changed_chunk_is_an_error(store):
    chunk = sorted(p for p in (store / "x").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="array 'x' differs from what was written"):
        verify_store(store)


@pytest.mark.filterwarnings("ignore:Object at .manifest.json")
def test_an_edited_attribute_is_an_error(store):
    """A scale_factor added to an array's attributes would rescale it in every reader."""
    meta = store / "x/zarr.json"
    doc = json.loads(meta.read_text())
    doc.setdefault("attributes", {})["scale_factor"] = 2.0
    meta.write_text(json.dumps(doc))
    unchecked = xr.open_zarr(store, consolidated=False)["x"]  # what a reader would see
    np.testing.assert_array_equal(unchecked, 2 * dataset()["x"])
    with pytest.raises(StoreError, match=rf"store {store} is damaged: metadata file x/zarr.json"):
        open_store(store)


def test_an_edited_consolidated_metadata_is_an_error(store):
    meta = store / "zarr.json"
    meta.write_text(meta.read_text().replace('"token"', '"tokens"', 1))
    with pytest.raises(StoreError, match="metadata file zarr.json differs"):
        verify_store(store)


def test_a_truncated_metadata_file_is_named(store):
    meta = store / "fill/zarr.json"
    meta.write_bytes(meta.read_bytes()[:20])
    with pytest.raises(StoreError, match="fill/zarr.json differs.*delete it and re-run"):
        verify_store(store)
    # and without the manifest's checksums (an older manifest), the parse error names the file
    manifest = json.loads((store / MANIFEST).read_text())
    del manifest["metadata"]
    (store / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="fill/zarr.json is not valid JSON"):
        verify_store(store)


def test_a_store_without_manifest_is_an_error(store):
    (store / MANIFEST).unlink()
    with pytest.raises(StoreError, match="no readable manifest.*delete it and re-run"):
        verify_store(store)
    with pytest.raises(StoreError, match="does not exist"):
        verify_store(store.parent / "missing.zarr")


def test_an_incomplete_store_is_never_renamed_into_place(tmp_path):
    manifest = {"arrays": {"x": {"chunks": 4, "files": 3}}}
    with pytest.raises(StoreError, match=r"incomplete: x \(3 of 4 chunks\)"):
        check_complete(tmp_path, manifest)


LIVE_WRITER = """
import fcntl, sys, time, pathlib
tmp = pathlib.Path(sys.argv[1])
lock = open(f"{tmp}.lock", "w")
fcntl.flock(lock, fcntl.LOCK_EX)
tmp.mkdir()
print("ready", flush=True)
time.sleep(60)
"""


def test_a_live_writers_temporary_store_is_left_alone(tmp_path):
    path = tmp_path / "s.zarr"
    live = tmp_path / ".s.zarr.tmp-otherhost-1-abcd"
    writer = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(live)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        write_zarr(dataset(), path)  # a second writer of the same store
        assert live.is_dir(), "a live writer's temporary store was removed"
        verify_store(path)
    finally:
        writer.kill()
        writer.wait()
    assert remove_dead_writers(path) == [live]  # now its writer is dead
    assert not live.exists() and not Path(f"{live}.lock").exists()


def test_dead_writers_leftovers_are_removed(tmp_path):
    path = tmp_path / "s.zarr"
    dead = tmp_path / ".s.zarr.tmp-host-2-beef"  # no lock: its writer died (or is from long ago)
    dead.mkdir()
    (dead / "junk").write_text("x")
    old_lock = tmp_path / ".s.zarr.tmp-host-3-cafe.lock"  # a writer that died before its store
    old_lock.touch()
    fresh_lock = tmp_path / ".s.zarr.tmp-host-4-f00d.lock"  # may be a writer about to start
    fresh_lock.touch()
    past = time.time() - 7200
    os.utime(old_lock, (past, past))
    write_zarr(dataset(), path)
    assert not dead.exists() and not old_lock.exists()
    assert fresh_lock.exists()


def test_leftovers_of_stores_no_longer_written_are_removed(tmp_path):
    """A step taken out of the config leaves no temporary store behind once its model's other
    stores are read (the reduction cleans its input folder)."""
    from pipeline.store import remove_dead_writers_in

    gone = tmp_path / ".step64.zarr.tmp-host-5-aaaa"
    gone.mkdir()
    write_zarr(dataset(), tmp_path / "step0.zarr")
    assert remove_dead_writers_in(tmp_path) == [gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step0.zarr"]


def test_verify_names_every_damaged_store_in_a_tree(tmp_path, capsys):
    from pipeline.verify import main

    for name in ("a/one.zarr", "a/two.zarr", "b/three.zarr"):
        write_zarr(dataset(), tmp_path / name)
    (tmp_path / "a/.two.zarr.tmp-host-1-abcd").mkdir()  # a writer's temporary: not a store
    assert main([str(tmp_path)]) == 0
    assert "3 stores checked" in capsys.readouterr().out
    meta = tmp_path / "b/three.zarr/x/zarr.json"
    meta.write_text(meta.read_text().replace("}", ', "x": 1}', 1))
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED  {tmp_path / 'b/three.zarr'}" in out and "x/zarr.json differs" in out
    assert "3 stores checked" in out and ": 1 damaged" in out
    assert main([str(tmp_path / "nowhere")]) == 2


def test_names_are_string_coordinates_plain_xarray_reads(tmp_path):
    from pipeline.store import with_labels

    ds = xr.Dataset({"loss": (("model", "step"), np.arange(6.0).reshape(2, 3))})
    write_zarr(with_labels(ds, {"model": ["toy-d16", "toy-d8"]}), tmp_path / "s.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = xr.open_zarr(tmp_path / "s.zarr")
        np.testing.assert_array_equal(read.loss.sel(model="toy-d8"), [3.0, 4.0, 5.0])
    assert [str(m) for m in read.model.values] == ["toy-d16", "toy-d8"]


def test_an_older_store_with_names_in_its_attrs_still_reads_labeled(tmp_path):
    """Stores written before names were coordinates: integer coordinates, attrs["labels"]."""
    ds = xr.Dataset(
        {"loss": (("model",), [1.0, 2.0])},
        coords={"model": [0, 1]},
        attrs={"labels": {"model": ["a", "b"]}},
    )
    write_zarr(ds, tmp_path / "old.zarr")
    read = open_labeled(tmp_path / "old.zarr")
    assert float(read.loss.sel(model="b")) == 2.0 and "labels" not in read.attrs
