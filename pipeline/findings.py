"""The docs' result tables, read from a finished run's summary (``results/summary.zarr``).

Each table is one function of the summary, keyed by the marker that holds it in the docs
(``<!-- run:NAME -->``); ``python -m pipeline.tables --run results/`` rewrites them from a run,
and a test fails when the docs and the run disagree. Numbers are rounded as printed: a table
holds exactly what the run gives at that rounding. Only reading and formatting live here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import xarray as xr


def _num(x, digits: int = 2) -> str:
    x = float(x)
    if not math.isfinite(x):
        return "–"
    return f"{x:,.{digits}f}".replace("-", "−")


def _step(x) -> str:
    """A step (or a rank, a count), rounded to an integer."""
    return "–" if not math.isfinite(float(x)) else str(round(float(x)))


def _table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    """A Markdown table, numbers right-aligned and the ``left`` columns (text) left-aligned."""
    right = ["---" if i in left else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(right) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _last(da: xr.DataArray) -> xr.DataArray:
    """``da`` at the model's last step with a value (the summary pads shorter models)."""
    ok = da.notnull()
    while ok.ndim > 1:
        ok = ok.any(ok.dims[-1])
    return da.sel(step=da.step[ok.values][-1])


def _bins(ds: xr.Dataset, model: str) -> list[str]:
    """A model's bins saturated at its last step, with the step each saturation began."""
    sat = ds.saturation_step_bin.sel(model=model)
    out = []
    for b, s in zip(ds.bin.values, sat.values, strict=True):
        if np.isfinite(s):
            out.append(f"{int(b)} ({int(s)})".replace("-", "−"))
    return out


def models(ds: xr.Dataset) -> str:
    """Each model's size, final loss and the bins it ends saturated on."""
    rows = []
    for m in ds.model.values:
        one = ds.sel(model=m)
        sat = one.saturation_step_bin.notnull()
        share = float(one.n_tokens.where(sat).sum() / one.n_tokens.sum())
        rows.append(
            [
                str(m),
                f"{int(one.n_params):,}",
                _num(_last(one.loss_overall)),
                _step(one.saturation_step),
                ", ".join(_bins(ds, m)) or "none",
                f"{share:.0%}",
            ]
        )
    header = [
        "model",
        "parameters",
        "final loss (nats)",
        "saturation step",
        "bins saturated at the end (from step)",
        "their share of V",
    ]
    return _table(header, rows, left=(0, 4))


def fits(ds: xr.Dataset) -> str:
    """The BNSL fits of the evaluation loss at the checkpoints and of the training loss."""
    rows = []
    for m in ds.model.values:
        one = ds.sel(model=m)
        flags = [
            ds.attrs.get("bnsl_flag", {}).get(m, ""),
            ds.attrs.get("bnsl_train_flag", {}).get(m, ""),
        ]
        rows.append(
            [
                str(m),
                _step(one.bnsl_t_d),
                _step(one.bnsl_train_t_d),
                _num(one.bnsl_r_d, 3),
                _num(one.bnsl_train_r_d, 3),
                _num(one.bnsl_L_d),
                _num(one.bnsl_train_L_d),
                " / ".join(f or "–" for f in flags),
            ]
        )
    header = [
        "model",
        "t_d (eval)",
        "t_d (train)",
        "r_d (eval)",
        "r_d (train)",
        "L_d (eval)",
        "L_d (train)",
        "flags (eval / train)",
    ]
    return _table(header, rows, left=(0, 7))


def bottleneck(ds: xr.Dataset) -> str:
    """The share of the logit gradient the output layer loses, and the ranks, at the last step."""
    rows = []
    n = int(ds.rank_tokens.values[-1])
    for m in ds.model.values:
        one = ds.sel(model=m)
        rows.append(
            [
                str(m),
                str(int(one.hidden_size)),
                _num(_last(one.suppressed_squared), 3),
                _num(_last(one.suppressed_batch), 3),
                _num(_last(one.suppressed_norm), 3),
                _num(_last(one.kept_cosine), 3),
                _step(_last(one.logit_grad_rank).sel(rank_tokens=n)),
                _step(_last(one.logit_grad_rank_kept).sel(rank_tokens=n)),
            ]
        )
    header = [
        "model",
        "d",
        "mean 1 − κ",
        "1 − κ of V as a batch",
        "mean √(1 − κ)",
        "mean √κ",
        f"rank(G), N = {n}",
        f"rank(GQ), N = {n}",
    ]
    return _table(header, rows)


