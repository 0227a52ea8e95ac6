"""The BNSL loss-deceleration fit (ZSL Eq. 1, App. C.1) against curves of known parameters."""

import json
import math
import warnings

import numpy as np
import pytest

from pipeline.config import FitConfig
from pipeline.fit import BNSLFit, FitWarning, fit_bnsl
from pipeline.maths.bnsl import (
    bnsl,
    smooth_log,
    smooth_log_spaced,
    subsample_log,
)
from pipeline.schema import FIT_FIELDS, STDERR_FIELDS
from tests.reference import bnsl_formula as formula

# Pythia's checkpoints: 0, 1, 2, 4, ..., 512, then every 1000 steps to 143000 (154 steps).
PYTHIA = np.array([0] + [2**i for i in range(10)] + list(range(1000, 143_001, 1000)), float)
# A dense, evenly spaced curve (1431 steps) for the preprocessing options.
DENSE = np.arange(0, 143_001, 100, dtype=float)


def noisy(steps, params, sigma, seed):
    """The BNSL curve at ``steps`` times log-normal noise (step 0 is evaluated at 1)."""
    rng = np.random.default_rng(seed)
    return formula(np.maximum(steps, 1), **params) * np.exp(rng.normal(0.0, sigma, steps.size))


def sse_at_truth(steps, loss, params, min_step=100):
    m = steps > min_step
    return float(np.sum((np.log(formula(steps[m], **params)) - np.log(loss[m])) ** 2))


