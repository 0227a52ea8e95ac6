"""The whole workflow through Snakemake on the tiny test config (tests/config.yaml).

The session's shared run (``run_dir``, tests/workflow/conftest.py) is checked store by store:
dimensions, coordinates, value ranges, provenance; a second run from scratch in another
directory must write identical stores.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import pipeline
from pipeline.config import digest, section
from pipeline.plan import Plan
from pipeline.schema import FIT_FIELDS, MEASUREMENTS, bnsl, overall
from pipeline.summary import open_summary
from tests.snake import REPO, TINY_CONFIG, run_ok

pytestmark = pytest.mark.workflow

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def expected_stores(config: dict) -> set[Path]:
    """Every Zarr store a run of the tiny (toy) config writes, from the config."""
    models, steps = config["models"], config["steps"]
    return {
        *(Path(f"results/extract/{m}/step{s}.zarr") for m in models for s in steps),
        *(Path(f"results/update/{m}/step{s}.zarr") for m in models for s in steps),
        *(Path(f"results/reduce/{m}.zarr") for m in models),
        *(Path(f"results/reduce/{m}_update.zarr") for m in models),
        Path("results/data/toy/update.zarr"),
        Path(f"results/data/{config['eval']['name']}/eval.zarr"),
        Path(f"results/data/{config['frequency']['name']}/frequency.zarr"),
        Path("results/data/toy/corpus.zarr"),
        Path("results/summary.zarr"),
    }


def stores_of(run: Path) -> set[Path]:
    return {p.relative_to(run) for p in (run / "results").rglob("*.zarr")}


def test_extraction_stores(run_dir, config):
    n_tokens = config["eval"]["sequences"] * config["eval"]["context_length"]
    for model in config["models"]:
        for step in config["steps"]:
            ds = xr.open_zarr(run_dir / f"results/extract/{model}/step{step}.zarr")
            assert ds["step"].values.tolist() == [step]
            assert ds.sizes["step"] == 1 and ds.sizes["token"] == n_tokens
            assert set(MEASUREMENTS) <= set(ds.data_vars)
            assert {"target", "bin"} <= set(ds.coords)
            for key in (
                "model",
                "step",
                "revision",
                "weights_sha256",
                "dtype",
                "device",
                "pipeline_version",
            ):
                assert key in ds.attrs, key
            assert ds.attrs["model"] == model and ds.attrs["step"] == step
            v = ds.load()
            assert (v["loss"] > 0).all() and np.isfinite(v["loss"]).all()
            assert ((v["p_target"] > 0) & (v["p_target"] < 1)).all()
            for m in MEASUREMENTS:
                if m.startswith("cos"):
                    assert (np.abs(v[m]) <= 1 + 1e-6).all(), m
                if m.startswith("norm"):
                    assert (v[m] >= 0).all(), m
            np.testing.assert_allclose(v["p_target"], np.exp(-v["loss"]), rtol=1e-5)


def test_data_stores(run_dir, config):
    freq = xr.open_zarr(run_dir / "results/data/toy/frequency.zarr")
    assert freq.sizes["vocab"] == config["toy"]["language"]["vocab_size"]
    assert freq["count"].sum() == config["toy"]["train_tokens"]
    ev = xr.open_zarr(run_dir / "results/data/toy/eval.zarr")
    assert ev["input_ids"].dims == ("sequence", "position")
    assert ev["input_ids"].shape == (config["eval"]["sequences"], config["eval"]["context_length"])
    np.testing.assert_array_equal(ev["input_ids"].values[:, 1:], ev["targets"].values[:, :-1])
    np.testing.assert_array_equal(ev["bin"].values, freq["bin"].values[ev["target"].values])


def test_every_store_and_figure_is_written(run_dir, config):
    assert stores_of(run_dir) == expected_stores(config)
    figures = Plan(config).figures()
    assert not {"head_rank", "spamlang"} & set(figures)  # experiments this run does not hold
    drawn = {p.stem for p in (run_dir / "results/figures").glob("*.png")}
    assert drawn == set(figures)
    for name in figures:
        size = (run_dir / f"results/figures/{name}.png").stat().st_size
        assert size > 10_000, (name, size)
        assert (run_dir / f"results/figures/{name}.pdf").stat().st_size > 0, name


def test_reduction_and_summary(run_dir, config):
    s = open_summary(str(run_dir / "results/summary.zarr"))
    assert list(s["model"].values) == list(config["models"])
    assert s["step"].values.tolist() == sorted(config["steps"])
    assert s["step"].dtype == np.int64
    assert s["loss"].dims == ("model", "step", "bin")
    assert s["improving"].dims == ("model", "step", "bin")
    assert s["saturation_step"].dims == ("model",)
    assert (s[overall("loss")] > 0).all()
    # the token-weighted mean of the bin means is the overall mean, for every model
    w = s["n_tokens"]
    np.testing.assert_allclose((s["loss"] * w).sum("bin") / w.sum("bin"), s[overall("loss")], 1e-5)
    # the per-model reductions, stacked
    for model in config["models"]:
        red = xr.open_zarr(run_dir / f"results/reduce/{model}.zarr")
        np.testing.assert_array_equal(
            s[overall("loss")].sel(model=model).values, red[overall("loss")].values
        )


def test_summary_holds_the_fits_and_the_provenance(run_dir, config):
    s = open_summary(str(run_dir / "results/summary.zarr")).load()
    models = list(config["models"])
    with open(run_dir / "results/fits/bnsl.csv") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh) if r["curve"] == "eval"}
    for model in models:
        fit = json.loads((run_dir / f"results/fits/{model}.json").read_text())
        for field in FIT_FIELDS:
            want = np.nan if fit[field] is None else float(fit[field])
            np.testing.assert_equal(s[bnsl(field)].sel(model=model).item(), want)
            # the table holds the same row (an empty cell for null)
            assert rows[model][field] == ("" if fit[field] is None else str(fit[field])), field
        assert s.attrs["bnsl_flag"][model] == fit["flag"]
    a = s.attrs
    assert a["config_sha256"] == digest(config)
    assert a["fit"] == section(config, "fit")
    assert a["saturation_tolerance"] == config["reduce"]["saturation_tolerance"]
    assert a["dissent_threshold"] == config["reduce"]["dissent_threshold"]
    assert set(a["bnsl_flag"]) == set(models)
    assert set(a["weights_sha256"]) == set(models)
    for model in models:
        shas = [
            xr.open_zarr(run_dir / f"results/extract/{model}/step{step}.zarr").attrs[
                "weights_sha256"
            ]
            for step in sorted(config["steps"])
        ]
        assert a["weights_sha256"][model] == shas
    assert a["pipeline_version"] == pipeline.__version__


def test_every_store_opens_with_plain_xarray_names_as_coordinates(run_dir, config):
    """No warning from any store, and every named dimension is labelled by strings."""
    from pipeline.verify import stores

    for path in stores(run_dir / "results"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = xr.open_zarr(path)
        for dim in {"model", "param"} & set(ds.dims):
            assert ds[dim].dtype.kind == "T", (path, dim, ds[dim].dtype)
    summary = xr.open_zarr(run_dir / "results/summary.zarr")
    assert sorted(str(m) for m in summary.model.values) == sorted(config["models"])
    model = list(config["models"])[-1]
    assert summary.sel(model=model).sizes["step"] == len(config["steps"])


def test_extraction_has_parameter_and_rank_measurements(run_dir, config):
    model = next(iter(config["models"]))
    ds = xr.open_zarr(run_dir / f"results/extract/{model}/step{max(config['steps'])}.zarr")
    names = list(ds["param"].values)
    assert any(n.endswith("embed_in.weight") for n in names) and "lm_head.weight" in names
    dw = ds["param_interference"].sel(param="lm_head.weight").values
    assert 0 <= dw.item() <= 1
    assert (ds["param_norm_grad"] >= 0).all()
    kept = ds["kept_fraction"].values
    assert ((kept >= 0) & (kept <= 1 + 1e-5)).all()
    ranks = ds["logit_grad_rank"].values[0]
    assert (np.diff(ranks) >= 0).all() and ranks[0] == 1
    assert ds["rank_tokens"].values[-1] == config["extract"]["rank_tokens"]


def test_bnsl_table_has_a_row_per_model_and_curve(run_dir, config):
    """The evaluation loss at checkpoints and the toy training loss at every step, each fit
    named by its curve; the training curve is the one the toy training recorded."""
    with open(run_dir / "results/fits/bnsl.csv") as fh:
        rows = list(csv.DictReader(fh))
    models = list(config["models"])
    assert [(r["model"], r["curve"]) for r in rows] == [
        *((m, "eval") for m in models),
        *((m, "train") for m in models),
    ]
    for key in ("t_d", "L_d", "r_d", "L_hat_T", "L_T", "rsle", "flag", "converged", "n_points"):
        assert key in rows[0], key
    steps = config["toy"]["train"]["steps"]
    for r in rows:
        if r["curve"] == "train":
            curve = (run_dir / f"results/checkpoints/{r['model']}/train_loss.tsv").read_text()
            lines = curve.splitlines()
            assert lines[0] == "step\tloss" and len(lines) == steps + 1
            assert float(r["T"]) == steps and float(r["L_T"]) == float(lines[-1].split()[1])
            assert 0 < int(r["n_points"]) <= 200


def test_logs_report_progress(run_dir, config):
    for model, spec in config["models"].items():
        if spec["source"] == "toy":
            log = (run_dir / f"results/logs/checkpoints/train_{model}.log").read_text()
            assert "steps/s" in log and "ETA" in log and "\r" not in log, model
        for step in config["steps"]:
            log = (run_dir / f"results/logs/extract/{model}/step{step}.log").read_text()
            assert "tokens/s" in log and "\r" not in log, (model, step)
    assert (run_dir / "results/logs/summary.log").exists()


def test_nothing_left_to_do(run_dir):
    r = run_ok(run_dir, TINY_CONFIG, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr


def test_second_run_from_scratch_writes_identical_stores(run_dir, config, tmp_path):
    run_ok(tmp_path)
    stores = stores_of(run_dir)
    assert stores == stores_of(tmp_path) == expected_stores(config)
    for rel in sorted(stores):
        a, b = xr.open_zarr(run_dir / rel), xr.open_zarr(tmp_path / rel)
        xr.testing.assert_identical(a.load(), b.load())


def test_toy_saturation_script_reproduces_the_workflows_losses(run_dir, config):
    """benchmarks/toy_saturation.py trains the same models and measures V in-loop with a plain
    cross-entropy; its overall losses must be the workflow's (extraction + reduction)."""
    script = REPO / "benchmarks" / "toy_saturation.py"
    r = subprocess.run(
        [sys.executable, str(script), "--config", str(TINY_CONFIG)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    reports = {x["model"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert set(reports) == set(config["models"])
    s = open_summary(str(run_dir / "results/summary.zarr")).load()
    for model, report in reports.items():
        for step in config["steps"]:
            want = s[overall("loss")].sel(model=model, step=step).item()
            # the script rounds to 4 decimals (an error of at most 5e-5); the two float32 means
            # of the same losses differ by about 1e-6 beside that
            np.testing.assert_allclose(report["curve"][str(step)], want, rtol=0, atol=6e-5)
        assert report["loss_last"] == report["curve"][str(max(config["steps"]))]


def test_lint_reports_nothing(repo):
    r = subprocess.run(
        [*SNAKEMAKE, "--lint", "--snakefile", str(repo / "Snakefile")],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Lints for" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_code_style(repo):
    """ruff (lint and format) and snakefmt settle style; a diff here is a failure."""
    bin_dir = Path(sys.executable).parent
    for cmd in (
        [bin_dir / "ruff", "check", "pipeline", "scripts", "tests", "benchmarks"],
        [bin_dir / "ruff", "format", "--check", "pipeline", "scripts", "tests", "benchmarks"],
        [bin_dir / "snakefmt", "--check", "Snakefile", "rules"],
    ):
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=repo)
        assert r.returncode == 0, f"{cmd[0].name}: {r.stdout}{r.stderr}"


@pytest.mark.parametrize("which", ["first", "last"])
def test_trained_checkpoints_match_masked_autograd_on_every_token(run_dir, config, which):
    """Every evaluation token of a trained (and an untrained) checkpoint of every model, against
    the papers' method (autograd through the loss, the logit gradient masked to the true or the
    false entries) in float64: the stored float32 measurements keep float32 precision."""
    import torch

    from pipeline.checkpoints import load_checkpoint
    from pipeline.extract import final_hidden
    from tests.reference import masked_autograd_at_h

    step = (min if which == "first" else max)(config["steps"])
    ev = xr.open_zarr(run_dir / "results/data/toy/eval.zarr")
    ids = torch.from_numpy(ev["input_ids"].values.astype(np.int64))
    targets = torch.from_numpy(ev["target"].values.astype(np.int64))
    for model in config["models"]:
        net = load_checkpoint(run_dir / f"results/checkpoints/{model}/step{step}")
        with torch.no_grad():
            h = final_hidden(net, ids).reshape(-1, net.config.hidden_size).double()
        head = net.get_output_embeddings().double()
        ref = masked_autograd_at_h(h, head, targets)
        got = xr.open_zarr(run_dir / f"results/extract/{model}/step{step}.zarr").isel(step=0)
        for name in MEASUREMENTS:
            r, g = ref[name].detach().numpy(), got[name].values.astype(np.float64)
            if name.startswith("cos"):
                err = np.abs(g - r).max()
                assert err <= 2e-6, (model, step, name, err)
            else:
                err = (np.abs(g - r) / np.abs(r)).max()
                assert err <= 5e-5, (model, step, name, err)