def _peak(da: xr.DataArray, fn=np.nanargmax, digits: int = 2) -> str:
    v = da.values
    if not np.isfinite(v).any():
        return "–"
    i = int(fn(v))
    return f"{v[i]:.{digits}f} ({int(da.step.values[i])})".replace("-", "−")


def geometry(ds: xr.Dataset) -> str:
    """The output layer's geometry over training: peak (step) and final value."""
    rows = []
    for m in ds.model.values:
        one = ds.sel(model=m)
        rows.append(
            [
                str(m),
                _peak(one.head_spectrum_kl),
                _num(_last(one.head_spectrum_kl)),
                _peak(one.anisotropy),
                _num(_last(one.anisotropy)),
                _peak(one.head_common_direction),
                _num(_last(one.head_common_direction)),
                _peak(one.cos_attractive_repulsive_overall, np.nanargmin),
                _num(one.language_w_error_centred, 3),
            ]
        )
    header = [
        "model",
        "KL, peak (step)",
        "KL, final",
        "anisotropy, peak (step)",
        "anisotropy, final",
        "common direction, peak (step)",
        "final",
        "mean cos(∇h⁺, ∇h⁻), lowest (step)",
        "W-error (centred)",
    ]
    return _table(header, rows)


def _spread(da: xr.DataArray, digits: int = 2) -> str:
    """Mean over the update batches, and their range."""
    v = da.values
    if not np.isfinite(v).any():
        return "–"
    return f"{np.nanmean(v):.{digits}f} ({np.nanmin(v):.{digits}f}–{np.nanmax(v):.{digits}f})"


def single_step(ds: xr.Dataset) -> str:
    """One optimizer step at each analysed step: D on V and on the batch (mean and range over
    the update batches), |ΔL| and M on V, the first-order agreement and App. C.4's sums."""
    if "eval_D" not in ds:
        return "(no update stage in this run)"
    rows = []
    for m in ds.model.values:
        one = ds.sel(model=m)
        for s in one.step.values[one.eval_D.notnull().any("update_batch").values]:
            at = one.sel(step=s)
            rows.append(
                [
                    str(m),
                    str(int(s)),
                    _spread(at.eval_D),
                    _spread(at.train_D),
                    f"{float(at.eval_abs_change.mean()):.1e}",
                    f"{float(at.eval_M.mean()):.4f}",
                    f"{float(at.eval_pearson.min()):.3f}",
                    _num(at.coherence_g.mean()),
                    _num(at.coherence_u.mean()),
                ]
            )
    header = [
        "model",
        "step",
        "D on V",
        "D on the update batch",
        "\\|ΔL\\| on V",
        "M on V",
        "Pearson r(Δℓ, Δ̃ℓ) on V, lowest",
        "C_g",
        "C_u",
    ]
    return _table(header, rows)


def head_rank(ds: xr.Dataset) -> str:
    """Models with a factored output layer: final loss and lost share against the rank r."""
    toy = ds.attrs.get("toy_models", {})
    rows = [
        [
            str(m),
            str(toy[m]["head_rank"]),
            str(int(ds.hidden_size.sel(model=m))),
            _num(_last(ds.loss_overall.sel(model=m))),
            _num(_last(ds.suppressed_squared.sel(model=m)), 3),
        ]
        for m in ds.model.values
        if toy.get(m, {}).get("head_rank")
    ]
    return _table(["model", "head rank r", "d", "final loss (nats)", "mean 1 − κ"], rows)


def spamlang(ds: xr.Dataset) -> str:
    """SpamLang models' final loss: one row per (width, learning rate), one column per V."""
    toy = ds.attrs.get("toy_models", {})
    spam = {m: t for m, t in toy.items() if t.get("language_kind") == "spam" and m in ds.model}
    vocabs = sorted({int(t["language_vocab_size"]) for t in spam.values()})
    rows = []
    for d, lr in sorted({(t["hidden_size"], t["learning_rate"]) for t in spam.values()}):
        row = [f"d = {d}, lr {lr:g}"]
        for v in vocabs:
            ms = [
                m
                for m, t in spam.items()
                if (t["hidden_size"], t["learning_rate"], int(t["language_vocab_size"]))
                == (d, lr, v)
            ]
            row.append(_num(_last(ds.loss_overall.sel(model=ms[0]))) if ms else "–")
        rows.append(row)
    rows.append(["ln V (uniform guess)", *(_num(math.log(v)) for v in vocabs)])
    return _table(["final loss (nats)", *(f"V = {v:,}" for v in vocabs)], rows)


