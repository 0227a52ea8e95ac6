"""Every Python example of the README runs, on the shared run (the README's model and step
names are those of the embedded default; they are mapped onto the tiny suite's)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.snake import REPO

pytestmark = pytest.mark.workflow

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_the_readme_has_examples():
    assert BLOCKS


@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_readme_example_runs(run_dir, config, block):
    model, step = list(config["models"])[-1], max(config["steps"])
    code = BLOCKS[block].replace("toy-d16", model).replace("step2048", f"step{step}")
    code = "import warnings\nwarnings.simplefilter('error')\n" + code
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=run_dir, timeout=120
    )
    assert r.returncode == 0, f"README example {block} failed:\n{BLOCKS[block]}\n{r.stderr[-3000:]}"
