"""The loss-deceleration fit of Zero-sum learning (Mircea et al. 2025, Eq. 1, App. C.1).

A loss curve L(t) over training steps t is fitted with a smoothly broken power law with one break
(Caballero et al. 2023, "Broken neural scaling laws")::

    L(t) = a + b · t^(-c0) · (1 + (t / d1)^(1 / f1))^(-c1 · f1)

Before the break (t << d1) the reducible loss falls as t^(-c0), after it (t >> d1) as
t^(-(c0 + c1)); f1 > 0 sets how sharp the break is. The irreducible loss ``a`` is 0 by default
(as in ZSL), a fixed value, or fitted (a >= 0).

The fit is in log space: the residuals are log L̂(t) - log L(t) over the steps t > ``min_step``
(the initial transient is left out). It runs in two stages:

1. a grid over the break (d1 log-spaced across the fitted step range, f1 log-spaced over its
   bounds, and, when ``a`` is fitted, a few values of ``a`` below the smallest loss). For fixed
   (a, d1, f1) the model is linear in (log b, c0, c1) —
   ``log(L - a) = log b - c0 log t - c1 f1 softplus((log t - log d1) / f1)`` — so each grid point
   is solved exactly by linear least squares (variable projection) and the grid is dense only in
   the two nonlinear parameters. This makes the start robust: no starting guess for b, c0, c1.
2. a bounded least-squares fit with lmfit (``least_squares``, trust-region reflective) over
   ``ln_b``, c0, c1, ``log10_d1``, f1 (and a) from the best grid point; when ``a`` is fitted, one
   from the best grid point of each value of ``a``, keeping the best (a single start can end in
   a local minimum at a = 0).

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
A curve that is simply not BNSL-shaped is not flagged; its RSLE says so.

Optional preprocessing for dense loss curves (ZSL App. C.1): ``smooth`` is the (odd) window of a
centred moving average of log L over neighbouring points (the window shrinks symmetrically at the
ends), ``smooth_width`` the half-width in decades of a log-spaced moving average (the paper's,
for a training loss recorded at every step), and ``subsample`` keeps at most that many points,
log-spaced in step. Smoothing is applied
to the fitted points before subsampling; L_T is always the observed (unsmoothed) loss. The cost
of a fit grows linearly with the number of points (~10 ms for Pythia's 146 checkpoints after
step 100 with ``a`` fixed, ~0.1 s with ``a`` fitted; seconds for 10^5 points): subsample dense
curves.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import lmfit
import numpy as np
from scipy import stats

from pipeline.config import FitConfig
from pipeline.schema import FIT_FIELDS, STDERR_FIELDS

log = logging.getLogger(__name__)

#: Bounds of the shape parameters in the least-squares fit (and the grid of f1).
C0_BOUNDS = (-1.0, 3.0)
C1_BOUNDS = (-1.0, 5.0)
F1_BOUNDS = (0.01, 5.0)
#: Grid sizes: break positions (log-spaced over the fitted steps), sharpnesses (log-spaced over
#: ``F1_BOUNDS``) and, when ``a`` is fitted, fractions of the smallest loss tried for ``a``.
N_GRID_D1 = 64
N_GRID_F1 = 24
GRID_A_FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9)
#: A break within this fraction of the log step range from either end is "at the edge".
EDGE_FRACTION = 0.02
#: The BNSL must beat a single power law by an F-test at this p-value to count as a break.
#: The break position is chosen by the fit, so the nominal p-value is optimistic: keep it strict.
NO_BREAK_P = 1e-3
#: A parameter within this (relative to its bound range) of a bound is "at the bound".
BOUND_TOLERANCE = 1e-4

_NAN = float("nan")


class FitWarning(UserWarning):
    """A loss-curve fit that is flagged (``BNSLFit.flag`` is not empty)."""


def _softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + e^z), without overflow."""
    return np.logaddexp(0.0, z)


def _log_reducible(x, ln_b, c0, c1, ln_d1, f1):
    """log(b · t^(-c0) · (1 + (t/d1)^(1/f1))^(-c1·f1)) at x = log t, in overflow-free form."""
    return ln_b - c0 * x - c1 * f1 * _softplus((x - ln_d1) / f1)


def bnsl(t: np.ndarray, a, b, c0, c1, d1, f1) -> np.ndarray:
    """The smoothly broken power law with one break (ZSL Eq. 1; Caballero et al. 2023).

    ``L(t) = a + b · t^(-c0) · (1 + (t / d1)^(1 / f1))^(-c1 · f1)``, evaluated as
    ``a + exp(log b - c0 log t - c1 f1 softplus((log t - log d1) / f1))`` so that sharp breaks
    (small f1) far from t do not overflow.

    Parameters
    ----------
    t : steps (> 0); a, b, c0, c1, d1, f1 : the parameters (b, d1, f1 > 0).

    Returns
    -------
    L(t), same shape as ``t``.
    """
    with np.errstate(divide="ignore"):
        x = np.log(np.asarray(t, dtype=np.float64))
    return a + np.exp(_log_reducible(x, np.log(b), c0, c1, np.log(d1), f1))


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


