"""Incremental re-runs of a finished run: what an edit of the code or the config re-runs.

Dry runs plan against the session's shared run (``run_dir``); the one test that re-runs jobs
works on its own copy (``run_copy``). Every expected job count is derived from the config and
from the run's figures (``Plan.figures``).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from pipeline.plan import Plan
from pipeline.plots import COMMON_SOURCE
from pipeline.summary import open_summary
from tests.snake import REPO, TINY_CONFIG, planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow


#: The tiny suite's figures (those of the experiments it contains).
FIGURES = Plan(yaml.safe_load(TINY_CONFIG.read_text())).figures()


def plot_jobs(figures=FIGURES) -> dict[str, int]:
    """One ``plot_<name>`` job per figure, the run's report that shows them, and ``all``."""
    return {**{f"plot_{name}": 1 for name in figures}, "report": 1, "all": 1}


def update_jobs(config: dict, models: int, steps: list[int] | None = None) -> dict[str, int]:
    """One update job per (model, analysed step): every listed step unless update.steps says;
    and each of those models' update stores reduced over steps."""
    steps = config["update"]["steps"] if steps is None else steps
    n = models * len(steps if steps is not None else config["steps"])
    return {"update": n, "reduce_update": models} if n else {}


def downstream_jobs(models: int) -> dict[str, int]:
    """What every model's new or changed extractions re-run: its reduction and fit, the fits'
    table, the summary and every figure."""
    return {"reduce": models, "fit_bnsl": models, "fit_table": 1, "summary": 1, **plot_jobs()}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def touched(*paths: Path) -> Iterator[None]:
    """Set the modification time of files of the repository to now, as an edit would, and put
    it back afterwards (their contents are not changed)."""
    before = {p: p.stat() for p in paths}
    try:
        for p in paths:
            os.utime(p, None)
        yield
    finally:
        for p, st in before.items():
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_editing_shared_plot_code_reruns_every_figure_and_nothing_else(run_dir):
    with touched(REPO / COMMON_SOURCE):
        jobs = planned_jobs(run_dir, TINY_CONFIG)
    assert jobs == plot_jobs()


def test_editing_one_figure_module_reruns_only_its_figures(run_dir):
    by_module = Counter(spec.module for spec in FIGURES.values())
    module = min(by_module, key=lambda m: (by_module[m], m))  # fewest figures: the sharpest test
    figures = [name for name, spec in FIGURES.items() if spec.module == module]
    assert 0 < len(figures) < len(FIGURES)
    with touched(REPO / FIGURES[figures[0]].source):
        jobs = planned_jobs(run_dir, TINY_CONFIG)
    assert jobs == plot_jobs(figures)


def test_editing_plot_config_reruns_only_plots(run_dir, config, tmp_path):
    changed = {**config, "plots": {"dpi": config["plots"]["dpi"] + 10}}
    jobs = planned_jobs(run_dir, write_config(tmp_path / "config.yaml", changed))
    assert jobs == plot_jobs()


def test_adding_a_model_reruns_only_its_jobs(run_dir, config, tmp_path):
    new = {"toy-d24": {"source": "toy", "hidden_size": 24, "layers": 1, "heads": 2}}
    assert not set(new) & set(config["models"])
    changed = {**config, "models": {**config["models"], **new}}
    jobs = planned_jobs(run_dir, write_config(tmp_path / "config.yaml", changed))
    # the new model's training, extractions, reduction and fit; the cheap rules over all models
    assert jobs == {
        "train_toy": len(new),
        "extract": len(new) * len(config["steps"]),
        **update_jobs(config, len(new)),
        **downstream_jobs(len(new)),
        "fit_bnsl_train": len(new),  # the fit of its training curve, new with its training
    }


