"""The fit stage: the loss-deceleration fit of Zero-sum learning (Eq. 1) for one model.

Reads the overall loss curve of ``results/reduce/{model}.zarr``, fits the one-break BNSL
(``pipeline.maths.bnsl``) and writes ``results/fits/{model}.json``: one object whose keys are
``pipeline.schema.FIT_FIELDS``, ``flag`` and ``stderr_<name>``, with ``null`` for a number that
could not be estimated. ``write_table`` collects the models' JSONs into ``results/fits/bnsl.csv``;
the summary stage puts the same numbers into ``results/summary.zarr`` (``bnsl_*``).
"""

from __future__ import annotations

import csv
import json
import logging

from pipeline.config import FitConfig
from pipeline.maths.bnsl import BNSLFit, fit_bnsl
from pipeline.schema import overall
from pipeline.store import open_store

log = logging.getLogger(__name__)


def fit_model(reduce_path: str, out_path: str, cfg: FitConfig) -> BNSLFit:
    """Fit the overall loss curve of ``results/reduce/{model}.zarr``; write the fit as JSON."""
    red = open_store(reduce_path)
    model = red.attrs.get("model", "")
    fit = fit_bnsl(red["step"].values, red[overall("loss")].values, cfg)
    log.info(
        "%s: t_d %.4g, L_d %.4g, r_d %.4g, RSLE %.3g, flag %r",
        model,
        fit.t_d,
        fit.L_d,
        fit.r_d,
        fit.rsle,
        fit.flag,
    )
    with open(out_path, "w") as fh:
        json.dump({"model": model, **fit.as_row()}, fh, indent=1, allow_nan=False)
    return fit


def read_fit(path: str) -> dict:
    """One model's fit as written by ``fit_model`` (``null`` back as NaN)."""
    with open(path) as fh:
        row = json.load(fh)
    return {k: float("nan") if v is None else v for k, v in row.items()}


def write_table(json_paths: list[str], out_path: str) -> None:
    """Collect per-model fit JSONs into one CSV, one row per model (empty cells for NaN)."""
    rows = []
    for p in json_paths:
        with open(p) as fh:
            rows.append(json.load(fh))
    columns = list(rows[0]) if rows else ["model"]
    with open(out_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