# -- preprocessing -------------------------------------------------------------------------------


def smooth_log(loss: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of log ``loss`` over ``window`` (odd) neighbouring points.

    The window shrinks symmetrically near the ends (the first and last points are kept), so the
    average is never one-sided. ``window`` 0 or 1 returns ``loss`` unchanged.
    """
    loss = np.asarray(loss, dtype=np.float64)
    if window <= 1 or loss.size < 3:
        return loss
    y = np.log(loss)
    n = y.size
    csum = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(n)
    half = np.minimum(np.minimum(i, n - 1 - i), window // 2)
    return np.exp((csum[i + half + 1] - csum[i - half]) / (2 * half + 1))


def smooth_log_spaced(
    steps: np.ndarray, loss: np.ndarray, width: float
) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced moving average of a (sorted, positive-step) curve: each point becomes the mean
    of log t and of log L over the steps within a factor ``10**width`` of its own, so the window
    spans the same range in log step everywhere (few points early, many late in a dense curve).
    Both coordinates are averaged: the steps of a window are not centred in log (evenly spaced
    steps crowd its upper end), and a power law stays exactly on its line. ``width`` 0 is off.
    """
    t = np.asarray(steps, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if width <= 0 or loss.size < 3:
        return t, loss
    x = np.log10(t)
    cx = np.concatenate([[0.0], np.cumsum(np.log(t))])
    cy = np.concatenate([[0.0], np.cumsum(np.log(loss))])
    lo = np.searchsorted(x, x - width, side="left")
    hi = np.searchsorted(x, x + width, side="right")
    n = hi - lo
    return np.exp((cx[hi] - cx[lo]) / n), np.exp((cy[hi] - cy[lo]) / n)


def subsample_log(steps: np.ndarray, n: int) -> np.ndarray:
    """Indices of at most ``n`` of the (sorted, positive) ``steps``, log-spaced in step.

    Each of ``n`` log-spaced targets between the first and the last step takes its nearest step
    (in log); duplicates are dropped, so fewer than ``n`` may be kept. The ends are always kept.
    ``n`` 0 (or at least the number of steps) keeps all.
    """
    steps = np.asarray(steps, dtype=np.float64)
    if n <= 0 or steps.size <= n:
        return np.arange(steps.size)
    x = np.log(steps)
    targets = np.linspace(x[0], x[-1], n)
    right = np.clip(np.searchsorted(x, targets), 1, x.size - 1)
    left = right - 1
    nearest = np.where(targets - x[left] <= x[right] - targets, left, right)
    return np.unique(nearest)


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


# -- the fit -------------------------------------------------------------------------------------


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


def _grid_starts(x: np.ndarray, y: np.ndarray, a_values: np.ndarray) -> list[dict[str, float]]:
    """The best point of the grid over (d1, f1) for each value of ``a``, best first.

    (ln b, c0, c1) are solved linearly at every grid point.

    For each grid point, c0 and c1 are the least-squares solution of the centred 2x2 normal
    equations (c1 = 0 where the break term is collinear with log t or constant, i.e. a break
    outside the data), clipped to their bounds; ln b is then the mean residual. The grid points
    are scored by the sum of squared log residuals, in blocks that bound the memory in use.
    """
    ln_d1 = np.linspace(x[0], x[-1], N_GRID_D1)
    f1 = np.geomspace(*F1_BOUNDS, N_GRID_F1)
    D, F = (g.ravel()[:, None] for g in np.meshgrid(ln_d1, f1, indexing="ij"))
    u = x - x.mean()
    Suu = float(u @ u)
    block = max(1, 2**20 // x.size)
    best_sse = np.full(len(a_values), np.inf)
    best: list[dict] = [{} for _ in a_values]
    for lo in range(0, D.shape[0], block):
        Db, Fb = D[lo : lo + block], F[lo : lo + block]
        h = Fb * _softplus((x[None, :] - Db) / Fb)  # (grid, point)
        v = h - h.mean(axis=1, keepdims=True)
        Suv, Svv = v @ u, np.einsum("gn,gn->g", v, v)
        det = Suu * Svv - Suv**2
        solvable = det > 1e-10 * Suu * Svv
        safe = np.where(solvable, det, 1.0)
        for k, a in enumerate(a_values):
            z = np.log(np.exp(y) - a)  # log of the reducible loss
            zc = z - z.mean()
            Suz, Svz = float(u @ zc), v @ zc
            c0 = np.where(solvable, -(Svv * Suz - Suv * Svz) / safe, -Suz / Suu)
            c1 = np.where(solvable, -(Suu * Svz - Suv * Suz) / safe, 0.0)
            c0, c1 = np.clip(c0, *C0_BOUNDS), np.clip(c1, *C1_BOUNDS)
            pred = -c0[:, None] * x[None, :] - c1[:, None] * h
            ln_b = np.mean(z[None, :] - pred, axis=1)
            pred += ln_b[:, None]
            if a > 0:
                pred = np.logaddexp(math.log(a), pred)
            sse = np.sum((pred - y[None, :]) ** 2, axis=1)
            g = int(np.nanargmin(sse))
            if sse[g] < best_sse[k]:
                best_sse[k] = sse[g]
                best[k] = dict(ln_b=ln_b[g], c0=c0[g], c1=c1[g], ln_d1=Db[g, 0], f1=Fb[g, 0], a=a)
    return [{n: float(v) for n, v in best[k].items()} for k in np.argsort(best_sse) if best[k]]


def _power_law_sse(x: np.ndarray, y: np.ndarray, a: float | None, a_max: float) -> float:
    """Sum of squared log residuals of the best single power law a + b·t^(-c) (same ``a``)."""
    X = np.stack([np.ones_like(x), -x], axis=-1)

    def sse_at(a_: float) -> float:
        z = np.log(np.exp(y) - a_)
        coef, *_ = np.linalg.lstsq(X, z, rcond=None)
        pred = X @ coef
        if a_ > 0:
            pred = np.logaddexp(math.log(a_), pred)
        return float(np.sum((pred - y) ** 2))

    if a is not None:
        return sse_at(a)
    fractions = np.linspace(0.0, 0.99, 100)
    return min(sse_at(f * a_max) for f in fractions)


def _break_p_value(sse: float, sse_pl: float, n: int, n_vary: int) -> float:
    """p-value of the F-test of the BNSL (``n_vary`` parameters) against a single power law.

    The BNSL has 3 more parameters (c1, d1, f1). A gain at the level of rounding (an exact
    power law) gives 1, an exact BNSL that is not a power law gives 0.
    """
    rounding = 1e-18 * n
    gain = sse_pl - sse
    if gain <= rounding:
        return 1.0
    if sse <= rounding or n <= n_vary:
        return 0.0
    F = gain / 3 / (sse / (n - n_vary))
    return float(stats.f.sf(F, 3, n - n_vary))


def _at(value: float, bounds: tuple[float, float], fraction: float) -> tuple[bool, bool]:
    """Whether ``value`` lies within ``fraction`` of the bound range of the lower/upper bound."""
    tol = fraction * (bounds[1] - bounds[0])
    return value <= bounds[0] + tol, value >= bounds[1] - tol


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
    result = _least_squares(x, y, _grid_starts(x, y, a_values), cfg.a is None, a_max)
    if result is None:
        return _failed("no_convergence", n, t_first, T, L_T, cfg.a)
    p = result.params.valuesdict()
    a, b, c0, c1, f1 = p["a"], math.exp(p["ln_b"]), p["c0"], p["c1"], p["f1"]
    d1 = 10.0 ** p["log10_d1"]
    r_d = c0 + c1
    L_d_reducible = b * d1**-c0
    sse = float(np.sum((_log_model(x, p) - y) ** 2))
    p_value = _break_p_value(sse, _power_law_sse(x, y, cfg.a, a_max), n, n_vary)
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


def _log_model(x: np.ndarray, p: dict[str, float]) -> np.ndarray:
    """log L̂ at x = log t for the fit's parameters (``ln_b``, c0, c1, ``log10_d1``, f1, a)."""
    ln_d1 = p["log10_d1"] * math.log(10)
    pred = _log_reducible(x, p["ln_b"], p["c0"], p["c1"], ln_d1, p["f1"])
    return np.logaddexp(math.log(p["a"]), pred) if p["a"] > 0 else pred


def _least_squares(x, y, starts: list[dict], fit_a: bool, a_max: float):
    """The best bounded least-squares fit (lmfit, trust-region reflective) over the starts, one
    from the best grid point of each value of a (with a free, a single start can end in a local
    minimum at a = 0); None if none converges to finite values."""
    log10_range = (x[0] / math.log(10), x[-1] / math.log(10))

    def residual(p: lmfit.Parameters) -> np.ndarray:
        return _log_model(x, p.valuesdict()) - y

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
    low, high = _at(p["log10_d1"], log10_range, EDGE_FRACTION)
    if low or high or p_value > NO_BREAK_P:
        return "no_break"
    at_bound = any(
        any(_at(p[name], bounds, BOUND_TOLERANCE))
        for name, bounds in (("c0", C0_BOUNDS), ("c1", C1_BOUNDS))
    )
    return "at_bound" if at_bound or _at(p["f1"], F1_BOUNDS, BOUND_TOLERANCE)[1] else ""


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
