"""The workflow through profiles/slurm on a real one-node SLURM cluster.

A module fixture installs Debian's slurm-wlm and munge where missing (root only), starts munged,
slurmctld and slurmd on this machine (tests/cluster/slurm_cluster.py) and stops them afterwards,
also when a test fails. The tiny test config then runs through the executor plugin, with a copy
of the real profile that differs only where this cluster does (no account, its own partition,
no GPU, squeue for status), and every Zarr store must be identical to a local run's: the
session's shared run of the tiny config (``tests.snake.tiny_run``), made here if no other tier
has made it yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
import yaml

from tests.snake import REPO, TINY_CONFIG, tiny_run

from .slurm_cluster import MIN_JOB_AGE, PARTITION, LocalSlurm, install_reason

pytestmark = pytest.mark.cluster

CONFIG = TINY_CONFIG
PROFILE = REPO / "profiles" / "slurm" / "config.v8+.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
RUN_TIMEOUT = 600  # s for the whole SLURM run of the tiny config (about 5 minutes on 2 cores)
# resources this node cannot grant: a GPU, GPU types, node features, GPU partitions
FIRST_POLL = 3  # s before the plugin's first status check, and again after each finished job
NOT_HERE = ("gpu", "gpus", "gres", "gpu_model", "constraint", "slurm_partition", "slurm_account")


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: float = RUN_TIMEOUT):
    cmd = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(CONFIG),
        *args,
    ]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env or os.environ.copy(),
        timeout=timeout,
    )


def cluster_profile(profile_dir: Path, cluster: LocalSlurm) -> Path:
    """profiles/slurm as this cluster needs it: a copy, in profile_dir."""
    profile = yaml.safe_load(PROFILE.read_text())
    defaults = profile["default-resources"]
    defaults.pop("slurm_account")  # no accounts without slurmdbd: the plugin submits without -A
    defaults["slurm_partition"] = PARTITION
    cap = cluster.memory_mb // cluster.cpus  # two jobs at once fit this node
    for res in profile.get("set-resources", {}).values():
        for key in NOT_HERE:
            res.pop(key, None)
        if "mem_mb" in res:
            res["mem_mb"] = f"min({res['mem_mb']}, {cap})"
    defaults["mem_mb"] = f"min({defaults['mem_mb']}, {cap})"
    profile.setdefault("set-resources", {}).setdefault("extract", {})["gpu"] = 0  # CPU-only
    profile.update(
        {
            # no slurmdbd, so no sacct: squeue, which sees finished jobs for MinJobAge seconds
            "slurm-status-command": "squeue",
            # poll soon after submitting and after each finished job (the default is 40 s)
            "slurm-init-seconds-before-status-checks": FIRST_POLL,
            "retries": 0,  # a failure here is a bug to see, not a flake to retry
            "keep-going": False,
        }
    )
    assert 3 * FIRST_POLL <= MIN_JOB_AGE  # below, the plugin would fall back to sacct
    profile_dir.mkdir(parents=True, exist_ok=True)
    (profile_dir / "config.v8+.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile_dir


def failure_report(r: subprocess.CompletedProcess, workdir: Path, cluster: LocalSlurm) -> str:
    parts = [r.stdout[-3000:], r.stderr[-6000:]]
    for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))[-6:]:
        parts.append(f"--- {log.relative_to(workdir)}\n{log.read_text(errors='replace')[-2000:]}")
    parts.append(cluster.logs_tail(1500))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = install_reason()
    if reason:
        pytest.skip(reason)
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()


def test_real_profile_is_valid(tmp_path):
    """profiles/slurm as shipped parses and resolves every job's resources (a dry run)."""
    r = snakemake(tmp_path, "--profile", str(PROFILE.parent), "--workflow-profile", "none", "-n")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "slurm_account=CHANGE_ME" in out and "slurm_partition=CHANGE_ME" in out
    assert "rule extract:" in out


def test_workflow_on_slurm_equals_local_run(cluster, tmp_path, tmp_path_factory, capsys):
    slurm_dir = tmp_path / "slurm"
    slurm_dir.mkdir()
    profile = cluster_profile(tmp_path / "profile", cluster)

    t0 = time.monotonic()
    try:
        r = snakemake(
            slurm_dir, "--profile", str(profile), "--workflow-profile", "none", env=cluster.env
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        pytest.fail(
            f"SLURM run over {RUN_TIMEOUT} s:\n{(err or '')[-6000:]}\n{cluster.logs_tail()}"
        )
    wall = time.monotonic() - t0
    assert r.returncode == 0, failure_report(r, slurm_dir, cluster)
    with capsys.disabled():
        print(f"\nSLURM run of tests/config.yaml: {wall:.1f} s wall time")

    # every job but the targetless `all` went through sbatch, and SLURM saw them all complete
    submitted = (r.stdout + r.stderr).count("has been submitted with SLURM jobid")
    jobs = cluster.run("squeue", "-h", "--states=all", "-o", "%i|%T|%k").split()
    states = {line.split("|")[1] for line in jobs}
    assert submitted > 0 and len(jobs) == submitted, (submitted, jobs)
    assert states == {"COMPLETED"}, jobs
    config = yaml.safe_load(CONFIG.read_text())
    n_extract = len(config["models"]) * len(config["steps"])
    assert sum("|rule_extract_" in line for line in jobs) == n_extract, jobs

    local_dir = tiny_run(tmp_path_factory)  # the session's local run of the same config
    stores = sorted(p.relative_to(local_dir) for p in (local_dir / "results").rglob("*.zarr"))
    assert sum(p.parts[1] == "extract" for p in stores) == n_extract
    assert stores == sorted(
        p.relative_to(slurm_dir) for p in (slurm_dir / "results").rglob("*.zarr")
    )
    for rel in stores:
        a, b = xr.open_zarr(slurm_dir / rel), xr.open_zarr(local_dir / rel)
        xr.testing.assert_identical(a.load(), b.load())
