"""The documentation: the site builds with warnings as errors, every code block runs or says
why not, every generated block is what its declaration or its run gives, and the README's links
lead somewhere.

Python blocks run on the shared run (the pages' model and step names are those of the embedded
default; they are mapped onto the tiny suite's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import tables
from tests.snake import REPO

pytestmark = pytest.mark.workflow

PAGES = tables.pages()
NOT_RUN = re.compile(r"<!-- not run: .+ -->\s*$")


def _blocks(page: Path) -> list[tuple[str, str, str]]:
    """Each fenced block of ``page``: its language, its code and the line before it."""
    text = page.read_text()
    out, pos = [], 0
    for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", text, flags=re.M | re.S):
        if m.start() < pos:
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        out.append((m.group(1).strip(), m.group(2), before))
        pos = m.end()
    return out


#: The Python blocks that run (a block marked ``<!-- not run: reason -->`` does not).
PYTHON = [
    (page, code)
    for page in PAGES
    for lang, code, before in _blocks(page)
    if lang == "python" and not NOT_RUN.match(before)
]


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    """Sphinx with -W: a broken cross-reference, a missing image or include, a page outside
    every table of contents fails the build."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "docs",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-5000:]
    built = {p.relative_to(tmp_path).with_suffix("") for p in tmp_path.rglob("*.html")}
    for page in (REPO / "docs").rglob("*.md"):
        assert page.relative_to(REPO / "docs").with_suffix("") in built, page


def test_every_code_block_runs_or_says_why_not():
    """A block that is not Python (Python blocks run, below) is preceded by a line
    ``<!-- not run: reason -->``; a directive (``{toctree}``, ``{eval-rst}``) is no code."""
    unmarked = [
        f"{page.relative_to(REPO)}: {lang or 'plain'} block {code[:60]!r}"
        for page in PAGES
        for lang, code, before in _blocks(page)
        if lang != "python" and not lang.startswith("{") and not NOT_RUN.match(before)
    ]
    assert not unmarked, "\n".join(unmarked)


def test_the_docs_have_python_examples():
    assert PYTHON


@pytest.mark.parametrize("block", range(len(PYTHON)), ids=lambda i: PYTHON[i][0].name)
def test_python_block_runs(run_dir, config, block):
    page, code = PYTHON[block]
    model, step = list(config["models"])[-1], max(config["steps"])
    code = code.replace("toy-d16", model).replace("step2048", f"step{step}")
    code = "import warnings\nwarnings.simplefilter('error')\n" + code
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=run_dir, timeout=300
    )
    assert r.returncode == 0, (
        f"{page.relative_to(REPO)} example failed:\n{code}\n{r.stderr[-3000:]}"
    )


def test_the_docs_numbers_are_the_runs():
    """The result tables equal what this checkout's finished runs give (the embedded default in
    results/, the presets in results/{run}/): `make run`, the preset's run, then
    `python -m pipeline.tables --run results`. Runs that are not here are not compared."""
    found = tables.run_blocks(REPO / "results")
    if not found:
        pytest.skip("no finished run under results/ (make run) to compare the docs' tables with")
    held = {n: b for page in PAGES for n, b in tables.blocks_in(page.read_text()).items()}
    stale = [n for n, body in found.items() if held.get(n) != body]
    assert not stale, (
        f"the docs' tables {stale} differ from the runs: run `python -m pipeline.tables --run results`"
    )


def test_result_tables_read_the_run(run_dir):
    """On the shared run, the table of models holds each model's mean loss over V at its last
    step, computed here from its extraction store with numpy."""
    import numpy as np
    import xarray as xr

    from pipeline import findings
    from pipeline.summary import open_summary

    ds = open_summary(str(run_dir / "results" / "summary.zarr")).load()
    text = findings.models(ds)
    for m in ds.model.values:
        step = int(ds.step.values[ds.loss_overall.sel(model=m).notnull().values][-1])
        loss = xr.open_zarr(run_dir / f"results/extract/{m}/step{step}.zarr").loss.values
        row = next(line for line in text.splitlines() if line.startswith(f"| {m} |"))
        assert row.split(" | ")[2] == f"{np.mean(loss):,.2f}", (row, np.mean(loss))


def test_the_readmes_links_lead_somewhere():
    for page in (REPO / "README.md", REPO / "config" / "README.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to {target}"
