"""The shared run's two reports in a real browser: its own page (results/report.html), which
opens on the figures beside their captions and whose explorer plots the summary's values, and
the provenance report of ``snakemake --report``, which holds every figure with its caption."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.snake import TINY_CONFIG, run_ok

pytestmark = pytest.mark.workflow

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


def debian_binary(binary: str, package: str) -> str:
    """A binary of a Debian package, installed here when missing (root with apt only; else
    skip)."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{binary} is missing and cannot be installed (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, env=env)
    r = subprocess.run(
        ["apt-get", "install", "-y", "-qq", package], capture_output=True, text=True, env=env
    )
    if r.returncode != 0 or not shutil.which(binary):
        pytest.skip(f"{package} could not be installed: {r.stderr[-500:]}")
    return shutil.which(binary)


def chromium() -> str:
    return debian_binary("chromium", "chromium")


def chromedriver() -> str:
    return debian_binary("chromedriver", "chromium-driver")


def dump_dom(browser: str, page: Path, profile: Path) -> str:
    r = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_report_shows_every_figure_in_a_browser(run_dir, config, tmp_path):
    from pipeline.plan import Plan

    FIGURES = Plan(config).figures()
    report = tmp_path / "provenance.html"  # written beside the run, which stays as it was
    run_ok(run_dir, TINY_CONFIG, "--report", str(report))
    html = report.read_text()
    block = re.search(r'<script id="results">\s*var results = (.*?);?\s*</script>', html, re.S)
    results = json.loads(block.group(1))
    figures = {k for k in results if k.startswith("results/figures/")}
    assert figures == {f"results/figures/{name}.png" for name in FIGURES}
    for name in FIGURES:  # every figure, with its caption
        entry = results[f"results/figures/{name}.png"]
        assert entry["data_uri"].startswith("data:image/png") and len(entry["caption"]) > 100
    browser = chromium()
    # the report's app runs: the loading screen is hidden and the navigation is rendered
    dom = dump_dom(browser, report, tmp_path / "p1")
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


# --- the run's own page, results/report.html, driven in Chromium by Selenium -----------------

PLOTTED = """
const out = [];
(function walk(node) {
  if (!node) return;
  if (node.marktype && node.marktype !== "group") {
    for (const it of node.items || []) {
      const d = it.datum;
      if (d && "step" in d && "value" in d) out.push({model: d.model, step: d.step,
        bin: d.bin === undefined ? null : d.bin, update_batch: d.update_batch === undefined ? null : d.update_batch,
        value: d.value});
    }
    return;
  }
  for (const it of node.items || []) walk(it);
})(window.explorerView.scenegraph().root);
return out;
"""


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager downloads nothing
    options = webdriver.ChromeOptions()
    options.binary_location = chromium()
    for flag in CHROMIUM_FLAGS[1:-1]:
        options.add_argument(flag)
    options.add_argument("--headless=new")
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver()))
    yield driver
    driver.quit()


def test_the_runs_page_opens_on_its_figures_and_explores_the_summary(run_dir, config, browser):
    import numpy as np
    import xarray as xr
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from pipeline.plan import Plan

    page = run_dir / "results/report.html"
    print(f"report.html of the tiny run: {page.stat().st_size / 1e6:.1f} MB")
    browser.get(page.as_uri())
    figures = browser.find_elements(By.CSS_SELECTOR, "#figures.active figure.figure")
    assert [f.get_attribute("id") for f in figures] == [
        f"figure-{n}" for n in Plan(config).figures()
    ]
    for f in figures:  # each image loads, its caption beside it
        img = f.find_element(By.TAG_NAME, "img")
        assert browser.execute_script("return arguments[0].naturalWidth", img) > 100
        assert len(f.find_element(By.TAG_NAME, "figcaption").text) > 100
    summary = xr.open_zarr(run_dir / "results/summary.zarr").load()

    def shown(view: str, name: str, models: list[str]):
        want = {"view": view, "name": name, "models": models}
        WebDriverWait(browser, 60).until(
            lambda b: (
                b.execute_script("return document.body.dataset.rendered || ''")
                and json.loads(b.execute_script("return document.body.dataset.rendered")) == want
            )
        )
        plotted = {
            (p["model"], p["step"], p["bin"], p["update_batch"]): p["value"]
            for p in browser.execute_script(PLOTTED)
        }
        v = summary[name].sel(model=models)
        expected = {}
        for idx in np.argwhere(np.isfinite(v.values)):
            at = {d: v[d].values[i] for d, i in zip(v.dims, idx)}
            key = (str(at["model"]), int(at["step"]), at.get("bin"), at.get("update_batch"))
            key = tuple(None if k is None else (k if isinstance(k, str) else int(k)) for k in key)
            expected[key] = float(v.values[tuple(idx)])
        assert plotted.keys() == expected.keys(), (view, name)
        np.testing.assert_allclose(
            [plotted[k] for k in expected], list(expected.values()), rtol=1e-5
        )

    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="explorer"]').click()
    models = [str(m) for m in summary.model.values]
    Select(browser.find_element(By.ID, "view")).select_by_value("bins")
    first = Select(browser.find_element(By.ID, "measure")).first_selected_option.get_attribute(
        "value"
    )
    shown("bins", first, models)
    browser.find_element(By.CSS_SELECTOR, f'#models input[value="{models[0]}"]').click()
    shown("bins", first, models[1:])
    Select(browser.find_element(By.ID, "measure")).select_by_value("loss")
    shown("bins", "loss", models[1:])
    Select(browser.find_element(By.ID, "view")).select_by_value("heatmap")
    shown("heatmap", "loss", models[1:])
    Select(browser.find_element(By.ID, "view")).select_by_value("overall")
    Select(browser.find_element(By.ID, "measure")).select_by_value("loss_overall")
    shown("overall", "loss_overall", models[1:])
    Select(browser.find_element(By.ID, "view")).select_by_value("single_step")
    Select(browser.find_element(By.ID, "measure")).select_by_value("eval_D")
    shown("single_step", "eval_D", models[1:])
