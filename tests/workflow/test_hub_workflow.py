"""A hub suite through the whole workflow, offline: checkpoints in a hub cache that the test
builds in the client's own layout, evaluation text tokenized with the suite's tokenizer, bins
from Megatron shards, ``HF_HUB_OFFLINE=1``. Then a revision that is not in the cache."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from tests.hubcache import TEXT, build_suite
from tests.snake import REPO, job_stats, run_snakemake
from tests.unit.test_hub import write_megatron

pytestmark = pytest.mark.workflow

REPO_ID = "EleutherAI/pythia-test"


def config(tmp: Path, steps: list[int]) -> dict:
    return {
        "models": {"pythia-test": {"source": "hub", "repo_id": REPO_ID, "parameters": 10000}},
        "steps": steps,
        "eval": {
            "name": "text",
            "source": "text",
            "paths": [str(tmp / "eval.txt")],
            "tokenizer": {"repo_id": REPO_ID, "revision": "step0"},
            "sequences": 8,
            "context_length": 16,
            "seed": 0,
        },
        "frequency": {
            "name": "shards",
            "source": "megatron",
            "paths": [str(tmp / "shard")],
            "vocab_size": 320,
        },
        "checkpoints": {"duplicates": "warn"},
        "extract": {
            "batch_size": 4,
            "vocab_chunk": 100,
            "dtype": "float32",
            "device": "cpu",
            "parameters": True,
            "rank_tokens": 16,
        },
        "reduce": {"saturation_tolerance": 0.01, "quantiles": [0.5], "token_chunk": 64},
        "fit": {"min_step": 0, "a": 0.0, "smooth": 0, "subsample": 0},
        "plots": {"dpi": 60},
    }


def snakemake(workdir: Path, cfg: dict, cache: Path, *args: str) -> subprocess.CompletedProcess:
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    return run_snakemake(workdir, cfg_path, *args, env=env)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    cache = tmp / "cache"
    cache.mkdir()
    # step1 serves step0's weights, as several Pythia branches do
    tokenizer = build_suite(cache, REPO_ID, [0, 1, 2, 4], same_as={1: 0})
    (tmp / "eval.txt").write_text(TEXT)
    ids = tokenizer(TEXT * 3)["input_ids"]
    write_megatron(tmp / "shard", [np.array(ids[: len(ids) // 2]), np.array(ids[len(ids) // 2 :])])
    run = snakemake(tmp, config(tmp, [0, 1, 2, 4]), cache)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return tmp, cache


def test_hub_revisions_are_extracted_offline(suite):
    tmp, cache = suite
    for step in (0, 1, 2, 4):
        ckpt = tmp / f"results/checkpoints/pythia-test/step{step}"
        assert (ckpt / "config.json").is_symlink()
        assert str((ckpt / "model.safetensors").resolve()).startswith(str(cache))
        ds = xr.open_zarr(tmp / f"results/extract/pythia-test/step{step}.zarr")
        assert ds.attrs["revision"] == f"step{step}"
        assert len(ds.attrs["weights_sha256"]) == 64
    shas = [
        xr.open_zarr(tmp / f"results/extract/pythia-test/step{s}.zarr").attrs["weights_sha256"]
        for s in (0, 1, 2)
    ]
    assert shas[0] == shas[1] != shas[2]


def test_duplicate_revisions_are_reported(suite):
    tmp, _ = suite
    with open(tmp / "results/reduce/pythia-test_duplicates.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [(r["step"], r["duplicate_of"]) for r in rows] == [("1", "0")]
    log = (tmp / "results/logs/reduce/pythia-test.log").read_text()
    assert "identical weights" in log


def test_bins_count_the_shards_and_cover_padded_ids(suite):
    tmp, _ = suite
    freq = xr.open_zarr(tmp / "results/data/shards/frequency.zarr")
    assert freq.sizes["vocab"] == 320
    count, bins = freq["count"].values, freq["bin"].values
    assert (count[257:] == 0).all()  # padded rows beyond the 257-id tokenizer: never seen
    assert (bins[count == 0] == freq.attrs["unseen_bin"]).all()
    assert (bins[count > 0] > freq.attrs["unseen_bin"]).all()


def test_missing_revision_fails_clearly_and_leaves_nothing(suite, tmp_path):
    tmp, cache = suite
    run = snakemake(tmp, config(tmp, [0, 1, 2, 4, 8]), cache)
    assert run.returncode != 0
    log = (tmp / "results/logs/checkpoints/download_pythia-test_step8.log").read_text()
    assert REPO_ID in log and "'step8'" in log and "hf download" in log
    assert "step0, step1, step2, step4" in log
    assert not (tmp / "results/checkpoints/pythia-test/step8/config.json").exists()
    assert not (tmp / "results/extract/pythia-test/step8.zarr").exists()


@pytest.mark.parametrize(
    "preset,placeholder,models,steps",
    [
        ("pythia.yaml", "data/pythia_unigram_counts.npy", 6, 154),
        ("crfm-gpt2.yaml", "data/openwebtext_gpt2_counts.npy", 2, 15),
    ],
)
def test_preset_dry_run_builds_the_whole_dag_offline(tmp_path, preset, placeholder, models, steps):
    (tmp_path / placeholder).parent.mkdir(parents=True)
    (tmp_path / placeholder).touch()  # the counts the user provides (see the preset)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}
    run = run_snakemake(tmp_path, REPO / "config" / preset, "-n", env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    counts = job_stats(run.stdout)
    assert counts["download"] == counts["extract"] == models * steps
    assert counts["reduce"] == counts["fit_bnsl"] == models
