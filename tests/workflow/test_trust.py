"""Silent-wrong results of the last fault attack, each now an error that names the file and the
fix: optimizer states that belong to another checkpoint, a store's edited metadata, another
model's checkpoint copied into a model's folder. Each on a copy of the shared run."""

from __future__ import annotations

import json
import shutil

import pytest
import xarray as xr
import yaml
import zarr
from safetensors.torch import load_file, save_file

from pipeline.optimizer import MOMENTS_FILE, STATE_FILE
from tests.snake import TINY_CONFIG, run_snakemake

pytestmark = pytest.mark.workflow

CONFIG = yaml.safe_load(TINY_CONFIG.read_text())
A, B = list(CONFIG["models"])  # toy-d8, toy-d16
EARLY, MID = CONFIG["steps"][1], CONFIG["steps"][2]  # 4, 64


def _edit_state(ckpt, **changes):
    path = ckpt / STATE_FILE
    settings = json.loads(path.read_text())
    for key, change in changes.items():
        settings[key] = change(settings[key])
    path.write_text(json.dumps(settings))


def _nan_moment(ckpt):
    tensors = load_file(ckpt / MOMENTS_FILE)
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, ckpt / MOMENTS_FILE)
    return name


def test_optimizer_states_that_are_not_their_checkpoints_fail_their_update_jobs(run_copy):
    ckpt = run_copy / "results/checkpoints"
    _edit_state(ckpt / f"{A}/step{EARLY}", step=lambda s: 999)
    moment = _nan_moment(ckpt / f"{A}/step{MID}")
    _edit_state(ckpt / f"{B}/step{EARLY}", lr=lambda lr: 10 * lr)
    for name in (STATE_FILE, MOMENTS_FILE):  # step 4's optimizer files copied into step 64
        shutil.copy(ckpt / f"{B}/step{EARLY}/{name}", ckpt / f"{B}/step{MID}/{name}")
    targets = [f"results/update/{m}/step{s}.zarr" for m in (A, B) for s in (EARLY, MID)]
    before = {t: (run_copy / t / ".manifest.json").read_bytes() for t in targets}
    r = run_snakemake(run_copy, TINY_CONFIG, *targets, "--forcerun", *targets, "--keep-going")
    assert r.returncode != 0

    def log(model, step):
        return (run_copy / f"results/logs/update/{model}/step{step}.log").read_text()

    state = f"results/checkpoints/{A}/step{EARLY}/{STATE_FILE}"
    assert f"{state}: the optimizer state has taken 999 steps" in log(A, EARLY)
    assert f"{moment} holds non-finite values" in log(A, MID)
    assert "but the training schedule gives" in log(B, EARLY)
    assert f"has taken {EARLY} steps, but it lies beside the checkpoint of step {MID}" in log(
        B, MID
    )
    for t in targets:  # nothing half written; (Snakemake removed the forced jobs' old outputs)
        assert (
            not (run_copy / t).exists()
            or (run_copy / t / ".manifest.json").read_bytes() == before[t]
        )


def test_an_edited_attribute_of_a_step_store_fails_the_reduction(run_copy):
    store = run_copy / f"results/extract/{A}/step{MID}.zarr"
    meta = store / "zarr.json"  # the consolidated metadata, which xarray reads
    doc = json.loads(meta.read_text())
    doc["consolidated_metadata"]["metadata"]["loss"]["attributes"]["scale_factor"] = 2.0
    meta.write_text(json.dumps(doc))
    target = f"results/reduce/{A}.zarr"
    r = run_snakemake(run_copy, TINY_CONFIG, target, "--forcerun", target)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"store {store.relative_to(run_copy)} is damaged: metadata file zarr.json" in out


def test_another_models_checkpoint_is_named_before_any_job(run_copy):
    src, dst = (run_copy / f"results/checkpoints/{m}/step{MID}" for m in (A, B))
    shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    r = run_snakemake(run_copy, TINY_CONFIG, "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"results/checkpoints/{B}/step{MID}/config.json: hidden_size 8 (not 16)" in out, out[
        -2000:
    ]
    assert "belongs to another model" in out


def test_every_store_of_a_run_records_its_job_inputs_and_software(run_dir):
    from pipeline.verify import stores

    found = stores(run_dir / "results")
    assert len(found) > 10
    for path in found:
        prov = xr.open_zarr(path).attrs["provenance"]
        assert prov["software"]["zarr"] == zarr.__version__, path
        assert prov["rule"] and prov["inputs"] or "corpus" in path.name, path
        for described in (d for ds in prov.get("inputs", {}).values() for d in ds):
            assert "sha256" in described or "manifest_sha256" in described, (path, described)
    extract = xr.open_zarr(run_dir / f"results/extract/{A}/step{MID}.zarr").attrs["provenance"]
    source = extract["inputs"]["config"][0]["checkpoint"]
    assert source["kind"] == "toy" and source["step"] == MID
    assert source["shape"]["hidden_size"] == CONFIG["models"][A]["hidden_size"]


def test_a_store_measured_on_other_weights_is_named_before_any_job(run_copy):
    """A toy checkpoint whose weights changed under its stores (a re-training that came out
    different; here step 8's weights copied in) leaves config.json as it was, which is all
    Snakemake compares: the plan compares the stores' recorded hashes and names the store."""
    ckpt = run_copy / f"results/checkpoints/{A}"
    weights = ckpt / f"step{EARLY}/model.safetensors"
    weights.unlink()
    shutil.copy(ckpt / "step8/model.safetensors", weights)
    r = run_snakemake(run_copy, TINY_CONFIG, "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"results/extract/{A}/step{EARLY}.zarr was measured on weights of sha256" in out, out[
        -2000:
    ]
    assert "delete the store and re-run" in out
