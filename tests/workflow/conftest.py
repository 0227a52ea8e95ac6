"""The workflow tier's shared run: tests/config.yaml through Snakemake once per test session.

Every test that needs only the outputs of a finished run reads ``run_dir``; a test that changes
a run (re-runs a job, adds a step, kills a job) takes ``run_copy``, its own copy. The shared run
is checked at the end of the session to be exactly as the run left it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import filled
from tests.snake import TINY_CONFIG, copy_run, fingerprint, tiny_run


@pytest.fixture(scope="session")
def config() -> dict:
    """tests/config.yaml, the tiny suite the shared run ran, as the workflow ran it (overlaid on
    the declared defaults)."""
    return filled(yaml.safe_load(TINY_CONFIG.read_text()))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory):
    """The finished shared run (read only: tests that change a run use ``run_copy``)."""
    path = tiny_run(tmp_path_factory)
    before = fingerprint(path)
    yield path
    after = fingerprint(path)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared run (use run_copy): {changed[:10]}"


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the shared run that a test may re-run and change."""
    return copy_run(run_dir, tmp_path / "run")
