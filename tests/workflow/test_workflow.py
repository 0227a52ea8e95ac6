"""The whole workflow through Snakemake on the tiny test config (tests/config.yaml).

One real run in a temporary directory checks every store's dimensions, coordinates and value
ranges; a second run from scratch in another directory must write identical stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from pipeline.reduce import open_summary
from pipeline.schema import MEASUREMENTS
from pipeline.store import open_labeled
from tests.snake import REPO, job_stats, run_snakemake

pytestmark = pytest.mark.workflow

CONFIG = REPO / "tests" / "config.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, CONFIG, *args)


def run_ok(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    r = snakemake(workdir, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    run_ok(d)
    return d


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
    np.testing.assert_array_equal(ev["input_ids"].values[:, 1:], ev["targets"].values[:, :-1])
    np.testing.assert_array_equal(ev["bin"].values, freq["bin"].values[ev["target"].values])


def test_reduction_and_summary(run_dir, config):
    s = open_summary(str(run_dir / "results/summary.zarr"))
    assert list(s["model"].values) == list(config["models"])
    assert s["step"].values.tolist() == sorted(config["steps"])
    assert s["step"].dtype == np.int64
    assert s["loss"].dims == ("model", "step", "bin")
    assert s["improving"].dims == ("model", "step", "bin")
    assert s["saturation_step"].dims == ("model",)
    assert (s["loss_overall"] > 0).all()
    # the token-weighted mean of the bin means is the overall mean
    w = s["n_tokens"].isel(model=0)
    np.testing.assert_allclose((s["loss"] * w).sum("bin") / w.sum(), s["loss_overall"], rtol=1e-5)
    assert (run_dir / "results/figures/loss_by_bin.png").stat().st_size > 10_000
    assert (run_dir / "results/figures/loss_by_bin.pdf").exists()


def test_extraction_has_parameter_and_rank_measurements(run_dir, config):
    model = next(iter(config["models"]))
    ds = open_labeled(run_dir / f"results/extract/{model}/step{max(config['steps'])}.zarr")
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


def test_bnsl_table_has_one_row_per_model(run_dir, config):
    import csv

    with open(run_dir / "results/fits/bnsl.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == list(config["models"])
    for key in ("t_d", "L_d", "r_d", "L_hat_T", "L_T", "rsle", "flag", "converged"):
        assert key in rows[0], key


def test_training_log_reports_progress(run_dir):
    log = (run_dir / "results/logs/checkpoints/train_toy-d8.log").read_text()
    assert "steps/s" in log and "ETA" in log and "\r" not in log


def test_second_run_from_scratch_writes_identical_stores(run_dir, tmp_path):
    run_ok(tmp_path)
    stores = sorted(p.relative_to(run_dir) for p in (run_dir / "results").rglob("*.zarr"))
    assert len(stores) > 10
    for rel in stores:
        a, b = xr.open_zarr(run_dir / rel), xr.open_zarr(tmp_path / rel)
        xr.testing.assert_identical(a.load(), b.load())


def test_nothing_left_to_do(run_dir):
    r = run_ok(run_dir, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr


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


# --- the report, opened in a real browser ---------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=15000",
]


def chromium() -> str:
    """Debian's chromium, installed here when missing (root with apt only; else skip)."""
    import shutil

    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is missing and cannot be installed (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, env=env)
    r = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, text=True, env=env
    )
    if r.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"chromium could not be installed: {r.stderr[-500:]}")
    return shutil.which("chromium")


def dump_dom(browser: str, page: Path, profile: Path) -> str:
    r = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_report_shows_every_figure_in_a_browser(run_dir, tmp_path):
    import json
    import re

    from pipeline.plots import FIGURES

    r = snakemake(run_dir, "--report", "report.html")
    assert r.returncode == 0, r.stderr[-3000:]
    html = (run_dir / "report.html").read_text()
    block = re.search(r'<script id="results">\s*var results = (.*?);?\s*</script>', html, re.S)
    results = json.loads(block.group(1))
    for name in FIGURES:  # every figure, with its caption
        entry = results[f"results/figures/{name}.png"]
        assert entry["data_uri"].startswith("data:image/png") and len(entry["caption"]) > 100
    browser = chromium()
    # the report's app runs: the loading screen is hidden and the navigation is rendered
    dom = dump_dom(browser, run_dir / "report.html", tmp_path / "p1")
    body = re.sub(r"<(script|style).*?</\1>", "", dom, flags=re.S)
    assert 'id="loading-screen" style="display: none;"' in body and "<nav" in body
    # every embedded figure decodes and loads as an image in the browser
    imgs = "".join(
        f'<img id="{n}" src="{results[f"results/figures/{n}.png"]["data_uri"]}">' for n in FIGURES
    )
    page = tmp_path / "figures.html"
    page.write_text(
        f"<html><body>{imgs}<script>window.onload = () => {{ const ok = [...document.images]"
        ".filter(i => i.complete && i.naturalWidth > 100).map(i => i.id);"
        "document.body.insertAdjacentHTML('beforeend', `<p id=\"loaded\">${ok.join(',')}</p>`);"
        "};</script></body></html>"
    )
    rendered = re.sub(
        r"<script.*?</script>", "", dump_dom(browser, page, tmp_path / "p2"), flags=re.S
    )
    loaded = re.search(r'<p id="loaded">(.*?)</p>', rendered)
    assert loaded and set(loaded.group(1).split(",")) == set(FIGURES)


