"""The one declaration of stored variables (pipeline/schema/): writers conform to it (the docs'
tables generated from it are checked in test_tables.py)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pipeline import schema


def test_every_reduce_variable_is_in_the_summary_with_a_model_dim():
    summary = schema.declared("summary")
    for name, v in schema.declared("reduce").items():
        assert summary[name].dims == ("model", *v.dims)
    for field in schema.FIT_FIELDS:
        assert summary[schema.bnsl(field)].dims == ("model",)
    with pytest.raises(KeyError, match="not a BNSL fit field"):
        schema.bnsl("t_dd")


def test_every_measurement_has_its_four_reductions():
    reduce = schema.declared("reduce")
    for m in schema.MEASUREMENTS:
        for name in (m, schema.overall(m), schema.quantile(m), schema.quantile_overall(m)):
            assert name in reduce, name
            assert reduce[name].units == schema.declared("extract")[m].units


def _reduce_like(**drop_or_add) -> xr.Dataset:
    """A dataset with every required variable of the reduce store (values are irrelevant)."""
    sizes = {"step": 2, "bin": 3, "quantile": 1, "layer": 1, "rank_tokens": 2}
    data = {
        n: (v.dims, np.zeros([sizes[d] for d in v.dims]))
        for n, v in schema.declared("reduce").items()
        if not v.optional
    }
    return xr.Dataset(data)


def test_conform_labels_every_variable():
    ds = schema.conform(_reduce_like(), "reduce")
    assert ds["loss"].attrs["units"] == "nats"
    assert ds["loss_overall"].attrs["long_name"].startswith("mean of cross-entropy")
    assert ds["saturation_step"].attrs["serves"].startswith("Gradient Dissent")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ds: ds.assign(loss_mean=ds["loss_overall"]), "'loss_mean' is not declared"),
        (lambda ds: ds.assign(loss_overall=ds["loss"]), "'loss_overall' has dims"),
        (lambda ds: ds.drop_vars("n_tokens"), "'n_tokens' is missing"),
    ],
)
def test_conform_rejects_what_is_not_declared(change, message):
    with pytest.raises(ValueError, match=message):
        schema.conform(change(_reduce_like()), "reduce")


def test_parameter_statistics_are_named_by_the_schema():
    """Every statistic the maths reports has a store variable, and every store variable of a
    parameter statistic one statistic."""
    from pipeline.maths.parameters import STATISTICS
    from pipeline.schema import PARAM_STATISTICS, param_statistic

    assert sorted(param_statistic(k) for k in STATISTICS) == sorted(PARAM_STATISTICS)
    with pytest.raises(KeyError, match="not a parameter statistic"):
        param_statistic("norm")
