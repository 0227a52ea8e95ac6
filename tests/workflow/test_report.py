"""The report of the shared run (``snakemake --report``), opened in a real browser: every figure
of the registry is there with its caption, and loads."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.plots import FIGURES
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


def chromium() -> str:
    """Debian's chromium, installed here when missing (root with apt only; else skip)."""
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
    report = tmp_path / "report.html"  # written beside the run, which stays as it was
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
