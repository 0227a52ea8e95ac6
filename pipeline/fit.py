"""The fit stage: the loss-deceleration fit of Zero-sum learning (Eq. 1) for one model.

Two curves can be fitted with the one-break BNSL (``pipeline.maths.bnsl``):

* ``eval``: the overall evaluation loss at the checkpoints, from ``results/reduce/{model}.zarr``
  → ``results/fits/{model}.json``;
* ``train``: the training loss at every step, as the Zero-sum learning paper fits it (Fig. 1,
  Table 2; ``fit.train``: first 100 steps dropped, a log-spaced moving average, a log-uniform
  subsample), from a (step, loss) table: the toy training writes
  ``results/checkpoints/{model}/train_loss.tsv``, a hub model names one (``train_loss``, e.g.
  an exported training log) → ``results/fits/{model}_train.json``.

Each JSON is one object whose keys are ``model``, ``curve``, ``pipeline.schema.FIT_FIELDS``,
``flag`` and ``stderr_<name>``, with ``null`` for a number that could not be estimated.
``write_table`` collects them into ``results/fits/bnsl.csv``, one row per (model, curve); the
summary stage puts the evaluation fits into ``results/summary.zarr`` (``bnsl_*``).
"""

from __future__ import annotations

import csv
import json
import logging
import os

import numpy as np

from pipeline.config import FitConfig
from pipeline.maths.bnsl import BNSLFit, fit_bnsl
from pipeline.schema import overall
from pipeline.store import open_store

log = logging.getLogger(__name__)


#: The toy training's per-step loss, beside its checkpoints.
TRAIN_CURVE = "train_loss.tsv"


def fit_model(reduce_path: str, out_path: str, cfg: FitConfig) -> BNSLFit:
    """Fit the overall loss curve of ``results/reduce/{model}.zarr``; write the fit as JSON."""
    red = open_store(reduce_path)
    model = red.attrs.get("model", "")
    fit = fit_bnsl(red["step"].values, red[overall("loss")].values, cfg)
    _write_fit(fit, model, "eval", out_path)
    return fit


def fit_train_curve(
    curve_path: str, model: str, out_path: str, cfg: FitConfig, reader: str | None = None
) -> BNSLFit:
    """Fit a model's training-loss curve, a table (``read_train_curve``) or, with ``reader`` a
    checkpoint format, the training-loss log of the checkpoint beside ``curve_path`` (a Trainer's
    ``trainer_state.json``); write the fit as JSON."""
    steps, loss = read_curve(curve_path, reader)
    fit = fit_bnsl(steps, loss, cfg)
    _write_fit(fit, model, "train", out_path)
    return fit


def read_curve(curve_path: str, reader: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A training-loss curve (steps, losses): a table (``read_train_curve``) or, with ``reader``
    a checkpoint format, the log of the checkpoint beside ``curve_path``."""
    if reader is None:
        return read_train_curve(curve_path)
    from pipeline import formats

    return formats.get(reader).read_train_log(os.path.dirname(curve_path))


def _write_fit(fit: BNSLFit, model: str, curve: str, out_path: str) -> None:
    log.info(
        "%s (%s loss): t_d %.4g, L_d %.4g, r_d %.4g, RSLE %.3g, %d points, flag %r",
        *(model, curve, fit.t_d, fit.L_d, fit.r_d, fit.rsle, fit.n_points, fit.flag),
    )
    with open(out_path, "w") as fh:
        json.dump({"model": model, "curve": curve, **fit.as_row()}, fh, indent=1, allow_nan=False)


def write_train_curve(losses: list[tuple[int, float]], path) -> None:
    """Write (step, loss) rows as a tab-separated table with a header, atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write("step\tloss\n")
        fh.writelines(f"{s}\t{v!r}\n" for s, v in losses)
    os.replace(tmp, path)


def read_train_curve(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A (step, loss) table: tab- or comma-separated, with a header naming ``step`` and
    ``loss`` columns (others are ignored), e.g. an exported training log. A ``ValueError``
    names the file and what is wrong."""
    with open(path, newline="") as fh:
        text = fh.read()
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    if not rows or not {"step", "loss"} <= set(rows[0]):
        raise ValueError(
            f"{path}: a training curve needs a header with 'step' and 'loss' columns "
            f"(tab- or comma-separated); found {list(rows[0]) if rows else 'no rows'}"
        )
    try:
        steps = np.array([float(r["step"]) for r in rows])
        loss = np.array([float(r["loss"]) for r in rows])
    except ValueError as err:
        raise ValueError(f"{path}: a step or loss is not a number ({err})") from None
    if not np.isfinite(loss).any():
        raise ValueError(f"{path}: no finite loss")
    return steps, loss


def read_fit(path: str) -> dict:
    """One model's fit as written by ``fit_model`` (``null`` back as NaN)."""
    with open(path) as fh:
        row = json.load(fh)
    return {k: float("nan") if v is None else v for k, v in row.items()}


def write_table(json_paths: list[str], out_path: str) -> None:
    """Collect the fit JSONs into one CSV, one row per (model, curve), the ``curve`` column
    naming which loss curve the row fits (empty cells for NaN)."""
    rows = []
    for p in json_paths:
        with open(p) as fh:
            rows.append(json.load(fh))
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["model"]
    with open(out_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
