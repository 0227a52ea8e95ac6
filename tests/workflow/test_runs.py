"""One folder per run: two configs run one after the other in one directory leave each other's
results, figures and provenance alone."""

from __future__ import annotations

from pathlib import Path

import xarray as xr
import yaml

from tests.snake import TINY_CONFIG, fingerprint, planned_jobs, run_ok


def test_a_named_run_leaves_the_default_runs_files_alone(run_copy: Path, tmp_path: Path):
    second = yaml.safe_load(TINY_CONFIG.read_text())
    second["run"] = "second"
    second["models"] = {"toy-d8": second["models"]["toy-d8"]}
    second["steps"] = [0, 4, 64]
    config = tmp_path / "second.yaml"
    config.write_text(yaml.safe_dump(second))

    def first_runs_files() -> dict:
        return {
            k: v for k, v in fingerprint(run_copy).items() if not k.startswith("results/second")
        }

    before = first_runs_files()
    run_ok(run_copy, config)
    after = first_runs_files()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not [k for k in changed if k.startswith("results/")], changed[:10]

    out = run_copy / "results/second"
    assert (out / "figures/dissent.png").stat().st_size > 0
    summary = xr.open_zarr(out / "summary.zarr")
    assert list(summary.model.values) == ["toy-d8"] and list(summary.step.values) == [0, 4, 64]
    assert summary.attrs["run"] == "second" and summary.attrs["results"] == "results/second"
    assert summary.attrs["config_files"] == [str(config)]
    first = xr.open_zarr(run_copy / "results/summary.zarr")
    assert first.attrs["run"] == "" and first.sizes["model"] == 2

    # each run is complete and up to date after the other
    assert planned_jobs(run_copy, TINY_CONFIG) == {}
    assert planned_jobs(run_copy, config) == {}
