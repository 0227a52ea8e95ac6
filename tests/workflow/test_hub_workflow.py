"""A hub suite through the whole workflow, offline: checkpoints in a hub cache that the test
builds in the client's own layout, evaluation text tokenized with the suite's tokenizer, bins
from Megatron shards, ``HF_HUB_OFFLINE=1``. Then a revision that is not in the cache."""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from pipeline.summary import open_summary
from tests.hubcache import TEXT, build_suite, write_megatron
from tests.snake import copy_run, planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow

REPO_ID = "EleutherAI/pythia-test"
STEPS = [0, 1, 2, 4]  # revisions in the cache
SAME_AS = {1: 0}  # step1 serves step0's weights, as several Pythia branches do
MISSING = 8  # a revision that is not in the cache


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
        "extract": {"dtype": "float32", "parameters": True, "rank_tokens": 16},
        "update": {"alpha": [-1, 0, 1, 2], "landscape_tokens": 20, "gradient_tokens": 6},
        "execution": {
            "extract": {"sequences_per_pass": 4, "vocab_chunk": 100, "device": "cpu"},
            "update": {"sequences_per_pass": 4, "device": "cpu"},
        },
        "reduce": {"saturation_tolerance": 0.01, "quantiles": [0.5]},
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
    """The hub suite run to the end once (read only; a test that changes it uses a copy):
    the run's directory, the hub cache and the suite's tokenizer."""
    tmp = tmp_path_factory.mktemp("hub")
    cache = tmp_path_factory.mktemp("hub_cache")
    tokenizer = build_suite(cache, REPO_ID, STEPS, same_as=SAME_AS)
    (tmp / "eval.txt").write_text(TEXT)
    ids = tokenizer(TEXT * 3)["input_ids"]
    write_megatron(tmp / "shard", [np.array(ids[: len(ids) // 2]), np.array(ids[len(ids) // 2 :])])
    run = snakemake(tmp, config(tmp, STEPS), cache)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return tmp, cache, tokenizer


def test_hub_revisions_are_extracted_offline(suite):
    tmp, cache, _ = suite
    for step in STEPS:
        ckpt = tmp / f"results/checkpoints/pythia-test/step{step}"
        assert not (ckpt / "config.json").is_symlink()  # copied: it outlives the cache
        assert str((ckpt / "model.safetensors").resolve()).startswith(str(cache))
        ds = xr.open_zarr(tmp / f"results/extract/pythia-test/step{step}.zarr")
        assert ds.attrs["revision"] == f"step{step}"
        assert len(ds.attrs["weights_sha256"]) == 64
    shas = {
        s: xr.open_zarr(tmp / f"results/extract/pythia-test/step{s}.zarr").attrs["weights_sha256"]
        for s in STEPS
    }
    for step, sha in shas.items():  # equal exactly where the revisions repeat weights
        for other in STEPS:
            same = SAME_AS.get(step, step) == SAME_AS.get(other, other)
            assert (sha == shas[other]) == same, (step, other)


def test_every_store_says_where_its_inputs_came_from(suite):
    """The extraction names each revision's resolved commit, the evaluation set its tokenizer
    (repository, revision, commit) and text file, the frequency table the shards' sha256; each
    store the package versions; the download log what it resolved."""
    tmp, cache, _ = suite
    refs = cache / f"models--{REPO_ID.replace('/', '--')}/refs"
    for step in STEPS:
        commit = (refs / f"step{step}").read_text().strip()
        prov = xr.open_zarr(tmp / f"results/extract/pythia-test/step{step}.zarr").attrs[
            "provenance"
        ]
        assert prov["rule"] == "extract" and prov["software"]["torch"] == torch.__version__
        source = prov["inputs"]["config"][0]["checkpoint"]
        sha = xr.open_zarr(tmp / f"results/extract/pythia-test/step{step}.zarr").attrs[
            "weights_sha256"
        ]
        assert source == {
            "kind": "hub",
            "repo_id": REPO_ID,
            "revision": f"step{step}",
            "commit": commit,
            "format": "transformers",
            "weights_sha256": sha,  # recorded when linked, before extraction
        }
        assert len(prov["inputs"]["eval"][0]["manifest_sha256"]) == 64
        log = (tmp / f"results/logs/checkpoints/download_pythia-test_step{step}.log").read_text()
        assert f"resolved to commit {commit}" in log
    prov = xr.open_zarr(tmp / "results/data/text/eval.zarr").attrs["provenance"]
    tokenizer = prov["found"]["tokenizer"]
    assert tokenizer["repo_id"] == REPO_ID and tokenizer["revision"] == "step0"
    assert tokenizer["commit"] == (refs / "step0").read_text().strip()
    text = prov["inputs"]["texts"][0]
    assert text["sha256"] == hashlib.sha256((tmp / "eval.txt").read_bytes()).hexdigest()
    freq = xr.open_zarr(tmp / "results/data/shards/frequency.zarr").attrs["provenance"]
    shard = {Path(d["path"]).name: d["sha256"] for d in freq["inputs"]["shards"]}
    assert shard["shard.bin"] == hashlib.sha256((tmp / "shard.bin").read_bytes()).hexdigest()


def test_duplicate_revisions_are_reported(suite):
    tmp, _, _ = suite
    with open(tmp / "results/reduce/pythia-test_duplicates.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [(int(r["step"]), int(r["duplicate_of"])) for r in rows] == sorted(SAME_AS.items())
    log = (tmp / "results/logs/reduce/pythia-test.log").read_text()
    assert "identical weights" in log


def test_bins_count_the_shards_and_cover_padded_ids(suite):
    tmp, _, tokenizer = suite
    spec = config(tmp, STEPS)["frequency"]
    freq = xr.open_zarr(tmp / f"results/data/{spec['name']}/frequency.zarr")
    assert freq.sizes["vocab"] == spec["vocab_size"] > len(tokenizer)
    count, bins = freq["count"].values, freq["bin"].values
    ids = tokenizer(TEXT * 3)["input_ids"]  # what the shards hold
    np.testing.assert_array_equal(count, np.bincount(ids, minlength=spec["vocab_size"]))
    assert (count[len(tokenizer) :] == 0).all()  # padded rows beyond the tokenizer: never seen
    assert (bins[count == 0] == freq.attrs["unseen_bin"]).all()
    assert (bins[count > 0] > freq.attrs["unseen_bin"]).all()


def test_displacements_to_the_next_checkpoint(suite):
    """Without optimizer states each step but the last is analysed along θ(t′) − θ(t): the
    landscape reaches the next checkpoint's extracted losses at the actual step."""
    tmp, _, _ = suite
    extract = {
        s: xr.open_zarr(tmp / f"results/extract/pythia-test/step{s}.zarr").load() for s in STEPS
    }
    for step, later in zip(STEPS, STEPS[1:]):
        u = xr.open_zarr(tmp / f"results/update/pythia-test/step{step}.zarr").load()
        assert u.attrs["direction"] == "displacement" and u.attrs["multi_step"] == 1
        assert u.attrs["next_step"] == later
        assert f"θ({later}) − θ({step})" in u.attrs["direction_meaning"]
        assert "train_loss_change" not in u and u.sizes["update_batch"] == 1
        idx = u["sample_token"].values
        land = u["landscape"].values[0, 0]  # (alpha, sample)
        alpha = u["alpha"].values.tolist()
        np.testing.assert_allclose(
            land[alpha.index(0)], extract[step]["loss"].values[0][idx], rtol=1e-5
        )
        np.testing.assert_allclose(
            land[alpha.index(1)], extract[later]["loss"].values[0][idx], rtol=1e-5
        )
        if SAME_AS.get(later) == step:  # identical weights: nothing moves, and it is said
            assert u["update_norm"].values.item() == 0
            assert (u["loss_change"].values == 0).all()
            log = (tmp / f"results/logs/update/pythia-test/step{step}.log").read_text()
            assert "identical weights" in log
        else:
            assert u["update_norm"].values.item() > 0
    assert not (tmp / f"results/update/pythia-test/step{STEPS[-1]}.zarr").exists()
    s = open_summary(str(tmp / "results/summary.zarr"))
    assert s.attrs["update_direction"] == {"pythia-test": "displacement"}


def test_adding_a_step_reruns_only_the_displacement_that_touches_it(suite):
    tmp, cache, _ = suite
    cfg_path = tmp / "added.yaml"
    cfg_path.write_text(yaml.safe_dump(config(tmp, [*STEPS, MISSING]), sort_keys=False))
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    jobs = planned_jobs(tmp, cfg_path, env=env)
    # the new revision's download and extraction; the last step now has a partner
    assert jobs["download"] == jobs["extract"] == jobs["update"] == 1
    dry = run_snakemake(tmp, cfg_path, "-n", env=env)
    outputs = re.findall(r"output: (results/update/\S+)", dry.stdout)
    assert outputs == [f"results/update/pythia-test/step{STEPS[-1]}.zarr"]


def test_missing_revision_fails_clearly_and_leaves_nothing(suite, tmp_path):
    run_dir, cache, _ = suite
    tmp = copy_run(run_dir, tmp_path / "run")  # this run fails in it: the suite's stays as it was
    run = snakemake(tmp, config(run_dir, [*STEPS, MISSING]), cache)
    assert run.returncode != 0
    log = (tmp / f"results/logs/checkpoints/download_pythia-test_step{MISSING}.log").read_text()
    assert REPO_ID in log and f"'step{MISSING}'" in log and "hf download" in log
    assert ", ".join(f"step{s}" for s in STEPS) in log  # the revisions that do exist
    assert not (tmp / f"results/checkpoints/pythia-test/step{MISSING}/config.json").exists()
    assert not (tmp / f"results/extract/pythia-test/step{MISSING}.zarr").exists()


def test_duplicates_fail_before_extraction_and_delete_nothing(suite, tmp_path):
    """Under checkpoints.duplicates: fail the repeated revisions are named when the DAG is built
    (from the hashes their links recorded), before any job: every store is left as it was."""
    from tests.snake import fingerprint

    tmp, cache, _ = suite
    run = copy_run(tmp, tmp_path / "run")
    cfg = config(tmp, STEPS)
    cfg["checkpoints"] = {"duplicates": "fail"}
    before = fingerprint(run)
    r = snakemake(run, cfg, cache)
    assert r.returncode != 0
    pairs = ", ".join(f"step {s} = step {o}" for s, o in sorted(SAME_AS.items()))
    assert f"checkpoints with identical weights: {pairs}" in r.stdout + r.stderr
    assert "nothing was extracted or deleted" in r.stdout + r.stderr
    assert fingerprint(run) == before
