"""What happens when things go wrong: a job killed halfway, a write that fails halfway, an
invalid config. Each must leave nothing that a later rule would consume, and say what to fix."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from pipeline.store import write_zarr
from tests.snake import TINY_CONFIG, snakemake_cmd

pytestmark = pytest.mark.workflow

CONFIG = yaml.safe_load(TINY_CONFIG.read_text())


def write_config(path: Path, **changes) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(CONFIG))
    for key, value in changes.items():
        cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_extraction_killed_halfway_leaves_no_store_and_resumes(run_dir, run_copy):
    """On a copy of the shared run whose last extraction of one model is gone: Snakemake and
    the re-made job are killed once the job is under way, then the next run finishes it."""
    model, step = next(iter(CONFIG["models"])), max(CONFIG["steps"])
    target = f"results/extract/{model}/step{step}.zarr"
    log = run_copy / f"results/logs/extract/{model}/step{step}.log"
    shutil.rmtree(run_copy / target)
    log.unlink()  # the job's log appears again once the job runs
    proc = subprocess.Popen(
        snakemake_cmd(run_copy, TINY_CONFIG, target),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (log.exists() and log.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.exists(), "the extraction never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_copy / target).exists()  # nothing a downstream rule could consume
    # Snakemake itself was killed, so its lock stays: --unlock, then the next run (with
    # rerun-incomplete, on in the profiles; passed here explicitly) finishes the job
    unlock = subprocess.run(
        snakemake_cmd(run_copy, TINY_CONFIG, target, "--unlock"), capture_output=True
    )
    assert unlock.returncode == 0
    again = subprocess.run(
        snakemake_cmd(run_copy, TINY_CONFIG, target, "--rerun-incomplete"),
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    ds = xr.open_zarr(run_copy / target)
    assert ds.sizes["token"] == CONFIG["eval"]["sequences"] * CONFIG["eval"]["context_length"]
    assert not list((run_copy / target).parent.glob(".*tmp*"))
    # and the resumed job wrote what the uninterrupted run wrote
    xr.testing.assert_identical(ds.load(), xr.open_zarr(run_dir / target).load())


def test_write_failing_halfway_leaves_no_half_store(tmp_path, monkeypatch):
    ds = xr.Dataset({"x": ("token", np.arange(1000.0))}).chunk({"token": 100})
    real = xr.Dataset.to_zarr

    def disk_full(self, store, *args, **kwargs):
        real(self.isel(token=slice(0, 300)), store, *args, **kwargs)  # part of it lands
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_zarr", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_zarr(ds, tmp_path / "out.zarr")
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary sibling
    monkeypatch.undo()
    write_zarr(ds, tmp_path / "out.zarr")  # and the next write succeeds
    assert xr.open_zarr(tmp_path / "out.zarr")["x"].sum() == ds["x"].sum()


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"modles": {}}, "modles"),  # an unknown key
        ({"steps": "every"}, "steps"),  # a wrong type ("all" or a list)
        ({"models": {}}, "models"),  # an empty model list
        ({"reduce": {"saturation_tolerance": "1%"}}, "saturation_tolerance"),
        ({"steps": [0, 3]}, "steps: [3] are not saved by the toy training schedule"),
    ],
)
def test_invalid_config_fails_before_any_job_names_the_key(tmp_path, changes, message):
    cfg = write_config(tmp_path / "config.yaml", **changes)
    run = subprocess.run(snakemake_cmd(tmp_path, cfg), capture_output=True, text=True)
    assert run.returncode != 0
    assert message in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()  # no job ran


@pytest.mark.parametrize(
    "damaged, rerun",
    [
        # an extraction store read by the reduction, and the evaluation set read by extraction
        ("results/extract/{model}/step{step}.zarr", "results/reduce/{model}.zarr"),
        ("results/data/toy/eval.zarr", "results/extract/{model}/step{step}.zarr"),
    ],
)
def test_a_deleted_chunk_fails_the_reader_and_names_the_store(run_copy, damaged, rerun):
    """Snakemake cannot see inside a directory output: the reading stage verifies the store."""
    model, step = next(iter(CONFIG["models"])), max(CONFIG["steps"])
    store = run_copy / damaged.format(model=model, step=step)
    array = store / ("loss" if "extract" in damaged else "targets")
    chunk = next(p for p in sorted(array.rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    target = rerun.format(model=model, step=step)
    r = subprocess.run(
        snakemake_cmd(run_copy, TINY_CONFIG, target, "--forcerun", target),
        capture_output=True,
        text=True,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"store {store.relative_to(run_copy)} is damaged" in out, out[-3000:]
    assert "chunk files" in out and "delete it and re-run" in out
