"""The real suites' presets build their DAG offline in a fresh directory: every input is the
output of a rule (the frequency counts are fetched with a checksum) or named in the error."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from pipeline.config import filled, has_optimizer_states
from pipeline.plan import Plan
from tests.snake import REPO, job_stats, run_snakemake

pytestmark = pytest.mark.workflow

PRESETS = sorted((REPO / "config").glob("*.yaml"))
#: own-run.yaml is a template for the user's own checkpoints (tested below)
PRESETS = [p for p in PRESETS if p.name not in ("schema.yaml", "own-run.yaml")]


def test_the_own_run_template_names_what_is_missing(tmp_path):
    """Before its checkpoints are complete, the own-run template says where it looked, what it
    skipped and what to do."""
    r = run_snakemake(tmp_path, REPO / "config" / "own-run.yaml", "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "runs/my-model/tokenizer is not a directory" in out
    (tmp_path / "runs/my-model/tokenizer").mkdir(parents=True)  # save_pretrained's directory
    (tmp_path / "data").mkdir()
    (tmp_path / "data/heldout.txt").write_text("text")
    (tmp_path / "runs/my-model/checkpoint-1000").mkdir(parents=True)  # training just began
    r = run_snakemake(tmp_path, REPO / "config" / "own-run.yaml", "-n")
    assert "frequency.path: data/train_counts.npy does not exist" in r.stdout + r.stderr
    np.save(tmp_path / "data/train_counts.npy", np.ones(100, dtype=np.int64))
    np.save(tmp_path / "data/update_batches.npy", np.ones((8, 65), dtype=np.int64))
    r = run_snakemake(tmp_path, REPO / "config" / "own-run.yaml", "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "models.my-model: steps: all found no complete checkpoint at" in out
    assert "runs/my-model/checkpoint-{step}" in out


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_dry_runs_in_a_fresh_directory(tmp_path, preset):
    cfg = filled(yaml.safe_load(preset.read_text()))  # as the workflow runs it
    r = run_snakemake(tmp_path, preset, "-n", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    jobs = job_stats(r.stdout)
    checkpoints = len(cfg["models"]) * len(cfg["steps"])
    toy = [m for m, spec in cfg["models"].items() if spec["source"] == "toy"]
    assert jobs.get("download", 0) == checkpoints - len(toy) * len(cfg["steps"])
    assert jobs.get("train_toy", 0) == len(toy)
    extracted = cfg.get("extract", {}).get("steps") or cfg["steps"]
    assert jobs["extract"] == len(cfg["models"]) * len(set(extracted) & set(cfg["steps"]))
    assert jobs["reduce"] == jobs["fit_bnsl"] == len(cfg["models"])
    languages = cfg.get("toy", {}).get("languages", {})
    assert jobs.get("toy_corpus", 0) == (len(languages) + 1 if toy else 0)
    assert jobs["eval_set"] == jobs["frequency"] == 1 + len(languages)
    # with optimizer states (OLMo-native suites, toy models without a factored head) one step
    # per analysed step, else one displacement per analysed step that has a next listed step
    analysed = cfg["update"]["steps"] if cfg["update"]["steps"] is not None else cfg["steps"]
    moving = [s for s in analysed if any(t > s for t in cfg["steps"])]
    stateful = [m for m in cfg["models"] if has_optimizer_states(cfg, m)]
    expected = sum(len(analysed) if m in stateful else len(moving) for m in cfg["models"])
    assert jobs.get("update", 0) == expected
    updated = [
        m for m in cfg["models"] if m in stateful and analysed or m not in stateful and moving
    ]
    assert jobs.get("reduce_update", 0) == (len(updated) if expected else 0)
    batches = {cfg["models"][m].get("language") for m in stateful} if analysed else set()
    assert jobs.get("update_batches", 0) == len(batches)
    assert jobs.get("fetch_counts", 0) == (1 if cfg["frequency"].get("url") else 0)
    # one comparison of a setting's seeds per listed step (models.{name}.seeds)
    raw = yaml.safe_load(preset.read_text())["models"]
    seeded = [spec for spec in raw.values() if "seeds" in spec and len(spec["seeds"]) > 1]
    assert jobs.get("seeds", 0) == len(seeded) * len(set(extracted) & set(cfg["steps"]))
    assert sum(v for k, v in jobs.items() if k.startswith("plot_")) == len(Plan(cfg).figures())
    assert jobs["report"] == 1
