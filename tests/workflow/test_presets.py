"""The real suites' presets build their DAG offline in a fresh directory: every input is the
output of a rule (the frequency counts are fetched with a checksum) or named in the error."""

from __future__ import annotations

import pytest
import yaml

from pipeline.plots import FIGURES
from tests.snake import REPO, job_stats, run_snakemake

pytestmark = pytest.mark.workflow

PRESETS = sorted((REPO / "config").glob("*.yaml"))
PRESETS = [p for p in PRESETS if p.name != "schema.yaml"]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_dry_runs_in_a_fresh_directory(tmp_path, preset):
    cfg = yaml.safe_load(preset.read_text())
    r = run_snakemake(tmp_path, preset, "-n", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    jobs = job_stats(r.stdout)
    checkpoints = len(cfg["models"]) * len(cfg["steps"])
    assert jobs["download"] == checkpoints and jobs["extract"] == checkpoints
    assert jobs["reduce"] == jobs["fit_bnsl"] == len(cfg["models"])
    # with optimizer states (OLMo-native suites) one step per analysed step, else one
    # displacement per analysed step that has a next listed step
    analysed = cfg["update"]["steps"] or cfg["steps"]
    moving = [s for s in analysed if any(t > s for t in cfg["steps"])]
    stateful = [m for m, spec in cfg["models"].items() if spec.get("format") == "olmo"]
    expected = sum(len(analysed) if m in stateful else len(moving) for m in cfg["models"])
    assert jobs["update"] == expected
    assert jobs.get("update_batches", 0) == (1 if stateful else 0)
    assert jobs.get("fetch_counts", 0) == (1 if cfg["frequency"].get("url") else 0)
    assert sum(v for k, v in jobs.items() if k.startswith("plot_")) == len(FIGURES)