def saturation(ds: xr.Dataset) -> str:
    """Each model's final and best loss, saturation step, and the extremes of its geometry."""
    rows = []
    for m in ds.model.values:
        one = ds.sel(model=m)
        rows.append(
            [
                str(m),
                _num(_last(one.loss_overall), 3),
                _peak(one.loss_overall, np.nanargmin, 3),
                _step(one.saturation_step),
                _peak(one.head_spectrum_kl, np.nanargmin)
                + " → "
                + _num(_last(one.head_spectrum_kl), 3),
                _num(one.head_common_direction.max(), 3),
                _num(one.cos_attractive_repulsive_overall.min(), 3),
            ]
        )
    header = [
        "model",
        "final loss",
        "best loss (step)",
        "saturation step",
        "min KL (step) → final",
        "max common-direction share",
        "most negative mean cos(∇h⁺, ∇h⁻)",
    ]
    return _table(header, rows)


#: Decimals of each number of the interventions' comparison (``pipeline.interventions.METRICS``).
_INTERVENTION_DIGITS = {"t_d": 0, "L_d": 3, "r_d": 3, "loss": 3, "rare_loss": 3}


def _interventions(ds: xr.Dataset, keys: tuple[str, ...]) -> str:
    """One row per setting (intervention × width), ``keys``' mean ± s.d. over its seeds; bold
    where the interval lies clear of the baseline's of the same width."""
    from pipeline.interventions import METRICS, baseline_of, compare

    labels = {key: label for key, label, _ in METRICS}
    settings = compare(ds)
    rows = []
    for s in settings:
        base = baseline_of(settings, s.width)
        row = [s.intervention, str(s.width), str(len(s.models))]
        for key in keys:
            digits = _INTERVENTION_DIGITS.get(key, 3 if key != "spectrum_kl" else 4)
            m, sd = s.mean(key), s.spread(key)
            cell = _num(m, digits) + (f" ± {_num(sd, digits)}" if math.isfinite(sd) else "")
            if base is not None and s is not base and _apart(s, base, key):
                cell = f"**{cell}**"
            row.append(cell)
        rows.append(row)
    return _table(["intervention", "d", "seeds", *(labels[k] for k in keys)], rows, left=(0,))


def _apart(a, b, key: str) -> bool:
    """Whether the intervals mean ± s.d. of two settings do not overlap."""
    ma, sa, mb, sb = a.mean(key), a.spread(key), b.mean(key), b.spread(key)
    if not all(map(math.isfinite, (ma, sa, mb, sb))):
        return False
    return abs(ma - mb) > sa + sb


def interventions_deceleration(ds: xr.Dataset) -> str:
    """The interventions' deceleration and final losses, mean ± s.d. over seeds."""
    return _interventions(ds, ("t_d", "L_d", "r_d", "loss", "rare_loss"))


def interventions_interference(ds: xr.Dataset) -> str:
    """The interventions' interference, dissent, output-layer geometry and cross-seed KL at the
    end."""
    keys = ("D_eval", "D_train", "D_W", "cos", "common", "spectrum_kl", "anisotropy", "seed_kl")
    return _interventions(ds, keys)


#: The docs' result tables by marker name, with the run (``run`` in the config; None: the
#: embedded default) whose summary they read.
TABLES: dict[str, tuple[str | None, Callable[[xr.Dataset], str]]] = {
    "default-models": (None, models),
    "default-fits": (None, fits),
    "default-bottleneck": (None, bottleneck),
    "default-geometry": (None, geometry),
    "default-single-step": (None, single_step),
    "bottleneck-head-rank": ("bottleneck", head_rank),
    "bottleneck-spamlang": ("bottleneck", spamlang),
    "saturation": ("saturation", saturation),
    "saturation-geometry": ("saturation", geometry),
    "interventions-deceleration": ("interventions", interventions_deceleration),
    "interventions-interference": ("interventions", interventions_interference),
}
