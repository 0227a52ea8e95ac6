"""The ``seeds`` store: ``results/seeds/{group}/step{N}.zarr``, the cross-seed divergence of one
group's models (the seeds of one setting) at one step, per evaluation token (with ``target``
and ``bin`` as coordinates along ``token``, as in an extraction store)."""

from __future__ import annotations

from pipeline.schema.variable import Variable

FPM = "Fehlauer, Mahowald & Pimentel 2025"

SEEDS = (
    Variable(
        "seed_kl",
        ("model", "token"),
        "nats",
        "mean over the group's other seeds b of KL(p_model ‖ p_b) at the token's position",
        FPM,
    ),
)