def test_adding_a_step_reruns_only_its_extractions_and_changes_no_other_store(
    run_copy, config, tmp_path
):
    new_step = 32  # saved by the toy training schedule, not in tests/config.yaml
    assert new_step not in config["steps"]
    changed = write_config(
        tmp_path / "config.yaml", {**config, "steps": sorted([*config["steps"], new_step])}
    )
    n_models = len(config["models"])
    jobs = planned_jobs(run_copy, changed)
    # one new extraction and update per model, nothing upstream; every model's reduction and fit
    assert jobs == {
        "extract": n_models,
        **update_jobs(config, n_models, [new_step]),
        **downstream_jobs(n_models),
    }

    def fingerprint():
        out = {}
        stores = [*(run_copy / "results/extract").rglob("step*.zarr")]
        stores += [*(run_copy / "results/update").rglob("step*.zarr")]
        for store in stores:
            files = sorted(p for p in store.rglob("*") if p.is_file())
            out[store] = [
                (p.relative_to(store), p.stat().st_mtime_ns, p.read_bytes()) for p in files
            ]
        return out

    before = fingerprint()
    # up to the summary and the fits (the figures' re-run is planned above; drawing them adds
    # nothing to what this test checks)
    targets = ("results/summary.zarr", "results/fits/bnsl.csv")
    r = run_snakemake(run_copy, changed, *targets)
    assert r.returncode == 0, r.stderr[-3000:]
    after = fingerprint()
    assert set(after) - set(before) == {
        run_copy / f"results/{stage}/{m}/step{new_step}.zarr"
        for m in config["models"]
        for stage in ("extract", "update")
    }
    for store, files in before.items():
        assert after[store] == files, store  # untouched: same bytes, same mtimes
    s = open_summary(str(run_copy / "results/summary.zarr"))
    assert s["step"].values.tolist() == sorted([*config["steps"], new_step])
    # and what is left to do is drawing the figures
    assert planned_jobs(run_copy, changed) == plot_jobs()


def _edited(config: dict, changes: dict) -> dict:
    # keys sorted, which must change nothing; the models keep their order (the summary's)
    edited = {**yaml.safe_load(yaml.safe_dump(config)), "models": config["models"]}
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = edited
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return edited


@pytest.mark.parametrize(
    "changes",
    [
        {
            "execution.extract.sequences_per_pass": 3,
            "execution.extract.vocab_chunk": 37,
            "execution.extract.device": "cpu",
            "execution.update.sequences_per_pass": 5,
            "execution.update.device": "cpu",
            "execution.reduce.scheduler": None,
        },
        {
            "eval.seed": 0,
            "fit.smooth": 0,
            "checkpoints.duplicates": "warn",
            "update.direction": "auto",
        },
    ],
    ids=["execution settings", "defaults written out"],
)
def test_edits_that_change_no_result_rerun_nothing(run_dir, config, tmp_path, changes):
    path = write_config(tmp_path / "config.yaml", _edited(config, changes))
    assert planned_jobs(run_dir, path) == {}


def test_a_science_setting_reruns_what_depends_on_it(run_dir, config, tmp_path):
    path = write_config(
        tmp_path / "config.yaml", _edited(config, {"reduce.dissent_threshold": -0.5})
    )
    assert planned_jobs(run_dir, path) == downstream_jobs(len(config["models"]))


def test_restoring_a_deleted_toy_checkpoint_re_measures_nothing(run_copy):
    """Training is deterministic: re-training a model to restore a deleted checkpoint rewrites
    every checkpoint with the same weights, and the stores measured on them stay valid, byte for
    byte and with their times (the rules take a checkpoint as ancient where its stores record
    exactly its weights, and Snakemake compares the rewritten small files by checksum)."""
    from tests.snake import fingerprint

    config = yaml.safe_load(TINY_CONFIG.read_text())
    model, step = next(iter(config["models"])), config["steps"][2]
    shutil.rmtree(run_copy / f"results/checkpoints/{model}/step{step}")
    before = fingerprint(run_copy)
    restore = f"results/checkpoints/{model}/step{step}/config.json"
    r = run_snakemake(run_copy, TINY_CONFIG, restore)
    assert r.returncode == 0, r.stderr[-3000:]
    assert planned_jobs(run_copy, TINY_CONFIG) == {}
    after = fingerprint(run_copy)
    measured = ("extract/", "update/", "reduce/", "fits/", "figures/", "summary.zarr")
    stores = [k for k in before if k.startswith(tuple(f"results/{m}" for m in measured))]
    assert stores and all(after.get(k) == before[k] for k in stores)
