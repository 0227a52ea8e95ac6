"""Seeds and interventions through the real workflow: a toy entry with two seeds and a model
trained with Muon and the z-loss, run to the summary. The seeds are two models of one group with
different weights, whose cross-seed KL the summary holds as numpy computes it from their
checkpoints; the update stage takes Muon's own step from its saved state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from pipeline import findings
from pipeline.checkpoints import load_checkpoint
from pipeline.summary import open_summary
from tests.snake import TINY_CONFIG, run_ok

pytestmark = pytest.mark.workflow


def test_seeds_and_an_intervention_run_to_the_summary(tmp_path):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    d8 = config["models"]["toy-d8"]
    config["models"] = {
        "base": {**d8, "seeds": [0, 1]},
        "muon": {**d8, "train": {"optimizer": "muon", "z_loss": 1e-4}},
    }
    config["steps"] = [0, 4, 64]
    config["toy"]["train"]["steps"] = 64
    config["update"]["steps"] = [4]
    config["extract"] = {"steps": [0, 64]}  # the extract and seeds stages skip step 4
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run_ok(tmp_path, path, "results/figures/interventions.png")
    assert sorted(p.name for p in (tmp_path / "results/extract/muon").iterdir()) == [
        "step0.zarr",
        "step64.zarr",
    ]
    assert not (tmp_path / "results/seeds/base/step4.zarr").exists()

    lazy = open_summary(str(tmp_path / "results/summary.zarr"))
    means = lazy["loss_overall"].groupby("group").mean()  # on the lazy store
    summary = lazy.load()
    assert summary["model"].values.tolist() == ["base-seed0", "base-seed1", "muon"]
    assert summary["group"].values.tolist() == ["base", "base", "muon"]
    assert summary["seed"].values.tolist() == [0.0, 1.0, 0.0]
    assert means.sizes["group"] == 2 and bool(means.notnull().any("step").all())
    # step 4: measured by the update stage only
    assert summary["eval_D"].sel(step=4).notnull().all()
    assert summary["loss_overall"].sel(step=4).isnull().all()
    hashes = summary.attrs["weights_sha256"]
    assert hashes["base-seed0"][0] != hashes["base-seed1"][0]  # another initialisation

    # the cross-seed KL at step 64, from the two seeds' checkpoints with numpy
    ev = xr.open_zarr(tmp_path / "results/data/toy/eval.zarr")
    ids = torch.from_numpy(ev["input_ids"].values.astype(np.int64))
    logp = []
    for m in ("base-seed0", "base-seed1"):
        net = load_checkpoint(tmp_path / f"results/checkpoints/{m}/step64").eval()
        with torch.no_grad():
            logits = net(input_ids=ids).logits.double().numpy().reshape(ids.numel(), -1)
        logp.append(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))
    kl = (np.exp(logp[0]) * (logp[0] - logp[1])).sum(-1)  # KL(p_seed0 ‖ p_seed1) per token
    got = summary["seed_kl_overall"].sel(model="base-seed0", step=64).item()
    assert got == pytest.approx(kl.mean(), rel=1e-4)
    bins = ev["bin"].values
    b = int(np.bincount(bins - bins.min()).argmax() + bins.min())  # the most populated bin
    got = summary["seed_kl"].sel(model="base-seed0", step=64, bin=b).item()
    assert got == pytest.approx(kl[bins == b].mean(), rel=1e-4)
    assert np.isnan(summary["seed_kl_overall"].sel(model="muon")).all()  # no seeds

    state = json.loads((tmp_path / "results/checkpoints/muon/step4/optimizer.json").read_text())
    assert state["optimizer"] == "muon" and state["terms"]["z_loss"] == 1e-4
    update = xr.open_zarr(tmp_path / "results/update/muon/step4.zarr")
    assert update.attrs["direction"] == "optimizer"
    assert update.attrs["direction_meaning"].startswith("one muon step from the state saved at")

    # the comparison's tables: the baseline's two seeds, Muon with the z-loss alone
    table = findings.interventions_deceleration(summary)
    assert "| baseline | 8 | 2 |" in table and "| muon + z_loss=0.0001 | 8 | 1 |" in table
