"""The example notebook docs/notebooks/one-checkpoint.ipynb runs from top to bottom, offline, in
a kernel of this Python (the virtual environment's own ``python3``, not a user's kernelspec)."""

from __future__ import annotations

import time

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.workflow

NOTEBOOK = "docs/notebooks/one-checkpoint.ipynb"


def test_the_example_notebook_runs_without_errors(repo, tmp_path, monkeypatch):
    nb = nbformat.read(repo / NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), (
        f"{NOTEBOOK} is stored with outputs; clear them"
    )
    # the environment's kernelspec before a user's: jupyter_client then runs "python" as this
    # interpreter (sys.executable)
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    start = time.perf_counter()
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on an error
    print(f"{NOTEBOOK} ran in {time.perf_counter() - start:.1f} s")
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any("image/png" in o.get("data", {}) for o in code[-1].outputs), "no plot"
