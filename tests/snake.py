"""Running this workflow through real Snakemake from the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
    return subprocess.run(
        snakemake_cmd(workdir, config, *args),
        capture_output=True,
        text=True,
        cwd=workdir,
        env={**os.environ, **(env or {})},
    )


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
