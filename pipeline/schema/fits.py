"""The ``fits`` store: the columns of ``results/fits/bnsl.csv`` (one row per model and curve),
and ``bnsl``, which names them in the summary."""

from __future__ import annotations

from pipeline.schema.variable import ZSL, Variable

FITS = (
    Variable("t_d", (), "step", "deceleration step, d1", f"{ZSL} Table 2"),
    Variable("L_d", (), "nats", "loss at deceleration, a + b·d1^(−c0)", f"{ZSL} Table 2"),
    Variable("r_d", (), "1", "post-break slope c0 + c1", f"{ZSL} Table 2"),
    Variable("L_hat_T", (), "nats", "post-break power law extrapolated to T", f"{ZSL} Table 2"),
    Variable("L_T", (), "nats", "observed loss at the last fitted step T", f"{ZSL} Table 2"),
    Variable("T", (), "step", "the last fitted step", ZSL),
    Variable("t_first", (), "step", "the first fitted step", ZSL),
    Variable("rsle", (), "1", "root mean squared log error of the fit", ZSL),
    *(
        Variable(p, (), u, f"BNSL parameter {p}", f"{ZSL} Eq. 1")
        for p, u in (("a", "nats"), ("b", "nats"), ("c0", "1"), ("c1", "1"))
    ),
    Variable("d1", (), "step", "BNSL parameter d1", f"{ZSL} Eq. 1"),
    Variable("f1", (), "1", "BNSL parameter f1", f"{ZSL} Eq. 1"),
    Variable("n_points", (), "points", "number of fitted points", ZSL),
    Variable("converged", (), "bool", "lmfit reported success", ZSL),
    Variable("L_hat_T_over_L_T", (), "1", "L̂_T / L_T", f"{ZSL} Table 2"),
)
FIT_FIELDS = tuple(v.name for v in FITS)
#: Raw parameters whose standard errors are reported (``stderr_<name>`` columns).
STDERR_FIELDS = ("a", "b", "c0", "c1", "d1", "f1", "r_d")


#: The loss curves a BNSL is fitted to: the evaluation loss at the checkpoints, and the
#: training loss at every logged step (where the model has a training log).
CURVES = ("eval", "train")


def bnsl(field: str, curve: str = "eval") -> str:
    """The summary variable (``model``,) holding fit field ``field`` (one of ``FIT_FIELDS``) of
    the fit to ``curve`` (``CURVES``): ``bnsl_<field>``, ``bnsl_train_<field>``."""
    if field not in FIT_FIELDS:
        raise KeyError(f"{field!r} is not a BNSL fit field; fields: {', '.join(FIT_FIELDS)}")
    if curve not in CURVES:
        raise KeyError(f"{curve!r} is not a fitted curve; curves: {', '.join(CURVES)}")
    return f"bnsl_{field}" if curve == "eval" else f"bnsl_{curve}_{field}"
