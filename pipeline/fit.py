"""The fit stage: the loss-deceleration fit of Zero-sum learning (Eq. 1) for one model.

Two curves can be fitted with the one-break BNSL (its formula: ``pipeline.maths.bnsl``):

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
summary stage puts both into ``results/summary.zarr`` (``bnsl_*``, ``bnsl_train_*``).

**The fit** (``fit_bnsl``) runs in two stages, in log space over the steps t > ``min_step``
(the initial transient is left out), after the optional preprocessing: the best point of the
variable-projection grid for each value of ``a`` (``pipeline.maths.bnsl.grid_starts``), then a
bounded least-squares fit with lmfit (``least_squares``, trust-region reflective) over ``ln_b``,
c0, c1, ``log10_d1``, f1 (and a) from each start, keeping the best (a single start can end in a
local minimum at a = 0).

The reported quantities follow ZSL: the deceleration step t_d = d1, the loss at deceleration
L_d = b · d1^(-c0) (the pre-break power law at d1), the post-break slope r_d = c0 + c1, and the
extrapolation of the post-break power law to the last step T,
log L̂_T = log L_d - r_d · log(T / t_d), compared with the observed loss L_T. With a != 0 the
power laws describe the reducible loss L - a, so L_d = a + b · d1^(-c0) and
L̂_T = a + b · d1^(-c0) · (T / t_d)^(-r_d) (both reduce to the ZSL definitions for a = 0).
RSLE, the root mean squared log error of the fitted BNSL curve over the fitted points, measures
the quality of the fit.

A fit never raises on bad data. It returns a ``BNSLFit`` whose ``flag`` says what went wrong,
and warns with ``FitWarning``. With NaN outputs: ``"too_few_points"`` (no more fitted points than
free parameters), ``"a_above_loss"`` (a fixed ``a`` at or above the smallest fitted loss),
``"no_convergence"``. With the fitted numbers kept: ``"no_break"`` (the break lies at the edge of
the fitted step range, or the BNSL fits no better than a single power law by an F-test; t_d, L_d
and r_d then do not describe a deceleration) and ``"at_bound"`` (c0, c1 or the upper bound of f1
is active: the break is not resolved within the bounds). ``flag == ""`` means the fit is fine.
A curve that is simply not BNSL-shaped is not flagged; its RSLE says so. L_T is always the
observed (unsmoothed) loss. The cost of a fit grows linearly with the number of points (~10 ms
for Pythia's 146 checkpoints after step 100 with ``a`` fixed, ~0.1 s with ``a`` fitted; seconds
for 10^5 points): subsample dense curves.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config import FitConfig
from pipeline.maths.bnsl import (
    BOUND_TOLERANCE,
    C0_BOUNDS,
    C1_BOUNDS,
    EDGE_FRACTION,
    F1_BOUNDS,
    GRID_A_FRACTIONS,
    NO_BREAK_P,
    break_p_value,
    grid_starts,
    log_model,
    near_bounds,
    power_law_sse,
    smooth_log,
    smooth_log_spaced,
    subsample_log,
)
from pipeline.schema import FIT_FIELDS, STDERR_FIELDS, overall
from pipeline.store import open_store

if TYPE_CHECKING:  # imported where a fit runs: the summary only reads fits
    import lmfit

log = logging.getLogger(__name__)


_NAN = float("nan")

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


# -- the fit -------------------------------------------------------------------------------------


class FitWarning(UserWarning):
    """A loss-curve fit that is flagged (``BNSLFit.flag`` is not empty)."""


@dataclass(frozen=True)
class BNSLFit:
    """The result of ``fit_bnsl``; NaN where the fit failed (see ``flag``).

    Attributes
    ----------
    t_d : the deceleration step, d1.
    L_d : the loss at deceleration, a + b · d1^(-c0) (b · d1^(-c0) for a = 0, as in ZSL).
    r_d : the power-law slope after the break, c0 + c1.
    L_hat_T : the post-break power law extrapolated to T, a + (L_d - a) · (T / t_d)^(-r_d).
    L_T : the observed (unsmoothed) loss at T. T, t_first : the last and first fitted steps.
    rsle : root mean squared log error of the fitted curve over the fitted points.
    a, b, c0, c1, d1, f1 : the fitted BNSL parameters (``a`` as configured when fixed).
    stderr : standard errors from lmfit (scaled by the reduced chi-square) of the raw
        parameters and of r_d; NaN when not estimated (a fixed ``a``, or a singular covariance).
        They assume independent residuals: with ``smooth`` > 1 they are too small (by about
        the square root of the window).
    converged : lmfit reported success. flag : "" when the fit is fine (see the module docstring).
    n_points : the number of fitted points (after preprocessing).
    """

    t_d: float = _NAN
    L_d: float = _NAN
    r_d: float = _NAN
    L_hat_T: float = _NAN
    L_T: float = _NAN
    T: float = _NAN
    t_first: float = _NAN
    rsle: float = _NAN
    a: float = _NAN
    b: float = _NAN
    c0: float = _NAN
    c1: float = _NAN
    d1: float = _NAN
    f1: float = _NAN
    stderr: dict[str, float] = field(default_factory=dict)
    converged: bool = False
    flag: str = ""
    n_points: int = 0

    @property
    def L_hat_T_over_L_T(self) -> float:
        """The extrapolated over the observed loss at the last step, L̂_T / L_T."""
        return self.L_hat_T / self.L_T if self.L_T else _NAN

    def as_row(self) -> dict:
        """A flat dict, columns in ``pipeline.schema`` order: the ``FIT_FIELDS``, ``flag`` and
        ``stderr_<name>``; NaN as None (valid JSON)."""
        row = {k: getattr(self, k) for k in FIT_FIELDS}
        row["flag"] = self.flag
        row.update({f"stderr_{k}": self.stderr.get(k, _NAN) for k in STDERR_FIELDS})
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _prepare(steps: np.ndarray, loss: np.ndarray, cfg: FitConfig):
    """The fitted points (t, L), and T and the observed L_T, after filtering and preprocessing."""
    steps = np.asarray(steps, dtype=np.float64).ravel()
    loss = np.asarray(loss, dtype=np.float64).ravel()
    if steps.shape != loss.shape:
        raise ValueError(f"steps {steps.shape} and loss {loss.shape} differ in shape")
    ok = np.isfinite(steps) & np.isfinite(loss) & (loss > 0) & (steps > 0) & (steps > cfg.min_step)
    n_bad = int((np.isfinite(loss) & (loss <= 0) & (steps > cfg.min_step)).sum())
    if n_bad:
        log.warning("dropped %d non-positive losses", n_bad)
    order = np.argsort(steps[ok], kind="stable")
    t, L = steps[ok][order], loss[ok][order]
    T, L_T = (float(t[-1]), float(L[-1])) if t.size else (_NAN, _NAN)
    t_fit, L_fit = smooth_log_spaced(t, smooth_log(L, cfg.smooth), cfg.smooth_width)
    keep = subsample_log(t_fit, cfg.subsample)
    return t_fit[keep], L_fit[keep], T, L_T


def _failed(
    flag: str, n_points: int, t_first: float, T: float, L_T: float, a: float | None
) -> BNSLFit:
    warnings.warn(f"BNSL fit failed ({flag}, {n_points} points): NaN results", FitWarning, 3)
    return BNSLFit(
        L_T=L_T,
        T=T,
        t_first=t_first,
        a=_NAN if a is None else float(a),
        stderr={k: _NAN for k in STDERR_FIELDS},
        flag=flag,
        n_points=n_points,
    )


def fit_bnsl(steps: np.ndarray, loss: np.ndarray, cfg: FitConfig | None = None) -> BNSLFit:
    """Fit the one-break BNSL (ZSL Eq. 1) to a loss curve in log space; see the module docstring.

    Parameters
    ----------
    steps : (step,) training steps (may include 0); loss : (step,) mean losses (NaN allowed).
    cfg : which steps to fit, how ``a`` is handled, and the optional preprocessing (default:
        ``FitConfig()``).

    Returns
    -------
    BNSLFit. Never raises for bad data: a failed or doubtful fit is flagged and warned about.
    """
    cfg = cfg or FitConfig()
    t, L, T, L_T = _prepare(steps, loss, cfg)
    n = int(t.size)
    t_first = float(t[0]) if n else _NAN
    n_vary = 5 if cfg.a is not None else 6
    if n <= n_vary:
        return _failed("too_few_points", n, t_first, T, L_T, cfg.a)
    x, y = np.log(t), np.log(L)
    a_max = float(L.min())
    if cfg.a is not None and cfg.a >= a_max:
        return _failed("a_above_loss", n, t_first, T, L_T, cfg.a)
    a_values = np.array([cfg.a]) if cfg.a is not None else np.array(GRID_A_FRACTIONS) * a_max
    result = _least_squares(x, y, grid_starts(x, y, a_values), cfg.a is None, a_max)
    if result is None:
        return _failed("no_convergence", n, t_first, T, L_T, cfg.a)
    p = result.params.valuesdict()
    a, b, c0, c1, f1 = p["a"], math.exp(p["ln_b"]), p["c0"], p["c1"], p["f1"]
    d1 = 10.0 ** p["log10_d1"]
    r_d = c0 + c1
    L_d_reducible = b * d1**-c0
    sse = float(np.sum((log_model(x, p) - y) ** 2))
    p_value = break_p_value(sse, power_law_sse(x, y, cfg.a, a_max), n, n_vary)
    flag = _flag(p, x, p_value)
    if flag:
        warnings.warn(
            f"BNSL fit flagged {flag!r}: t_d={d1:.4g} in [{t[0]:.4g}, {t[-1]:.4g}], "
            f"c1={c1:.3g}, f1={f1:.3g}, F-test p={p_value:.2g}",
            FitWarning,
            2,
        )
    return BNSLFit(
        t_d=d1,
        L_d=a + L_d_reducible,
        r_d=r_d,
        L_hat_T=a + L_d_reducible * (T / d1) ** -r_d,
        L_T=L_T,
        T=T,
        t_first=t_first,
        rsle=math.sqrt(sse / n),
        a=a,
        b=b,
        c0=c0,
        c1=c1,
        d1=d1,
        f1=f1,
        stderr=_stderr(result, b, d1, cfg.a is None),
        converged=True,
        flag=flag,
        n_points=n,
    )


def _least_squares(x, y, starts: list[dict], fit_a: bool, a_max: float):
    """The best bounded least-squares fit (lmfit, trust-region reflective) over the starts, one
    from the best grid point of each value of a (with a free, a single start can end in a local
    minimum at a = 0); None if none converges to finite values."""
    import lmfit

    log10_range = (x[0] / math.log(10), x[-1] / math.log(10))

    def residual(p: lmfit.Parameters) -> np.ndarray:
        return log_model(x, p.valuesdict()) - y

    results = []
    for start in starts:
        params = lmfit.Parameters()
        params.add("ln_b", value=start["ln_b"])
        params.add("c0", value=start["c0"], min=C0_BOUNDS[0], max=C0_BOUNDS[1])
        params.add("c1", value=start["c1"], min=C1_BOUNDS[0], max=C1_BOUNDS[1])
        params.add(
            "log10_d1", value=start["ln_d1"] / math.log(10), min=log10_range[0], max=log10_range[1]
        )
        params.add("f1", value=start["f1"], min=F1_BOUNDS[0], max=F1_BOUNDS[1])
        params.add("a", value=start["a"], vary=fit_a, min=0.0, max=a_max)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                result = lmfit.minimize(residual, params, method="least_squares", x_scale="jac")
        except (ValueError, np.linalg.LinAlgError) as err:  # e.g. a non-finite residual
            log.warning("lmfit failed from %s: %s", start, err)
            continue
        finite = all(math.isfinite(v) for v in result.params.valuesdict().values())
        if result.success and finite and math.isfinite(result.chisqr):
            results.append(result)
    return min(results, key=lambda r: r.chisqr) if results else None


def _flag(p: dict[str, float], x: np.ndarray, p_value: float) -> str:
    """``no_break`` (the break at the edge of the fitted range, or no better than a power law),
    else ``at_bound`` (c0, c1 or f1's upper bound active), else ""."""
    log10_range = (x[0] / math.log(10), x[-1] / math.log(10))
    low, high = near_bounds(p["log10_d1"], log10_range, EDGE_FRACTION)
    if low or high or p_value > NO_BREAK_P:
        return "no_break"
    at_bound = any(
        any(near_bounds(p[name], bounds, BOUND_TOLERANCE))
        for name, bounds in (("c0", C0_BOUNDS), ("c1", C1_BOUNDS))
    )
    return "at_bound" if at_bound or near_bounds(p["f1"], F1_BOUNDS, BOUND_TOLERANCE)[1] else ""


def _stderr(result: lmfit.minimizer.MinimizerResult, b: float, d1: float, fit_a: bool):
    """Standard errors of the raw parameters (delta method from ln b and log10 d1) and of r_d."""
    out = {k: _NAN for k in STDERR_FIELDS}
    if not result.errorbars or result.covar is None:
        return out
    se = {k: float(result.params[k].stderr) for k in result.var_names}
    out.update(c0=se["c0"], c1=se["c1"], f1=se["f1"])
    out["b"] = b * se["ln_b"]
    out["d1"] = d1 * math.log(10) * se["log10_d1"]
    if fit_a:
        out["a"] = se["a"]
    i, j = result.var_names.index("c0"), result.var_names.index("c1")
    cov = result.covar
    out["r_d"] = float(np.sqrt(max(cov[i, i] + cov[j, j] + 2 * cov[i, j], 0.0)))
    return out
