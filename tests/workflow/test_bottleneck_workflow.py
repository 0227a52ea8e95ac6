"""The toy suite's controlled experiments through the whole workflow (config/bottleneck.yaml in
small): a model with a factored output layer and models on SpamLang languages of their own
(``toy.languages``) beside a model on the run's language, each with its own learning rate; every
language gets its corpus, frequency table, evaluation set and update batches, and the figures
draw the experiments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import yaml

from pipeline.checkpoints import load_checkpoint
from pipeline.optimizer import read_state
from pipeline.plots.bottleneck import plot_head_rank, plot_spamlang
from pipeline.summary import open_summary
from tests.snake import TINY_CONFIG, run_ok
from tests.unit.plots.test_plots import figure_texts
from tests.unit.toy.test_toy import float32_rank

pytestmark = pytest.mark.workflow

SPAM = {"kind": "spam", "zipf_exponent": 0.0, "chain_length": 33}


def config() -> dict:
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    d8 = cfg["models"]["toy-d8"]
    cfg["models"] = {
        "toy-d8": d8,
        "rank2": {"source": "toy", "hidden_size": 16, "layers": 1, "heads": 2, "head_rank": 2},
        "spam-a": {**d8, "language": "spam-v64", "train": {"learning_rate": 0.01}},
        "spam-b": {**d8, "language": "spam-v128"},
    }
    cfg["toy"]["languages"] = {
        "spam-v64": {**SPAM, "vocab_size": 64},
        "spam-v128": {**SPAM, "vocab_size": 128},
    }
    cfg["steps"] = [0, 64, 128]
    cfg["update"]["steps"] = [64]
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bottleneck")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config()))
    run_ok(root, path)
    return root


def test_each_language_has_its_own_data(run):
    for name, V in (("spam-v64", 64), ("spam-v128", 128)):
        data = run / "results" / "data" / name
        ev = xr.open_zarr(data / "eval.zarr")
        ids = np.concatenate([ev["input_ids"].values, ev["targets"].values[:, -1:]], axis=1)
        assert (ids == ids[:, :1]).all()  # every evaluation window is one chain: one id
        assert ids.max() < V
        assert xr.open_zarr(data / "frequency.zarr").sizes["vocab"] == V
        batches = xr.open_zarr(data / "update.zarr")["input_ids"].values
        assert batches.max() < V
        assert (batches == batches[..., :1]).all()  # windows of one chain
    ev = xr.open_zarr(run / "results/data/toy/eval.zarr")
    assert ev["input_ids"].values.max() >= 128  # the run's own language, 512 ids


def test_models_train_on_their_language_with_their_learning_rate(run):
    ckpt = run / "results" / "checkpoints"
    for model, V, lr in (("spam-a", 64, 0.01), ("spam-b", 128, 0.003), ("toy-d8", 512, 0.003)):
        spec = json.loads((ckpt / model / "step64" / "config.json").read_text())
        assert spec["vocab_size"] == V
        state = read_state(ckpt / model / "step64")
        # the saved rate is the schedule's for step 65, a fraction of the model's peak rate
        assert 0.1 * lr <= state.lr <= lr
        store = xr.open_zarr(run / f"results/extract/{model}/step128.zarr")
        assert store.attrs["vocab_size"] == V


def test_the_factored_head_is_measured_as_the_product(run):
    for step in (0, 64, 128):
        model = load_checkpoint(run / f"results/checkpoints/rank2/step{step}")
        assert model.config.head_rank == 2
        U = model.get_output_embeddings().weight.detach().double().numpy()
        assert float32_rank(U) == 2
        # what survives the head has the head's rank, however many tokens
        ex = xr.open_zarr(run / f"results/extract/rank2/step{step}.zarr")
        assert int(ex["logit_grad_rank_kept"].values.max()) <= 2
    # its saved optimizer state is of the factors: the update stage follows the displacement
    u = xr.open_zarr(run / "results/update/rank2/step64.zarr")
    assert u.attrs["direction"] == "displacement" and u.attrs["next_step"] == 128
    for model in ("toy-d8", "spam-a"):
        u = xr.open_zarr(run / f"results/update/{model}/step64.zarr")
        assert u.attrs["direction"] == "optimizer"


def test_the_figures_draw_the_experiments(run):
    s = open_summary(str(run / "results/summary.zarr")).load()
    toy = s.attrs["toy_models"]
    assert toy["rank2"]["head_rank"] == 2 and toy["toy-d8"]["head_rank"] is None
    assert toy["spam-a"]["language_kind"] == "spam" and toy["spam-a"]["learning_rate"] == 0.01
    assert toy["spam-b"]["language_vocab_size"] == 128
    texts = figure_texts(plot_head_rank(s))
    assert "rank2" in texts and "spam-a" not in texts
    texts = figure_texts(plot_spamlang(s))
    assert "spam-a" in texts and "spam-b" in texts and "rank2" not in texts
    for name in ("head_rank", "spamlang"):
        assert (run / f"results/figures/{name}.png").stat().st_size > 10_000
