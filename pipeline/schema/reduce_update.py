"""The ``reduce_update`` store: ``results/reduce/{model}_update.zarr``, one model's update
stores reduced over ``step`` (and ``batch``, ``bin``, ``alpha``, ``sample``,
``gradient_token``): each statistic of the single-step changes on each set, named by
``update_summary``, which writers and readers share."""

from __future__ import annotations

from pipeline.schema.variable import ZSL, Variable


def update_summary(s: str, key: str) -> str:
    """The summary variable of statistic ``key`` of the single-step changes on set ``s``
    (``eval`` or ``train``)."""
    return f"{s}_{key}"


_SETS = {"eval": "V", "train": "update batch k"}
_STATS = {
    "D": ("1", "D = 1 − |ΣΔℓ_i| / Σ|Δℓ_i| of the single-step changes", f"{ZSL} Fig. 3b"),
    "M": ("nats", "M = Σ|Δℓ_i| / N", f"{ZSL} Fig. 5"),
    "abs_change": ("nats", "|ΔL| = |mean Δℓ_i| = M (1 − D)", f"{ZSL} Fig. 3b"),
    "D_pred": ("1", "D of the first-order predictions Δ̃ℓ_i", f"{ZSL} App. C.4"),
    "pearson": ("1", "Pearson r(Δℓ_i, Δ̃ℓ_i)", f"{ZSL} Fig. 4"),
    "spearman": ("1", "Spearman r(Δℓ_i, Δ̃ℓ_i)", f"{ZSL} Fig. 4"),
}
UPDATE_REDUCE = (
    *(
        Variable(update_summary(s, k), ("step", "update_batch"), u, f"{m} on {where}", z, True)
        for s, where in _SETS.items()
        for k, (u, m, z) in _STATS.items()
    ),
    *(
        Variable(
            update_summary(s, f"{k}_bin"),
            ("step", "update_batch", "bin"),
            _STATS[k][0],
            f"{_STATS[k][1]} on {where}, per frequency bin",
            _STATS[k][2],
            True,
        )
        for s, where in _SETS.items()
        for k in ("D", "M")
    ),
    Variable("update_norm", ("step", "update_batch"), "unit θ", "‖Δθ_k‖", f"{ZSL} Fig. 6", True),
    Variable(
        "landscape_change",
        ("step", "update_batch", "alpha"),
        "nats",
        "ΔL(α): mean landscape loss minus its value at α = 0",
        f"{ZSL} Fig. 9, 10",
        True,
    ),
    Variable(
        "landscape_token",
        ("step", "alpha", "sample"),
        "nats",
        "per-token cross-sections along Δθ_0 of the sampled tokens",
        f"{ZSL} Fig. 7, 8",
        True,
    ),
    Variable(
        "sample_improved",
        ("step", "sample"),
        "bool",
        "the sampled token's loss fell at the actual step (α = ‖Δθ_0‖)",
        f"{ZSL} Fig. 7, 8",
        True,
    ),
    Variable(
        "sample_loss_change",
        ("step", "sample"),
        "nats",
        "Δℓ_i along Δθ_0 of the sampled tokens",
        f"{ZSL} Fig. 4",
        True,
    ),
    Variable(
        "sample_loss_change_pred",
        ("step", "sample"),
        "nats",
        "Δ̃ℓ_i along Δθ_0 of the sampled tokens",
        f"{ZSL} Fig. 4",
        True,
    ),
    Variable(
        "update_grad_cos",
        ("step", "gradient_token"),
        "1",
        "cos(Δθ_0, ∇θℓ_i)",
        f"{ZSL} Fig. 6",
        True,
    ),
    Variable(
        "grad_norm",
        ("step", "gradient_token"),
        "nats / unit θ",
        "‖∇θℓ_i‖",
        f"{ZSL} Fig. 6",
        True,
    ),
    Variable("coherence_g", ("step", "update_batch"), "1", "C_g", f"{ZSL} App. C.4", True),
    Variable(
        "coherence_u",
        ("step", "update_batch"),
        "1",
        "C_u = C_uG / C_ug; C_g·C_u = 1 − D(Δ̃ℓ)",
        f"{ZSL} App. C.4",
        True,
    ),
)
