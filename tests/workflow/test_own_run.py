"""Your own training run through the whole workflow: checkpoints written by a real
``transformers.Trainer`` in a local directory (``source: local``, ``steps: all``), found as
training adds them. The first run measures what is there; training goes on; the second run
plans exactly the new checkpoints' jobs and the cheap per-model ones, and leaves every old
store byte- and mtime-identical."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from pipeline.checkpoints import load_checkpoint
from pipeline.plan import Plan
from tests.snake import job_stats, run_snakemake
from tests.trainer_run import BATCH, VOCAB, WINDOW, tiny_model, train

pytestmark = pytest.mark.workflow

MAX_STEPS, FIRST, SAVE = 16, 8, 4  # training stops at 8 (as a job out of time), resumes to 16


def config(tmp: Path) -> dict:
    return {
        "models": {
            "my-run": {
                "source": "local",
                "path": str(tmp / "runs/my-run/checkpoint-{step}"),
                "allow_pickle": True,  # optimizer.pt, scheduler.pt, training_args.bin
                "parameters": 30000,
            }
        },
        "steps": "all",
        "eval": {
            "name": "heldout",
            "source": "tokens",
            "path": str(tmp / "heldout.npy"),
            "sequences": 8,
            "context_length": 16,
        },
        "frequency": {
            "name": "train",
            "source": "counts",
            "path": str(tmp / "counts.npy"),
            "vocab_size": VOCAB,
        },
        "checkpoints": {"duplicates": "warn"},
        "extract": {"rank_tokens": 16},
        "update": {
            "batches": 2,
            "data": {
                "name": "next-batches",
                "source": "tokens",
                "path": str(tmp / "update.npy"),
                "sequences": BATCH,
                "context_length": WINDOW - 1,
                "label": "training batches after the checkpoint",
            },
            "alpha": [-1, 0, 1, 2],
            "landscape_tokens": 20,
            "gradient_tokens": 6,
        },
        "execution": {
            "extract": {"sequences_per_pass": 4, "vocab_chunk": 50, "device": "cpu"},
            "update": {"sequences_per_pass": 4, "device": "cpu"},
        },
        "reduce": {"quantiles": [0.5]},
        "fit": {"min_step": 0, "train": {"min_step": 0, "subsample": 0}},
        "plots": {"dpi": 60},
    }


def snakemake(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config(tmp), sort_keys=False))
    r = run_snakemake(tmp, path, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def state(tmp: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file of the extraction and update stores."""
    out = {}
    for top in ("results/extract", "results/update"):
        for p in sorted((tmp / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(tmp))] = (
                    hashlib.sha256(p.read_bytes()).hexdigest(),
                    p.stat().st_mtime_ns,
                )
    return out


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own_run")
    rng = np.random.default_rng(0)
    ids = rng.zipf(1.3, 64 * WINDOW * 4) % VOCAB
    windows = torch.from_numpy(ids.reshape(-1, WINDOW)[:256].astype(np.int64))
    np.save(tmp / "counts.npy", np.bincount(ids, minlength=VOCAB))
    np.save(tmp / "heldout.npy", rng.zipf(1.3, 4096) % VOCAB)
    np.save(tmp / "update.npy", rng.zipf(1.3, (2 * BATCH, WINDOW)) % VOCAB)
    run = tmp / "runs/my-run"
    train(run, tiny_model(), windows, MAX_STEPS, stop_at=FIRST, save_steps=SAVE, max_grad_norm=1.0)
    first = snakemake(tmp)
    before = state(tmp)
    resumed = load_checkpoint(
        run / f"checkpoint-{FIRST}"
    ).train()  # see tests/unit/formats/test_trainer.py
    train(
        run,
        resumed,
        windows,
        MAX_STEPS,
        resume=str(run / f"checkpoint-{FIRST}"),
        save_steps=SAVE,
        max_grad_norm=1.0,
    )
    planned = job_stats(snakemake(tmp, "-n").stdout)
    second = snakemake(tmp)
    return {"tmp": tmp, "first": first, "before": before, "planned": planned, "second": second}


def test_checkpoints_are_found_and_linked_not_copied(own_run):
    tmp = own_run["tmp"]
    steps = list(range(SAVE, MAX_STEPS + 1, SAVE))
    for step in steps:
        ckpt = tmp / f"results/checkpoints/my-run/step{step}"
        assert (
            ckpt / "model.safetensors"
        ).resolve() == tmp / f"runs/my-run/checkpoint-{step}/model.safetensors"
        assert xr.open_zarr(tmp / f"results/extract/my-run/step{step}.zarr").attrs["step"] == step
    summary = xr.open_zarr(tmp / "results/summary.zarr")
    assert list(summary.step.values) == steps


def test_training_further_plans_only_the_new_checkpoints(own_run):
    new = (MAX_STEPS - FIRST) // SAVE
    expected = {
        "link_local": new,
        "extract": new,
        "update": new,
        "reduce": 1,
        "reduce_update": 1,
        "fit_bnsl": 1,
        "fit_bnsl_train": 1,
        "fit_table": 1,
        "summary": 1,
        "all": 1,
        **{f"plot_{f}": 1 for f in Plan(config(own_run["tmp"])).figures()},
        "report": 1,
    }
    assert own_run["planned"] == expected
    after = state(own_run["tmp"])
    assert {k: after[k] for k in own_run["before"]} == own_run["before"]  # bytes and mtimes


def test_the_update_stage_steps_the_trainers_optimizer(own_run):
    tmp = own_run["tmp"]
    for step in range(SAVE, MAX_STEPS + 1, SAVE):
        u = xr.open_zarr(tmp / f"results/update/my-run/step{step}.zarr")
        assert u.attrs["direction"] == "optimizer" and u.attrs["optimizer_step"] == step
        assert u.attrs["max_grad_norm"] == 1.0
        assert u.attrs["optimizer_max_grad_norm_from"] == "training_args.bin"


def test_the_training_curve_comes_from_trainer_state(own_run):
    import json

    tmp = own_run["tmp"]
    fit = json.loads((tmp / "results/fits/my-run_train.json").read_text())
    assert fit["curve"] == "train" and fit["n_points"] > 0
