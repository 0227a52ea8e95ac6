"""The ``reduce`` store: ``results/reduce/{model}.zarr``, one model over ``step`` (and ``bin``,
``layer``, ``quantile``, ``rank_tokens``): names derived from the measurements by ``overall``,
``quantile`` and ``quantile_overall``, which writers and readers share."""

from __future__ import annotations

from pipeline.schema.extract import (
    GEOMETRY,
    LOGIT_GRAD_RANK,
    LOGIT_GRAD_RANK_KEPT,
    SUPPRESSED_FORMS,
    TOKEN_MEASUREMENTS,
)
from pipeline.schema.variable import GA, GD, ZSL, Variable


def overall(name: str) -> str:
    """The mean over all tokens (or the net value over all bins) of per-bin variable ``name``."""
    return f"{name}_overall"


def quantile(name: str) -> str:
    """Per-bin quantiles of per-token measurement ``name``."""
    return f"{name}_quantile"


def quantile_overall(name: str) -> str:
    """Quantiles of per-token measurement ``name`` over all tokens."""
    return f"{name}_quantile_overall"


def binned(v: Variable) -> tuple[Variable, ...]:
    m, u, s = v.meaning, v.units, v.serves
    return (
        Variable(v.name, ("step", "bin"), u, f"mean of {m} over each bin's tokens", s),
        Variable(overall(v.name), ("step",), u, f"mean of {m} over all tokens", s),
        Variable(quantile(v.name), ("step", "bin", "quantile"), u, f"quantiles of {m}", s, True),
        Variable(
            quantile_overall(v.name),
            ("step", "quantile"),
            u,
            f"quantiles of {m}, all tokens",
            s,
            True,
        ),
    )


_PAIR = "between checkpoints t and t′ (2t, else the next step)"
REDUCE = (
    *(w for v in TOKEN_MEASUREMENTS for w in binned(v)),
    Variable("n_tokens", ("bin",), "tokens", "evaluation tokens in each bin"),
    Variable(
        "improving",
        ("step", "bin"),
        "bool",
        "bin mean loss < (1 + tolerance) × best earlier loss",
        f"{GD} §2, Fig. 1",
    ),
    Variable("improving_overall", ("step",), "bool", "the same rule for the overall loss", GD),
    Variable(
        "saturation_step", (), "step", "first step from which the overall loss stays saturated", GD
    ),
    Variable(
        "saturation_step_bin", ("bin",), "step", "first step from which a bin stays saturated", GD
    ),
    Variable(
        "dissent_onset_step",
        (),
        "step",
        "first step whose mean cos(∇h⁺, ∇h⁻) ≤ dissent_threshold",
        f"{GD} Fig. 3",
    ),
    Variable(
        "interference",
        ("step", "bin"),
        "1",
        f"loss-change interference D = 1 − |ΣΔℓ| / Σ|Δℓ| {_PAIR}",
        f"{ZSL} Eq. 3, Fig. 2",
        True,
    ),
    Variable(overall("interference"), ("step",), "1", "D over all tokens", f"{ZSL} Fig. 2", True),
    Variable(
        "change_magnitude",
        ("step", "bin"),
        "nats",
        f"M = Σ|Δℓ| / N {_PAIR}",
        f"{ZSL} Eq. 4, Fig. 2",
        True,
    ),
    Variable(
        overall("change_magnitude"), ("step",), "nats", "M over all tokens", f"{ZSL} Fig. 2", True
    ),
    Variable(overall("loss_change"), ("step",), "nats", "ΔL = mean Δℓ over all tokens", ZSL, True),
    Variable("pair_step", ("step",), "step", "the partner t′ of each step t", ZSL, True),
    Variable(
        "layer_cos_attractive_repulsive",
        ("step", "layer"),
        "1",
        "cos(∇θ⁺, ∇θ⁻) of each block's parameters",
        f"{GD} Fig. 7",
        True,
    ),
    Variable(
        "layer_norm_grad",
        ("step", "layer"),
        "nats",
        "‖mean ∇θ‖ of each block",
        f"{GD} Fig. 7",
        True,
    ),
    Variable(
        "layer_norm_ratio_attractive",
        ("step", "layer"),
        "1",
        "‖mean ∇θ⁺‖ / ‖mean ∇θ‖ of each block (over its parameters)",
        f"{GD} Fig. 7",
        True,
    ),
    Variable(
        "layer_norm_ratio_repulsive",
        ("step", "layer"),
        "1",
        "‖mean ∇θ⁻‖ / ‖mean ∇θ‖ of each block (over its parameters)",
        f"{GD} Fig. 7",
        True,
    ),
    Variable(
        "layer_interference",
        ("step", "layer"),
        "1",
        "size-weighted mean D_W of each block's weights",
        f"{ZSL} Fig. 3a",
        True,
    ),
    Variable(
        "head_cos_attractive_repulsive",
        ("step",),
        "1",
        "cos(∇θ⁺, ∇θ⁻) of the output layer",
        f"{GD} Fig. 7",
        True,
    ),
    Variable(
        "head_interference", ("step",), "1", "D_W of the output layer", f"{ZSL} Fig. 3a", True
    ),
    Variable(
        "embed_interference", ("step",), "1", "D_W of the input embedding", f"{ZSL} Fig. 3a", True
    ),
    LOGIT_GRAD_RANK,
    LOGIT_GRAD_RANK_KEPT,
    *SUPPRESSED_FORMS,
    *GEOMETRY,
    Variable("hidden_size", (), "1", "width d of the model (-1: unknown)", GA),
    Variable(
        "vocab_size",
        (),
        "1",
        "n_v (Godey & Artzi's V), rows of the output layer; G's rank is ≤ min(N, n_v − 1)",
        GA,
    ),
    Variable(
        "update_rank_bound",
        (),
        "rank",
        "2d, the rank bound of a logit update, not of G (-1: unknown)",
        GA,
    ),
    Variable("n_params", (), "parameters", "the model's parameter count (-1: unknown)", GD),
)
