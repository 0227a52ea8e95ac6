"""The one declaration of every variable the workflow stores: name, dimensions, units, meaning,
and the paper and figure it serves; one module per store.

Writers pass their dataset through ``conform(ds, store)`` before writing: every data variable
must be declared for that store with those dimensions, and each gets CF-style ``long_name`` and
``units`` attrs. Readers take names from the functions that build them (``overall``,
``quantile``, ``bnsl``, ``update_summary``, ``param_statistic``) rather than writing them out.
The docs' tables are rendered from here by ``pipeline.tables``.

The stores: ``extract`` (one checkpoint), ``update`` (one step from one checkpoint), ``reduce``
and ``reduce_update`` (one model over steps), ``seeds`` (one group's seeds at one step),
``summary`` (every model, stacked along ``model``), ``fits`` (the columns of
``results/fits/bnsl.csv``).

Kept free of heavy imports (xarray only where a dataset is conformed): the workflow's DAG and
the analysis half never load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.schema.extract import (
    EXTRACT,
    GEOMETRY,
    MEASUREMENTS,
    PARAM_MEASUREMENTS,
    PARAM_STATISTICS,
    TOKEN_MEASUREMENTS,
    param_statistic,
)
from pipeline.schema.fits import CURVES, FIT_FIELDS, FITS, STDERR_FIELDS, bnsl
from pipeline.schema.reduce import REDUCE, binned, overall, quantile, quantile_overall
from pipeline.schema.reduce_update import UPDATE_REDUCE, update_summary
from pipeline.schema.seeds import SEEDS
from pipeline.schema.summary import SUMMARY, SUMMARY_OWN, UPDATE_SUMMARY, stacked
from pipeline.schema.update import UPDATE
from pipeline.schema.variable import Variable

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "CURVES",
    "EXTRACT",
    "FITS",
    "FIT_FIELDS",
    "GEOMETRY",
    "MEASUREMENTS",
    "PARAM_MEASUREMENTS",
    "PARAM_STATISTICS",
    "REDUCE",
    "STDERR_FIELDS",
    "STORES",
    "SUMMARY",
    "TOKEN_MEASUREMENTS",
    "UPDATE",
    "UPDATE_REDUCE",
    "SUMMARY_OWN",
    "UPDATE_SUMMARY",
    "Variable",
    "binned",
    "bnsl",
    "conform",
    "declared",
    "overall",
    "param_statistic",
    "quantile",
    "quantile_overall",
    "stacked",
    "update_summary",
]

STORES = {
    "extract": EXTRACT,
    "update": UPDATE,
    "reduce": REDUCE,
    "reduce_update": UPDATE_REDUCE,
    "seeds": SEEDS,
    "summary": SUMMARY,
    "fits": FITS,
}


def declared(store: str) -> dict[str, Variable]:
    """The variables declared for ``store`` (a key of ``STORES``), by name."""
    return {v.name: v for v in STORES[store]}


def conform(ds: xr.Dataset, store: str) -> xr.Dataset:
    """Check ``ds`` against the declaration of ``store`` and label its variables.

    Raises ``ValueError`` naming every undeclared variable, every variable whose dimensions
    differ from the declaration, and every required variable that is missing. Returns ``ds``
    with ``long_name``, ``units`` and ``serves`` attrs on each data variable.
    """
    decl = declared(store)
    problems = []
    for name, da in ds.data_vars.items():
        v = decl.get(name)
        if v is None:
            problems.append(f"{name!r} is not declared")
        elif set(da.dims) != set(v.dims):
            problems.append(f"{name!r} has dims {da.dims}, declared {v.dims}")
    missing = [n for n, v in decl.items() if not v.optional and n not in ds.data_vars]
    problems += [f"{n!r} is missing" for n in missing]
    if problems:
        raise ValueError(
            f"the {store} store does not match its declaration in pipeline/schema/{store}.py: {'; '.join(problems)}"
        )
    out = ds.copy()
    for name in out.data_vars:
        v = decl[name]
        out[name].attrs.update(long_name=v.meaning, units=v.units, serves=v.serves)
    return out
