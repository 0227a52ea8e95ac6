"""Running this workflow through real Snakemake from the tests.

``tiny_run`` is the one full run of the tiny test suite (tests/config.yaml) that a test session
makes and every test reading a finished run shares (``run_dir`` in tests/workflow/conftest.py;
the SLURM test compares against it); ``copy_run`` gives a test that changes a run its own copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The tiny suite of the workflow tests: two toy models, a few steps, about a minute on 2 cores.
TINY_CONFIG = REPO / "tests" / "config.yaml"


def snakemake_cmd(workdir: Path, config: Path, *args: str) -> list[str]:
    """``snakemake`` on this repository's Snakefile, in ``workdir``, with ``config``, 2 cores."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--cores",
        "2",
        *args,
    ]


def run_snakemake(
    workdir: Path, config: Path, *args: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``snakemake_cmd`` and capture its output (``env`` is added to this environment)."""
    return subprocess.run(
        snakemake_cmd(workdir, config, *args),
        capture_output=True,
        text=True,
        cwd=workdir,
        env={**os.environ, **(env or {})},
    )


def run_ok(workdir: Path, config: Path = TINY_CONFIG, *args: str) -> subprocess.CompletedProcess:
    """``run_snakemake``, failing the test (with the output's tail) unless it succeeds."""
    r = run_snakemake(workdir, config, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def job_stats(output: str) -> dict[str, int]:
    """The ``job  count`` rows of the (first) "Job stats" table of Snakemake's output."""
    jobs: dict[str, int] = {}
    lines = iter(output.splitlines())
    for line in lines:
        if line.startswith("Job stats"):
            break
    for line in lines:
        parts = line.split()
        if parts and parts[0] == "total":
            break
        if len(parts) == 2 and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    return jobs


def planned_jobs(workdir: Path, config: Path, env: dict | None = None) -> dict[str, int]:
    """The job counts of a dry run in ``workdir`` with ``config`` (empty: nothing to do)."""
    r = run_snakemake(workdir, config, "-n", env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return job_stats(r.stdout)


_RUNS: dict[Path, Path] = {}


def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of a finished run of tests/config.yaml, made once per test session.

    Every caller in the session gets the same directory: read it, never change it (a test that
    re-runs or edits results works on ``copy_run``).
    """
    base = tmp_path_factory.getbasetemp()
    if base not in _RUNS:
        run_dir = tmp_path_factory.mktemp("tiny_run")
        run_ok(run_dir)
        _RUNS[base] = run_dir
    return _RUNS[base]


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a run directory, links kept as links and modification times kept, so that
    Snakemake finds the copy exactly as up to date as the original."""
    shutil.copytree(run_dir, dest, symlinks=True)
    return dest


def fingerprint(run_dir: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file and link of a run's results and Snakemake metadata."""
    out = {}
    for top in ("results", ".snakemake/metadata", ".snakemake/incomplete"):
        for p in sorted((run_dir / top).rglob("*")):
            if p.is_file() or p.is_symlink():
                st = p.lstat()
                out[str(p.relative_to(run_dir))] = (st.st_size, st.st_mtime_ns)
    return out
