"""The broken power law of Zero-sum learning (Mircea et al. 2025, Eq. 1, App. C.1) and the
pure parts of its fit; the fit itself (lmfit, flags, the files) is ``pipeline.fit``.

A loss curve L(t) over training steps t is described by a smoothly broken power law with one
break (Caballero et al. 2023, "Broken neural scaling laws")::

    L(t) = a + b · t^(-c0) · (1 + (t / d1)^(1 / f1))^(-c1 · f1)

Before the break (t << d1) the reducible loss falls as t^(-c0), after it (t >> d1) as
t^(-(c0 + c1)); f1 > 0 sets how sharp the break is. The irreducible loss ``a`` is 0 by default
(as in ZSL), a fixed value, or fitted (a >= 0).

The fit is in log space, at x = log t (``log_model``). Its start is a grid over the break
(``grid_starts``): d1 log-spaced across the fitted step range, f1 log-spaced over its bounds,
and, when ``a`` is fitted, a few values of ``a`` below the smallest loss. For fixed (a, d1, f1)
the model is linear in (log b, c0, c1) —
``log(L - a) = log b - c0 log t - c1 f1 softplus((log t - log d1) / f1)`` — so each grid point is
solved exactly by linear least squares (variable projection) and the grid is dense only in the
two nonlinear parameters: no starting guess for b, c0, c1 is needed. A break counts only where
the BNSL beats the best single power law (``power_law_sse``) by an F-test
(``break_p_value``).

Optional preprocessing for dense loss curves (ZSL App. C.1): ``smooth_log``, a centred moving
average of log L over neighbouring points (the window shrinks symmetrically at the ends);
``smooth_log_spaced``, a log-spaced moving average (the paper's, for a training loss recorded at
every step); ``subsample_log``, at most n points, log-spaced in step.

Numpy and scipy only: no I/O, no configuration.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

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


def softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + e^z), without overflow."""
    return np.logaddexp(0.0, z)


def log_reducible(x, ln_b, c0, c1, ln_d1, f1):
    """log(b · t^(-c0) · (1 + (t/d1)^(1/f1))^(-c1·f1)) at x = log t, in overflow-free form."""
    return ln_b - c0 * x - c1 * f1 * softplus((x - ln_d1) / f1)


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
    return a + np.exp(log_reducible(x, np.log(b), c0, c1, np.log(d1), f1))


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


# -- the fit's pure parts: starts, the power-law alternative, bounds -----------------------------


def grid_starts(x: np.ndarray, y: np.ndarray, a_values: np.ndarray) -> list[dict[str, float]]:
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
        h = Fb * softplus((x[None, :] - Db) / Fb)  # (grid, point)
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


def power_law_sse(x: np.ndarray, y: np.ndarray, a: float | None, a_max: float) -> float:
    """Sum of squared log residuals of the best single power law a + b·t^(-c) (same ``a``)."""
    X = np.stack([np.ones_like(x), -x], axis=-1)

    def ssenear_bounds(a_: float) -> float:
        z = np.log(np.exp(y) - a_)
        coef, *_ = np.linalg.lstsq(X, z, rcond=None)
        pred = X @ coef
        if a_ > 0:
            pred = np.logaddexp(math.log(a_), pred)
        return float(np.sum((pred - y) ** 2))

    if a is not None:
        return ssenear_bounds(a)
    fractions = np.linspace(0.0, 0.99, 100)
    return min(ssenear_bounds(f * a_max) for f in fractions)


def break_p_value(sse: float, sse_pl: float, n: int, n_vary: int) -> float:
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


def near_bounds(value: float, bounds: tuple[float, float], fraction: float) -> tuple[bool, bool]:
    """Whether ``value`` lies within ``fraction`` of the bound range of the lower/upper bound."""
    tol = fraction * (bounds[1] - bounds[0])
    return value <= bounds[0] + tol, value >= bounds[1] - tol


def log_model(x: np.ndarray, p: dict[str, float]) -> np.ndarray:
    """log L̂ at x = log t for the fit's parameters (``ln_b``, c0, c1, ``log10_d1``, f1, a)."""
    ln_d1 = p["log10_d1"] * math.log(10)
    pred = log_reducible(x, p["ln_b"], p["c0"], p["c1"], ln_d1, p["f1"])
    return np.logaddexp(math.log(p["a"]), pred) if p["a"] > 0 else pred
