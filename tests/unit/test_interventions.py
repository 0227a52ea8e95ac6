"""The interventions' comparison (``pipeline.interventions``) on a synthetic summary: each
group's seeds' numbers, their mean and spread, as numpy computes them from the summary."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import findings
from pipeline.interventions import BASELINE, METRICS, baseline_of, compare, course
from pipeline.toy.schedule import TrainConfig
from tests.unit.plots.test_plots import synthetic_summary


def _grouped():
    ds = synthetic_summary(6)
    models = [str(m) for m in ds["model"].values]
    groups = ["base"] * 3 + ["muon"] * 3
    ds = ds.assign_coords(group=("model", groups), seed=("model", [0.0, 1, 2, 0, 1, 2]))
    ds.attrs["toy_models"] = {
        m: {"hidden_size": 16, "intervention": BASELINE if g == "base" else "muon"}
        for m, g in zip(models, groups)
    }
    return ds, models


def test_each_group_s_numbers_are_its_seeds_mean_and_spread():
    ds, models = _grouped()
    settings = compare(ds)
    assert [(s.group, s.intervention, s.width) for s in settings] == [
        ("base", BASELINE, 16),
        ("muon", "muon", 16),
    ]
    assert baseline_of(settings, 16) is settings[0] and baseline_of(settings, 64) is None
    muon = settings[1]
    assert muon.models == tuple(models[3:])
    loss = ds["loss_overall"].sel(model=models[3:]).values  # (model, step)
    last = np.array([row[np.isfinite(row)][-1] for row in loss])
    assert muon.mean("loss") == pytest.approx(last.mean())
    assert muon.spread("loss") == pytest.approx(last.std(ddof=1))
    # the evaluation fit's where there is no training-loss fit (as here)
    assert "bnsl_train_t_d" not in ds
    # … where that fit is not flagged: a flagged fit's break is no deceleration point
    flags = {m: "" for m in models}
    ds.attrs["bnsl_flag"] = flags
    fitted = ds["bnsl_t_d"].sel(model=models[3:]).values
    np.testing.assert_allclose(compare(ds)[1].values["t_d"], fitted)
    ds.attrs["bnsl_flag"] = {**flags, models[3]: "no_break"}
    flagged = compare(ds)[1]
    np.testing.assert_allclose(flagged.values["t_d"], [np.nan, *fitted[1:]])
    assert flagged.mean("t_d") == pytest.approx(fitted[1:].mean())
    assert set(muon.values) == {key for key, _, _ in METRICS}


def test_the_intervention_names_what_training_changes():
    assert TrainConfig().intervention == BASELINE
    assert TrainConfig(optimizer="muon", z_loss=1e-4).intervention == "muon + z_loss=0.0001"
    assert TrainConfig(mu_centering=True).intervention == "mu_centering"


def test_a_settings_course_is_its_seeds_mean_and_spread_at_the_steps_they_share():
    ds, models = _grouped()
    muon = compare(ds)[1]
    steps, mean, spread = course(ds, muon, "train_D")
    per_model = ds["train_D"].sel(model=models[3:]).mean("update_batch").values  # (model, step)
    shared = np.isfinite(per_model).all(axis=0)
    assert shared.sum() >= 2 and steps.tolist() == ds["step"].values[shared].tolist()
    np.testing.assert_allclose(mean, per_model[:, shared].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(spread, per_model[:, shared].std(axis=0, ddof=1), rtol=1e-12)


def test_the_tables_hold_each_settings_mean_and_spread_bold_where_apart():
    ds, models = _grouped()
    base, muon = compare(ds)
    table = findings.interventions_deceleration(ds)
    row = next(line for line in table.splitlines() if line.startswith("| muon "))
    m, sd = muon.mean("loss"), muon.spread("loss")
    cell = f"{m:.3f} ± {sd:.3f}".replace("-", "−")
    apart = abs(m - base.mean("loss")) > sd + base.spread("loss")
    assert (f"**{cell}**" if apart else f"| {cell} |") in row
    assert "| baseline | 16 | 3 |" in table
    interference = findings.interventions_interference(ds)
    assert f"{muon.mean('cos'):.3f}".replace("-", "−") in interference
