"""An OLMo-native suite (as the Zero-sum learning suite is published) through the whole
workflow, offline: tiny checkpoints trained and saved by OLMo's own implementation
(``tests/olmo_reference.py``) in a hub cache of the client's own layout, one branch per
checkpoint with config.yaml, model.pt, optim.pt and train.pt, the tokenizer in a repository of
its own, ``HF_HUB_OFFLINE=1``; extraction, one optimizer step from every saved state, the
reductions and every figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from pipeline.formats import olmo
from pipeline.summary import open_summary
from tests.hubcache import TEXT, add_revision, make_tokenizer
from tests.snake import run_snakemake
from tests.unit.formats.test_olmo import run_reference
from tests.workflow.test_hub_workflow import config as hub_config

pytestmark = pytest.mark.workflow

REPO_ID = "mirandrom/zsl-test"
TOKENIZER = "allenai/tokenizer-test"
STEPS = [1, 2, 4, 8]
EOS = 0
VOCAB, PADDED = 257, 320  # the test tokenizer's ids; the models' padded output rows
REFERENCE_ARGS = (
    "--save",
    ",".join(map(str, STEPS)),
    "--vocab",
    str(VOCAB),
    "--embedding-size",
    str(PADDED),
)


def config(tmp: Path) -> dict:
    """The offline hub suite's config (``test_hub_workflow``) with this suite's models, its own
    tokenizer repository, counts from a dataset and update batches from held-out text."""
    tokenizer = {"repo_id": TOKENIZER, "revision": "main", "eos_id": EOS}
    cfg = hub_config(tmp, STEPS)
    cfg["models"] = {
        "olmo-test": {
            "source": "hub",
            "repo_id": REPO_ID,
            "revision": "OLMo-T-step{step}",
            "format": "olmo",
            "allow_pickle": True,
            "parameters": 20000,
        }
    }
    cfg["eval"].update(tokenizer=tokenizer, context_length=15)
    cfg["frequency"] = {  # counted from a dataset (the `text` builder over a local file)
        "name": "counted",
        "source": "dataset",
        "dataset": {"path": "text", "data_files": str(tmp / "train.txt"), "split": "train"},
        "tokenizer": tokenizer,
        "tokens": 4000,
        "vocab_size": PADDED,
    }
    cfg["execution"]["extract"]["vocab_chunk"] = 50
    cfg["update"]["batches"] = 2
    cfg["update"]["data"] = {
        "name": "heldout",
        "source": "text",
        "paths": [str(tmp / "update.txt")],
        "tokenizer": tokenizer,
        "sequences": 4,
        "context_length": 15,
        "seed": 1,
    }
    return cfg


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The suite run to the end once: the run's directory and the hub cache."""
    tmp = tmp_path_factory.mktemp("zsl")
    cache = tmp_path_factory.mktemp("zsl_cache")
    make_tokenizer(tmp / "tokenizer")
    tok = {f.name: f.read_bytes() for f in (tmp / "tokenizer").iterdir()}
    add_revision(cache, TOKENIZER, "main", tok)
    run_reference(tmp / "native", *REFERENCE_ARGS)
    for step in STEPS:
        files = {f.name: f.read_bytes() for f in (tmp / "native" / f"step{step}").iterdir()}
        assert sorted(files) == ["config.yaml", "model.pt", "optim.pt", "train.pt"]
        add_revision(cache, REPO_ID, f"OLMo-T-step{step}", files)
    sentences = TEXT.split(". ")
    (tmp / "eval.txt").write_text(TEXT)
    (tmp / "train.txt").write_text("\n".join(sentences * 4))  # one document per line
    (tmp / "update.txt").write_text(". ".join(reversed(sentences)) * 2)
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config(tmp), sort_keys=False))
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1"}
    run = run_snakemake(tmp, cfg_path, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return tmp, cache


def test_native_branches_are_linked_and_extracted(suite):
    tmp, cache = suite
    for step in STEPS:
        ckpt = tmp / f"results/checkpoints/olmo-test/step{step}"
        assert str((ckpt / "model.pt").resolve()).startswith(str(cache))
        assert not (ckpt / "train.pt").exists()  # needs unrestricted unpickling: not fetched
        assert not (ckpt / "config.json").is_symlink()  # written: the transformers counterpart
        ds = xr.open_zarr(tmp / f"results/extract/olmo-test/step{step}.zarr")
        assert ds.attrs["revision"] == f"OLMo-T-step{step}"
        assert ds.attrs["output_param"] == "model.embed_tokens.weight"  # tied, as OLMo's
        assert not [p for p in ds["param"].values if "norm" in p]
        assert np.isfinite(ds["loss"].values).all()


def test_one_optimizer_step_from_every_saved_state(suite):
    tmp, _ = suite
    native = yaml.safe_load((tmp / "native/step8/config.yaml").read_text())
    for step in STEPS:
        u = xr.open_zarr(tmp / f"results/update/olmo-test/step{step}.zarr")
        assert u.attrs["direction"] == "optimizer" and u.attrs["multi_step"] == 0
        assert u.attrs["optimizer_step"] == step
        assert u.attrs["learning_rate"] == pytest.approx(olmo.scheduled_lr(native, step + 1))
        assert u.attrs["update_batches"].startswith("held-out text sample")
        assert "not the training batches" in u.attrs["update_batches"]
        assert u.sizes["update_batch"] == 2 and (u["update_norm"].values > 0).all()
    s = open_summary(str(tmp / "results/summary.zarr"))
    assert s.attrs["update_direction"] == {"olmo-test": "optimizer"}
    for name in ("single_step_interference", "first_order", "landscape"):
        assert (tmp / f"results/figures/{name}.png").stat().st_size > 10_000


def test_the_stored_step_is_olmos_own(suite):
    """The update stage's step from step 8 on update batch 0 has, tensor by tensor, the norms of
    the step OLMo's own trainer takes from the same state on the same batch."""
    tmp, _ = suite
    ub = xr.open_zarr(tmp / "results/data/heldout/update.zarr")
    np.save(tmp / "batch0.npy", ub["input_ids"].values[0].astype(np.int64))
    ref = run_reference(tmp / "again", *REFERENCE_ARGS, "--next-batch", str(tmp / "batch0.npy"))
    u = xr.open_zarr(tmp / "results/update/olmo-test/step8.zarr")
    ours = dict(zip(u["param"].values, u["update_param_norm"].values[0, 0]))
    cfg = olmo.hf_config(yaml.safe_load((tmp / "native/step8/config.yaml").read_text()))
    want = {}
    for name, delta in ref["next_update"].items():
        want.update({n: float(t.norm()) for n, t in olmo.split_tensor(name, delta, cfg).items()})
    assert sorted(ours) == sorted(want)
    for name in want:
        assert ours[name] == pytest.approx(want[name], rel=1e-4), name


def test_a_missing_branch_names_the_repository_and_how_to_fetch_it(suite, tmp_path):
    tmp, cache = suite
    cfg = config(tmp)
    cfg["steps"] = [*STEPS, 16]
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1"}
    r = run_snakemake(
        tmp_path, cfg_path, "results/checkpoints/olmo-test/step16/config.json", env=env
    )
    assert r.returncode != 0
    log = (tmp_path / "results/logs/checkpoints/download_olmo-test_step16.log").read_text()
    assert f"{REPO_ID} revision 'OLMo-T-step16' is not in the hub cache" in log
    assert f"hf download {REPO_ID} --revision OLMo-T-step16" in log
    assert not (tmp_path / "results/checkpoints/olmo-test/step16").exists()


def test_the_reference_is_a_real_olmo_install():
    """The reference is OLMo's package, not this project's code."""
    from tests.unit.formats.test_olmo import reference_python

    out = reference_python("import olmo, olmo.model; print(olmo.__file__)")
    assert ".olmo-reference" in out
    r = subprocess.run([sys.executable, "-c", "import olmo"], capture_output=True)
    assert r.returncode != 0  # not importable beside the project
