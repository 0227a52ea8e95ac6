"""The package's layers: the pure maths does no I/O, and building the DAG stays cheap (neither
torch nor matplotlib is imported while Snakemake parses the workflow)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.snake import REPO, snakemake_cmd

MATHS = sorted((REPO / "pipeline" / "maths").glob("*.py"))
#: What a pure module may import: the standard library's maths and containers, the array
#: libraries, and itself.
PURE_IMPORTS = {
    "__future__", "collections", "dataclasses", "math", "re", "typing", "warnings",
    "numpy", "torch", "scipy", "pipeline.maths",
}  # fmt: skip


@pytest.mark.parametrize("path", MATHS, ids=lambda p: p.name)
def test_maths_modules_do_no_io(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
            raise AssertionError(f"{path.name}:{node.lineno} opens a file")
        else:
            continue
        for name in names:
            allowed = any(name == p or name.startswith(p + ".") for p in PURE_IMPORTS)
            assert allowed, f"{path.name}:{node.lineno} imports {name}"


HEAVY = ("torch", "matplotlib")
PROBE = """
import atexit, sys
atexit.register(lambda: print("HEAVY:", [m for m in {heavy!r} if m in sys.modules]))
sys.argv = {argv!r}
from snakemake.cli import main
main()
"""


def test_building_the_dag_imports_neither_torch_nor_matplotlib(tmp_path):
    argv = snakemake_cmd(tmp_path, REPO / "tests" / "config.yaml", "-n")[2:]
    r = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, argv=argv)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "HEAVY: []" in r.stdout, r.stdout[-2000:]


@pytest.mark.parametrize(
    "module",
    [
        "pipeline.config",
        "pipeline.schema",
        "pipeline.plots",
        "pipeline.toy.schedule",
        # the jobs of the reductions, the summary and the data stage: a second of import each
        "pipeline.reduce",
        "pipeline.summary",
        "pipeline.data",
    ],
)
def test_light_modules_stay_light(module):
    code = f"import sys, {module}; print([m for m in {HEAVY!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"{module} imports {r.stdout.strip()}"


def test_the_probe_can_fail(tmp_path):
    """The import probe sees a heavy import when there is one."""
    code = PROBE.replace("from snakemake.cli import main\nmain()", "import torch")
    r = subprocess.run(
        [sys.executable, "-c", code.format(heavy=HEAVY, argv=["x"])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "HEAVY: ['torch']" in r.stdout


def test_every_stage_has_its_rule_file_and_module():
    """rules/X.smk ↔ pipeline/X.py (or package) for every stage."""
    for smk in (REPO / "rules").glob("*.smk"):
        if smk.stem == "common":
            continue
        module = REPO / "pipeline" / f"{smk.stem}.py"
        package = REPO / "pipeline" / smk.stem / "__init__.py"
        assert module.exists() or package.exists(), f"no pipeline module for {smk.name}"


def test_drawing_a_figure_imports_no_fit_library():
    """The figures evaluate the BNSL formula (``pipeline.maths.bnsl``); lmfit is the fit's."""
    code = "import sys, pipeline.plots.zsl; print('lmfit' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"
