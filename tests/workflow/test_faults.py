"""What happens when things go wrong: a job killed halfway, a write that fails halfway, an
invalid config. Each must leave nothing that a later rule would consume, and say what to fix."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from pipeline.store import write_zarr
from tests.snake import REPO, snakemake_cmd

pytestmark = pytest.mark.workflow

CONFIG = yaml.safe_load((REPO / "tests" / "config.yaml").read_text())


def write_config(path: Path, **changes) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(CONFIG))
    for key, value in changes.items():
        cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_extraction_killed_halfway_leaves_no_store_and_resumes(tmp_path):
    cfg = write_config(
        tmp_path / "config.yaml", models={"toy-d8": CONFIG["models"]["toy-d8"]}, steps=[128]
    )
    target = "results/extract/toy-d8/step128.zarr"
    ok = subprocess.run(
        snakemake_cmd(tmp_path, cfg, "results/checkpoints/toy-d8/step128/config.json"),
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    # start the extraction and SIGKILL Snakemake and its job once the job is under way
    proc = subprocess.Popen(
        snakemake_cmd(tmp_path, cfg, target),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = tmp_path / "results/logs/extract/toy-d8/step128.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / target).exists()  # nothing a downstream rule could consume
    # Snakemake itself was killed, so its lock stays: --unlock, then the next run (with
    # rerun-incomplete, on in the profiles; passed here explicitly) finishes the job
    unlock = subprocess.run(snakemake_cmd(tmp_path, cfg, target, "--unlock"), capture_output=True)
    assert unlock.returncode == 0
    again = subprocess.run(
        snakemake_cmd(tmp_path, cfg, target, "--rerun-incomplete"), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    ds = xr.open_zarr(tmp_path / target)
    assert ds.sizes["token"] == CONFIG["eval"]["sequences"] * CONFIG["eval"]["context_length"]
    assert not list((tmp_path / "results/extract/toy-d8").glob(".*tmp*"))


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
        ({"steps": "all"}, "steps"),  # a wrong type
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
