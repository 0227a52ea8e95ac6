"""The ``summary`` store: ``results/summary.zarr``, every per-model store (``reduce``,
``reduce_update``) stacked along ``model`` by ``stacked``, the BNSL fits of each curve (named by
``bnsl``), the training curves and counts, and the run's provenance in its attrs."""

from __future__ import annotations

from dataclasses import replace

from pipeline.schema.fits import FITS, bnsl
from pipeline.schema.reduce import REDUCE
from pipeline.schema.reduce_update import UPDATE_REDUCE
from pipeline.schema.seeds import FPM
from pipeline.schema.variable import GD, GS, ZSL, Variable


def stacked(v: Variable) -> Variable:
    """A per-model variable as the summary holds it: along ``model`` (and optional: a model may
    lack what another has)."""
    return replace(v, dims=("model", *v.dims))


#: The update stores' reductions along ``model``.
UPDATE_SUMMARY = tuple(stacked(v) for v in UPDATE_REDUCE)

#: What only the summary holds: training curves, counts, the languages' W-error, the groups.
SUMMARY_OWN = (
    Variable(
        "train_loss",
        ("model", "train_step"),
        "nats",
        "training loss at each logged step (the curve of the training-loss fit)",
        f"{ZSL} Fig. 1",
        True,
    ),
    Variable(
        "train_count",
        ("vocab",),
        "tokens",
        "training-set count of each id (the bins' counts)",
        f"{GD} Fig. 4",
        True,
    ),
    Variable(
        "language_w_error",
        ("model",),
        "1",
        "W-error(d) = ‖σ_{d+1:}‖ / ‖W‖_F of the toy language's true log-probabilities W",
        f"{GS} §5",
        True,
    ),
    Variable(
        "language_w_error_centred",
        ("model",),
        "1",
        "W-error(d) of W with each row centred (what a softmax can use)",
        f"{GS} §5",
        True,
    ),
    Variable(
        "eval_count",
        ("vocab",),
        "tokens",
        "occurrences of each id among V's targets",
        f"{GD} Fig. 4",
        True,
    ),
    Variable(
        "seed_kl",
        ("model", "step", "bin"),
        "nats",
        "mean over the bin's tokens of the model's KL divergence to its group's other seeds",
        FPM,
        True,
    ),
    Variable(
        "seed_kl_overall",
        ("model", "step"),
        "nats",
        "mean over all tokens of the model's KL divergence to its group's other seeds",
        FPM,
        True,
    ),
    Variable(
        "group",
        ("model",),
        "",
        "the model's group: the entry whose seeds it is (models.{name}.seeds), or its own name",
        "comparisons over seeds",
        True,
    ),
    Variable(
        "seed",
        ("model",),
        "",
        "the seed of its initialisation and batch order (toy models; NaN: not trained here)",
        "comparisons over seeds",
        True,
    ),
)

SUMMARY = (
    *(stacked(v) for v in REDUCE),
    *(Variable(bnsl(v.name), ("model",), v.units, v.meaning, v.serves, True) for v in FITS),
    *(
        Variable(
            bnsl(v.name, "train"),
            ("model",),
            v.units,
            f"{v.meaning} (training loss)",
            v.serves,
            True,
        )
        for v in FITS
    ),
    *SUMMARY_OWN,
    *UPDATE_SUMMARY,
)
