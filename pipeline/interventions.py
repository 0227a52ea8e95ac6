"""The interventions' comparison, read from a summary: each setting (a group of seeds: one
intervention at one width) by its deceleration, final losses, interference and output-layer
geometry, as mean ± spread over its seeds, beside the baseline (plain AdamW) of its width.

``METRICS`` names each number and how it is read from one model of the summary; ``compare``
gives one ``Setting`` per group. The figure (``pipeline.plots.interventions``) and the docs'
table (``pipeline.findings.interventions``) both draw on it. How each model was trained comes
from the summary's ``attrs["toy_models"]`` (``intervention``, ``hidden_size``), its group from
the ``group`` coordinate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from pipeline.maths.frequency import UNSEEN_BIN

#: What training that is no intervention is called (``TrainConfig.intervention``).
BASELINE = "baseline"


def _last(da: xr.DataArray) -> float:
    """A model's per-step value at its last step with one (averaged over other dimensions)."""
    while da.ndim > 1:
        da = da.mean(da.dims[-1], skipna=True)
    ok = np.isfinite(da.values)
    return float(da.values[ok][-1]) if ok.any() else float("nan")


def _rarest_loss(one: xr.Dataset) -> float:
    """The mean loss of the two rarest seen bins at the last step."""
    bins = one["bin"].values
    seen = np.sort(bins[bins != UNSEEN_BIN])
    loss = one["loss"].sel(bin=seen[:2])
    return _last(loss.transpose("step", "bin"))


def _fit(name: str) -> Callable[[xr.Dataset], float]:
    """A BNSL fit's parameter: the dense training-loss fit's where there is one, else the
    evaluation loss's; NaN where that fit is flagged (``pipeline.fit``: no break within the
    curve, a break at its edge, too few points), whose break is no deceleration point."""

    def read(one: xr.Dataset) -> float:
        model = str(one["model"].item())
        for var, flags in (
            (f"bnsl_train_{name}", "bnsl_train_flag"),
            (f"bnsl_{name}", "bnsl_flag"),
        ):
            if var in one and np.isfinite(one[var].item()):
                flagged = one.attrs.get(flags, {}).get(model)
                return float("nan") if flagged else float(one[var].item())
        return float("nan")

    return read


def _at_end(var: str) -> Callable[[xr.Dataset], float]:
    return lambda one: _last(one[var]) if var in one else float("nan")


#: (key, label, reader of one model's summary): the comparison's numbers.
METRICS: tuple[tuple[str, str, Callable[[xr.Dataset], float]], ...] = (
    ("t_d", "t_d (step)", _fit("t_d")),
    ("L_d", "L_d (nats)", _fit("L_d")),
    ("r_d", "r_d", _fit("r_d")),
    ("loss", "final loss (nats)", _at_end("loss_overall")),
    ("rare_loss", "final loss, 2 rarest bins", _rarest_loss),
    ("D_eval", "single-step D on V, last step", _at_end("eval_D")),
    ("D_train", "single-step D on the batch, last step", _at_end("train_D")),
    ("D_W", "D_W, mean over blocks", _at_end("layer_interference")),
    ("cos", "mean cos(∇h⁺, ∇h⁻)", _at_end("cos_attractive_repulsive_overall")),
    ("common", "common-direction share", _at_end("head_common_direction")),
    ("spectrum_kl", "spectrum KL(p ‖ uniform)", _at_end("head_spectrum_kl")),
    ("anisotropy", "anisotropy", _at_end("anisotropy")),
    ("seed_kl", "cross-seed KL (nats)", _at_end("seed_kl_overall")),
)


@dataclass(frozen=True)
class Setting:
    """One group of seeds: its intervention, width, models, and per metric key the seeds'
    values, mean and spread (sample standard deviation; NaN for one seed)."""

    group: str
    intervention: str
    width: int
    models: tuple[str, ...]
    values: dict[str, np.ndarray]

    def mean(self, key: str) -> float:
        v = self.values[key]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    def spread(self, key: str) -> float:
        v = self.values[key]
        v = v[np.isfinite(v)]
        return float(v.std(ddof=1)) if v.size > 1 else float("nan")


def compare(ds: xr.Dataset) -> list[Setting]:
    """Every group of the summary's toy models as a ``Setting``, the baselines first, then by
    intervention and width."""
    toy = ds.attrs.get("toy_models", {})
    models = [str(m) for m in ds["model"].values]
    groups = ds["group"].values if "group" in ds.coords else np.array(models)
    ds = ds.assign_coords(model=models)
    out = []
    for group in dict.fromkeys(str(g) for g in groups):
        members = [m for m, g in zip(models, groups) if str(g) == group and m in toy]
        if not members:
            continue
        values = {
            key: np.array([read(ds.sel(model=m)) for m in members]) for key, _, read in METRICS
        }
        first = toy[members[0]]
        out.append(
            Setting(
                group,
                first.get("intervention", BASELINE),
                int(first["hidden_size"]),
                tuple(members),
                values,
            )
        )
    return sorted(out, key=lambda s: (s.intervention != BASELINE, s.intervention, s.width))


def baseline_of(settings: list[Setting], width: int) -> Setting | None:
    """The baseline setting at ``width``, if the run has one."""
    return next((s for s in settings if s.intervention == BASELINE and s.width == width), None)


def course(ds: xr.Dataset, setting: Setting, var: str) -> tuple[np.ndarray, ...]:
    """``var`` over training for one setting: the steps where every seed has it, and the mean
    and spread over seeds there (each model's value averaged over ``var``'s other dimensions,
    e.g. the update batches)."""
    da = ds[var].assign_coords(model=[str(m) for m in ds["model"].values])
    da = da.sel(model=list(setting.models))
    other = [d for d in da.dims if d not in ("model", "step")]
    values = da.mean(other, skipna=True).transpose("model", "step").values if other else da.values
    ok = np.isfinite(values).all(axis=0)
    values = values[:, ok]
    spread = values.std(axis=0, ddof=1) if len(values) > 1 else np.full(ok.sum(), np.nan)
    return ds["step"].values[ok], values.mean(axis=0), spread