# --- incremental re-runs (these change run_dir, so they come last) ---------------------------


def planned_jobs(workdir: Path, config_path: Path) -> dict[str, int]:
    """The job counts of a dry run with ``config_path``, from Snakemake's job stats table."""
    r = run_snakemake(workdir, config_path, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    return job_stats(r.stdout)


def only_cheap(jobs: dict[str, int], n_models: int) -> dict[str, int]:
    """What remains of a job list once the expected per-model and plot jobs are taken out."""
    from pipeline.plots import FIGURES

    rest = dict(jobs)
    for name, n in [
        ("reduce", n_models),
        ("fit_bnsl", n_models),
        ("summary", 1),
        ("fit_table", 1),
        ("all", 1),
    ] + [(f"plot_{f}", 1) for f in FIGURES]:
        assert rest.pop(name, 0) == n, (name, jobs)
    return rest


def test_editing_plot_code_reruns_only_plots(run_dir, repo):
    code = repo / "pipeline" / "plots.py"
    before = code.stat()
    try:
        os.utime(code, None)  # as an edit would
        jobs = planned_jobs(run_dir, CONFIG)
    finally:
        os.utime(code, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert set(jobs) == {"all"} | {j for j in jobs if j.startswith("plot_")}
    assert len(jobs) == 10


def test_editing_plot_config_reruns_only_plots(run_dir, config, tmp_path):
    changed = tmp_path / "config.yaml"
    changed.write_text(
        yaml.safe_dump({**config, "plots": {"dpi": config["plots"]["dpi"] + 10}}, sort_keys=False)
    )
    jobs = planned_jobs(run_dir, changed)
    assert set(jobs) == {"all"} | {j for j in jobs if j.startswith("plot_")}


def test_adding_a_model_reruns_only_its_jobs(run_dir, config, tmp_path):
    models = {
        **config["models"],
        "toy-d24": {"source": "toy", "hidden_size": 24, "layers": 1, "heads": 2},
    }
    changed = tmp_path / "config.yaml"
    changed.write_text(yaml.safe_dump({**config, "models": models}, sort_keys=False))
    jobs = planned_jobs(run_dir, changed)
    # the new model's training and extractions, and every per-model and cheap rule
    assert jobs.pop("train_toy") == 1
    assert jobs.pop("extract") == len(config["steps"])
    assert jobs.pop("reduce") == 1 and jobs.pop("fit_bnsl") == 1
    assert only_cheap({**jobs, "reduce": 3, "fit_bnsl": 3}, 3) == {}


def test_adding_a_step_reruns_only_its_extractions_and_changes_no_other_store(
    run_dir, config, tmp_path
):
    new_step = 32  # saved by the toy training schedule, not in tests/config.yaml
    assert new_step not in config["steps"]
    changed = tmp_path / "config.yaml"
    changed.write_text(
        yaml.safe_dump({**config, "steps": sorted([*config["steps"], new_step])}, sort_keys=False)
    )
    jobs = planned_jobs(run_dir, changed)
    n_models = len(config["models"])
    assert jobs.pop("extract") == n_models  # one new extraction per model, nothing upstream
    assert only_cheap(jobs, n_models) == {}

    def fingerprint():
        out = {}
        for store in (run_dir / "results/extract").rglob("step*.zarr"):
            files = sorted(p for p in store.rglob("*") if p.is_file())
            out[store] = [
                (p.relative_to(store), p.stat().st_mtime_ns, p.read_bytes()) for p in files
            ]
        return out

    before = fingerprint()
    r = run_snakemake(run_dir, changed)
    assert r.returncode == 0, r.stderr[-3000:]
    after = fingerprint()
    assert set(after) - set(before) == {
        run_dir / f"results/extract/{m}/step{new_step}.zarr" for m in config["models"]
    }
    for store, files in before.items():
        assert after[store] == files, store  # untouched: same bytes, same mtimes
    s = open_summary(str(run_dir / "results/summary.zarr"))
    assert new_step in s["step"].values


def test_toy_saturation_script_reproduces_the_workflows_losses(run_dir, config):
    """benchmarks/toy_saturation.py trains the same models and measures V in-loop with a plain
    cross-entropy; its overall losses must be the workflow's (extraction + reduction)."""
    script = REPO / "benchmarks" / "toy_saturation.py"
    r = subprocess.run(
        [sys.executable, str(script), "--config", str(CONFIG)],
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
            want = s["loss_overall"].sel(model=model, step=step).item()
            np.testing.assert_allclose(report["curve"][str(step)], want, atol=2e-4)
        assert report["loss_last"] == report["curve"][str(max(config["steps"]))]