def fit_quietly(steps, loss, cfg=None) -> BNSLFit:
    """Fit, failing the test on any FitWarning (an unflagged fit must not warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)
        return fit_bnsl(steps, loss, FitConfig() if cfg is None else cfg)


# -- 1. the formula ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        dict(a=0.0, b=10.0, c0=0.1, c1=0.4, d1=800.0, f1=0.5),
        dict(a=1.3, b=7.0, c0=0.25, c1=0.35, d1=20_000.0, f1=1.0),
        dict(a=0.0, b=3.0, c0=-0.2, c1=1.5, d1=50.0, f1=0.05),
    ],
)
def test_bnsl_matches_the_formula(params):
    t = np.geomspace(1, 1e6, 200)
    np.testing.assert_allclose(bnsl(t, **params), formula(t, **params), rtol=1e-12)


@pytest.mark.parametrize("f1", [0.3, 1.0])
def test_bnsl_asymptotic_slopes(f1):
    b, c0, c1, d1 = 10.0, 0.15, 0.45, 3000.0
    eps = 1e-4

    def slope(t):  # central log-log derivative
        hi, lo = bnsl(np.array([t * math.exp(eps), t * math.exp(-eps)]), 0.0, b, c0, c1, d1, f1)
        return (math.log(hi) - math.log(lo)) / (2 * eps)

    assert slope(d1 * 1e-5) == pytest.approx(-c0, abs=1e-4)
    assert slope(d1 * 1e5) == pytest.approx(-(c0 + c1), abs=1e-4)
    # at the break itself the slope is halfway: -(c0 + c1/2)
    assert slope(d1) == pytest.approx(-(c0 + c1 / 2), abs=1e-6)


# -- 2. recovery of known parameters -------------------------------------------------------------

SIGMA = 0.005
RECOVERY_CASES = {
    "early_break": dict(a=0.0, b=10.0, c0=0.2, c1=0.5, d1=800.0, f1=0.3),
    "mid_break": dict(a=0.0, b=15.0, c0=0.1, c1=0.4, d1=3000.0, f1=0.5),
    "mid_break_steep": dict(a=0.0, b=20.0, c0=0.3, c1=0.6, d1=3000.0, f1=0.3),
    "late_break": dict(a=0.0, b=6.0, c0=0.05, c1=0.5, d1=20_000.0, f1=0.3),
}


@pytest.mark.parametrize("name", list(RECOVERY_CASES))
def test_recovers_known_parameters(name):
    true = RECOVERY_CASES[name]
    loss = noisy(PYTHIA, true, SIGMA, seed=sorted(RECOVERY_CASES).index(name))
    fit = fit_quietly(PYTHIA, loss)
    assert fit.converged and fit.flag == ""
    assert fit.n_points == int((PYTHIA > 100).sum()) == 146
    assert fit.t_d == pytest.approx(true["d1"], rel=0.10)
    assert fit.r_d == pytest.approx(true["c0"] + true["c1"], abs=0.005)
    # the RSLE is the noise level (146 points, 5 fitted parameters)
    assert 0.85 * SIGMA < fit.rsle < 1.15 * SIGMA
    # the optimiser reaches at least the true parameters' fit: no local minimum
    assert fit.rsle**2 * fit.n_points <= sse_at_truth(PYTHIA, loss, true) * (1 + 1e-9)
    for k in ("b", "c0", "c1", "d1", "f1", "r_d"):
        assert np.isfinite(fit.stderr[k]) and fit.stderr[k] > 0
    assert np.isnan(fit.stderr["a"])  # a is fixed
    assert fit.a == 0.0


@pytest.mark.parametrize(
    "true",
    [
        dict(a=0.0, b=15.0, c0=0.2, c1=0.3, d1=3000.0, f1=1.0),
        dict(a=0.0, b=6.0, c0=0.1, c1=0.3, d1=20_000.0, f1=1.0),
    ],
)
def test_smooth_break_is_within_its_standard_errors(true):
    # A smooth break (f1 = 1) spreads over two decades of steps: with 1% noise its position is
    # known to ~15% only. The fit must still be optimal and its standard errors honest.
    loss = noisy(PYTHIA, true, 0.01, seed=3)
    fit = fit_quietly(PYTHIA, loss)
    assert fit.converged and fit.flag == ""
    assert abs(fit.t_d - true["d1"]) < 4 * fit.stderr["d1"]
    assert abs(fit.r_d - (true["c0"] + true["c1"])) < 4 * fit.stderr["r_d"]
    assert fit.rsle**2 * fit.n_points <= sse_at_truth(PYTHIA, loss, true) * (1 + 1e-9)


def test_irreducible_loss_fixed_and_fitted():
    true = dict(a=1.0, b=10.0, c0=0.2, c1=0.5, d1=3000.0, f1=0.3)
    loss = noisy(PYTHIA, true, SIGMA, seed=7)
    fixed = fit_quietly(PYTHIA, loss, FitConfig(a=1.0))
    assert fixed.flag == "" and fixed.a == 1.0
    assert fixed.t_d == pytest.approx(3000.0, rel=0.10)
    assert fixed.r_d == pytest.approx(0.7, abs=0.005)
    free = fit_quietly(PYTHIA, loss, FitConfig(a=None))
    assert free.converged and free.flag == ""
    assert free.t_d == pytest.approx(3000.0, rel=0.10)
    for name, value in (("a", 1.0), ("c0", 0.2), ("c1", 0.5)):
        assert abs(getattr(free, name) - value) < 4 * free.stderr[name]
    assert abs(free.r_d - 0.7) < 4 * free.stderr["r_d"]
    assert free.rsle**2 * free.n_points <= sse_at_truth(PYTHIA, loss, true) * (1 + 1e-9)
    # with a != 0 the power laws are those of the reducible loss L - a
    for f in (fixed, free):
        reducible = f.b * f.d1 ** (-f.c0)
        assert f.L_d == pytest.approx(f.a + reducible, rel=1e-12)
        assert f.L_hat_T == pytest.approx(f.a + reducible * (f.T / f.d1) ** (-f.r_d), rel=1e-12)


@pytest.mark.parametrize(
    "true",
    [
        dict(a=0.5, b=8.0, c0=0.3, c1=0.5, d1=2000.0, f1=0.5),
        dict(a=1.2, b=6.0, c0=0.25, c1=0.45, d1=4000.0, f1=0.7),
    ],
)
def test_fitted_irreducible_loss_reaches_the_optimum(true):
    # cases where a least-squares fit from the single best grid point ends at a = 0, far from
    # the optimum; a and r_d are strongly correlated, so only the standard errors bound them
    loss = noisy(PYTHIA, true, 0.01, seed=1)
    fit = fit_quietly(PYTHIA, loss, FitConfig(a=None))
    assert fit.converged and fit.flag == ""
    assert fit.rsle**2 * fit.n_points <= sse_at_truth(PYTHIA, loss, true) * (1 + 1e-9)
    assert abs(fit.a - true["a"]) < 4 * fit.stderr["a"]
    assert abs(fit.t_d - true["d1"]) < 4 * fit.stderr["d1"]
    assert abs(fit.r_d - (true["c0"] + true["c1"])) < 4 * fit.stderr["r_d"]


def test_nan_losses_unsorted_steps_and_the_transient_are_ignored():
    true = RECOVERY_CASES["mid_break"]
    loss = noisy(PYTHIA, true, SIGMA, seed=1)
    ref = fit_quietly(PYTHIA, loss)
    # NaN losses, and a transient (steps <= min_step) that is way off the curve
    spoiled = loss.copy()
    spoiled[[20, 50, 90]] = np.nan
    spoiled[PYTHIA <= 100] = 100.0
    keep = np.isfinite(spoiled)
    order = np.random.default_rng(0).permutation(PYTHIA.size)
    fit = fit_quietly(PYTHIA[order], spoiled[order])
    direct = fit_quietly(PYTHIA[keep], loss[keep])
    assert fit.n_points == ref.n_points - 3 == direct.n_points
    assert fit.t_d == pytest.approx(direct.t_d, rel=1e-6)
    assert fit.r_d == pytest.approx(direct.r_d, abs=1e-8)
    assert fit.t_d == pytest.approx(true["d1"], rel=0.10)
    # min_step = 0 still drops step 0 (log 0)
    assert fit_quietly(PYTHIA, loss, FitConfig(min_step=0)).n_points == PYTHIA.size - 1


# -- 3. flags and preprocessing ------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, 0.005, 0.01])
def test_single_power_law_is_flagged_no_break(sigma):
    rng = np.random.default_rng(11)
    loss = 8.0 * np.maximum(PYTHIA, 1) ** -0.3 * np.exp(rng.normal(0, sigma, PYTHIA.size))
    with pytest.warns(FitWarning, match="no_break"):
        fit = fit_bnsl(PYTHIA, loss)
    assert fit.flag == "no_break" and fit.converged
    assert np.isfinite(fit.rsle) and fit.rsle < 1.15 * sigma + 1e-12
    # the slope after any (spurious) break is still the power law's
    assert fit.r_d == pytest.approx(0.3, abs=0.01)


def test_break_beyond_the_last_step_is_flagged_no_break():
    true = dict(a=0.0, b=10.0, c0=0.2, c1=0.5, d1=1e7, f1=0.3)
    with pytest.warns(FitWarning, match="no_break"):
        fit = fit_bnsl(PYTHIA, noisy(PYTHIA, true, SIGMA, seed=2))
    assert fit.flag == "no_break"


@pytest.mark.parametrize("n_kept", [0, 3, 5])
def test_too_few_points(n_kept):
    steps = PYTHIA[: 8 + n_kept]  # 0, 1, ..., 64, then n_kept steps over min_step = 100
    loss = noisy(steps, RECOVERY_CASES["early_break"], SIGMA, seed=0)
    with pytest.warns(FitWarning, match="too_few_points"):
        fit = fit_bnsl(steps, loss)
    assert fit.n_points == n_kept
    assert fit.flag == "too_few_points" and not fit.converged
    for k in ("t_d", "L_d", "r_d", "L_hat_T", "rsle", "b", "c0", "c1", "d1", "f1"):
        assert np.isnan(getattr(fit, k)), k
    assert all(np.isnan(v) for v in fit.stderr.values())
    row = fit.as_row()  # NaN is written as None: valid JSON
    assert row["L_hat_T_over_L_T"] is None and row["t_d"] is None and row["stderr_b"] is None
    assert row["n_points"] == n_kept and row["flag"] == "too_few_points"


def test_all_nan_and_bad_fixed_a_do_not_raise():
    with pytest.warns(FitWarning, match="too_few_points"):
        fit = fit_bnsl(PYTHIA, np.full(PYTHIA.size, np.nan))
    assert fit.n_points == 0 and np.isnan(fit.T) and np.isnan(fit.L_T)
    loss = noisy(PYTHIA, RECOVERY_CASES["mid_break"], SIGMA, seed=0)
    with pytest.warns(FitWarning, match="a_above_loss"):
        fit = fit_bnsl(PYTHIA, loss, FitConfig(a=float(loss.max())))
    assert np.isnan(fit.t_d) and not fit.converged


def test_subsample_keeps_at_most_n_log_spaced_points():
    steps = np.geomspace(100, 1e5, 5000)
    idx = subsample_log(steps, 50)
    assert idx.size == 50 and idx[0] == 0 and idx[-1] == steps.size - 1
    gaps = np.diff(np.log(steps[idx]))
    np.testing.assert_allclose(gaps, np.log(1e3) / 49, rtol=0.05)
    # evenly spaced steps are sparser in log at the start: fewer than N, still log-spaced
    idx = subsample_log(DENSE[1:], 100)
    assert 50 < idx.size <= 100 and np.all(np.diff(idx) > 0)
    assert np.array_equal(subsample_log(DENSE[1:], 0), np.arange(DENSE.size - 1))
    # through the fit: at most N points and the break still recovered
    true = RECOVERY_CASES["mid_break"]
    fit = fit_quietly(DENSE, noisy(DENSE, true, SIGMA, seed=4), FitConfig(subsample=80))
    assert fit.n_points <= 80 and fit.flag == ""
    assert fit.t_d == pytest.approx(true["d1"], rel=0.10)
    assert fit.r_d == pytest.approx(true["c0"] + true["c1"], abs=0.005)


def test_smoothing_reduces_the_noise():
    # a centred moving average leaves a log-linear sequence unchanged and shrinks at the ends
    geometric = np.exp(np.linspace(0.0, 3.0, 30))
    np.testing.assert_allclose(smooth_log(geometric, 7), geometric, rtol=1e-12)
    ends = smooth_log(np.array([1.0, 4.0, 1.0, 4.0, 1.0]), 5)
    assert ends[0] == 1.0 and ends[-1] == 1.0 and ends[1] == pytest.approx(4 ** (1 / 3))
    assert ends[2] == pytest.approx(math.exp(2 * math.log(4) / 5))
    true = RECOVERY_CASES["mid_break"]
    loss = noisy(DENSE, true, 0.01, seed=5)
    raw = fit_quietly(DENSE, loss)
    smooth = fit_quietly(DENSE, loss, FitConfig(smooth=9))
    assert raw.rsle == pytest.approx(0.01, rel=0.1)
    assert smooth.rsle < 0.5 * raw.rsle
    assert smooth.n_points == raw.n_points
    assert smooth.t_d == pytest.approx(true["d1"], rel=0.10)
    assert smooth.r_d == pytest.approx(true["c0"] + true["c1"], abs=0.005)
    assert smooth.L_T == raw.L_T == loss[-1]  # the observed loss, not the smoothed one


@pytest.mark.parametrize("kw", [dict(smooth=4), dict(smooth=-1), dict(subsample=1), dict(a=-0.1)])
def test_invalid_config(kw):
    with pytest.raises(ValueError):
        FitConfig(**kw)


# -- 4. the reported quantities ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["early_break", "late_break"])
def test_extrapolation_identity_and_row(name):
    loss = noisy(PYTHIA, RECOVERY_CASES[name], SIGMA, seed=6)
    fit = fit_quietly(PYTHIA, loss)
    L_d = fit.b * fit.d1 ** (-fit.c0)
    r_d = fit.c0 + fit.c1
    assert fit.t_d == fit.d1 and fit.L_d == pytest.approx(L_d, rel=1e-12)
    assert fit.r_d == pytest.approx(r_d, abs=1e-12)
    assert fit.T == 143_000 and fit.L_T == loss[-1]
    expected = L_d * (fit.T / fit.d1) ** (-r_d)
    assert fit.L_hat_T == pytest.approx(expected, rel=1e-12)
    log_hat = math.log(L_d) - r_d * math.log(fit.T / fit.d1)
    assert math.log(fit.L_hat_T) == pytest.approx(log_hat, abs=1e-12)
    # RSLE is that of the returned curve
    m = PYTHIA > 100
    curve = formula(PYTHIA[m], fit.a, fit.b, fit.c0, fit.c1, fit.d1, fit.f1)
    rsle = math.sqrt(np.mean((np.log(curve) - np.log(loss[m])) ** 2))
    assert fit.rsle == pytest.approx(rsle, rel=1e-9)
    row = fit.as_row()
    assert list(row) == [*FIT_FIELDS, "flag", *(f"stderr_{k}" for k in STDERR_FIELDS)]
    assert row["L_hat_T_over_L_T"] == pytest.approx(expected / loss[-1], rel=1e-12)
    assert row["t_first"] == PYTHIA[m][0] and row["T"] == PYTHIA[-1]
    assert "stderr" not in row and row["flag"] == "" and row["converged"] is True
    assert row["stderr_a"] is None  # a is fixed: no standard error, written as null
    assert all(np.isscalar(v) for k, v in row.items() if k != "stderr_a")
    json.loads(json.dumps(row, allow_nan=False))  # valid JSON as it stands


# -- the dense training curve, fitted as Zero-sum learning fits it -------------------------------


@pytest.mark.parametrize(
    "true",
    [
        dict(a=0.0, b=12.0, c0=0.35, c1=-0.25, d1=4000.0, f1=0.3),  # deceleration: c1 < 0
        dict(a=0.0, b=12.0, c0=0.15, c1=0.3, d1=2000.0, f1=0.5),
    ],
    ids=["decelerating", "accelerating"],
)
def test_a_dense_training_curve_recovers_its_parameters(true):
    """A loss at every step (50,000, 3% log-normal noise as a training batch's) with the
    training-curve settings (first 100 steps dropped, log-spaced moving average, 200 log-spaced
    points): the break and the post-break slope are recovered, also with c1 < 0, the
    deceleration the reference BNSL code's grid (c1 ≥ 0) cannot reach."""
    from pipeline.config import fit_configs

    steps = np.arange(1, 50_001, dtype=float)
    loss = noisy(steps, true, 0.03, seed=11)
    cfg = fit_configs({})["train"]  # the declared defaults of fit.train
    fit = fit_quietly(steps, loss, cfg)
    assert fit.flag == "" and fit.n_points <= 200
    assert fit.t_d == pytest.approx(true["d1"], rel=0.15)
    assert fit.r_d == pytest.approx(true["c0"] + true["c1"], abs=0.01)
    assert (fit.c1 < 0) == (true["c1"] < 0)
    raw = fit_quietly(steps, loss, FitConfig(min_step=100, subsample=200))
    assert fit.rsle < 0.5 * raw.rsle  # the moving average is what tames the batch noise


def test_log_spaced_smoothing_spans_the_same_log_range_everywhere():
    steps = np.arange(1, 10_001, dtype=float)
    power = 3.0 * steps**-0.4  # a power law is a line in log-log: unchanged in the interior
    t, out = smooth_log_spaced(steps, power, 0.05)
    np.testing.assert_allclose(out, 3.0 * t**-0.4, rtol=1e-9)  # still on the power law
    assert (t[1:] >= t[:-1]).all() and t[0] >= 1 and t[-1] <= steps[-1]
    # a single outlier at step 1000 spreads over the steps within 10^±0.05 of it, no further
    bump = np.ones_like(steps)
    bump[999] = math.e
    smoothed = np.log(smooth_log_spaced(steps, bump, 0.05)[1])
    touched = np.flatnonzero(smoothed > 0) + 1
    assert touched.min() >= 1000 / 10**0.05 - 1 and touched.max() <= 1000 * 10**0.05 + 1
    assert smooth_log_spaced(steps, power, 0.0)[1] is power


def test_training_curves_are_read_from_tsv_and_csv_and_errors_name_the_file(tmp_path):
    from pipeline.fit import read_train_curve, write_train_curve

    write_train_curve([(1, 5.0), (2, 4.5), (3, 4.25)], tmp_path / "a.tsv")
    steps, loss = read_train_curve(str(tmp_path / "a.tsv"))
    assert steps.tolist() == [1, 2, 3] and loss.tolist() == [5.0, 4.5, 4.25]
    (tmp_path / "b.csv").write_text("step,lr,loss\n10,0.1,3.0\n20,0.1,2.5\n")
    assert read_train_curve(str(tmp_path / "b.csv"))[1].tolist() == [3.0, 2.5]
    (tmp_path / "c.csv").write_text("iteration,value\n1,2\n")
    with pytest.raises(ValueError, match=r"c.csv: .*'step' and 'loss'"):
        read_train_curve(str(tmp_path / "c.csv"))
    (tmp_path / "d.csv").write_text("step,loss\n1,abc\n")
    with pytest.raises(ValueError, match="d.csv: a step or loss is not a number"):
        read_train_curve(str(tmp_path / "d.csv"))
