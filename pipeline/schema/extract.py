"""The ``extract`` store: ``results/extract/{model}/step{N}.zarr``, one checkpoint over
``token``, ``param`` and ``rank_tokens`` (the per-token measurements, the parameter-gradient
statistics, the logit-gradient rank curve and the output layer's geometry)."""

from __future__ import annotations

from pipeline.schema.variable import GA, GD, GS, ZSL, Variable

TOKEN_MEASUREMENTS = (
    Variable("loss", ("token",), "nats", "cross-entropy −log p_t", f"{GD} Fig. 1, 5"),
    Variable("p_target", ("token",), "1", "probability p_t of the target", GD),
    Variable(
        "norm_attractive", ("token",), "nats / unit h", "‖∇h⁺‖ = (1 − p_t)‖U_t‖", f"{GD} Fig. 3"
    ),
    Variable(
        "norm_repulsive", ("token",), "nats / unit h", "‖∇h⁻‖ = ‖Uᵀp − p_t U_t‖", f"{GD} Fig. 3"
    ),
    Variable("norm_grad", ("token",), "nats / unit h", "‖∇h‖ = ‖Uᵀp − U_t‖", f"{GD} Fig. 3"),
    Variable("cos_h_attractive", ("token",), "1", "cos(h, ∇h⁺)", f"{GD} Fig. 2, 6"),
    Variable("cos_h_repulsive", ("token",), "1", "cos(h, ∇h⁻)", f"{GD} Fig. 2, 6"),
    Variable("cos_grad_attractive", ("token",), "1", "cos(∇h, ∇h⁺)", f"{GD} Fig. 2, 6"),
    Variable("cos_grad_repulsive", ("token",), "1", "cos(∇h, ∇h⁻)", f"{GD} Fig. 2, 6"),
    Variable("cos_attractive_repulsive", ("token",), "1", "cos(∇h⁺, ∇h⁻)", f"{GD} Fig. 3"),
    Variable(
        "kept_fraction", ("token",), "1", "κ = ‖Qᵀg‖² / ‖g‖², share of g kept by the head", GA
    ),
    Variable(
        "logit_grad_sq",
        ("token",),
        "1",
        "‖g‖² = (1 − p_t)² + Σ_{j≠t} p_j², squared norm of the logit gradient",
        GA,
    ),
)
MEASUREMENTS = tuple(v.name for v in TOKEN_MEASUREMENTS)

#: Per named parameter tensor θ, from the token-averaged gradients (``ParamGradients.summary``).
PARAM_MEASUREMENTS = (
    Variable(
        "param_norm_attractive", ("param",), "nats / unit θ", "‖mean ∇θ⁺‖", f"{GD} App. E", True
    ),
    Variable(
        "param_norm_repulsive", ("param",), "nats / unit θ", "‖mean ∇θ⁻‖", f"{GD} App. E", True
    ),
    Variable("param_norm_grad", ("param",), "nats / unit θ", "‖mean ∇θ‖", f"{GD} App. E", True),
    Variable(
        "param_cos_attractive_repulsive", ("param",), "1", "cos(∇θ⁺, ∇θ⁻)", f"{GD} Fig. 7", True
    ),
    Variable(
        "param_interference",
        ("param",),
        "1",
        "D_W = mean(1 − |Σ δ xᵀ| / Σ |δ||x|ᵀ) of a linear or embedding weight",
        f"{ZSL} Fig. 3a",
        True,
    ),
)
PARAM_STATISTICS = tuple(v.name for v in PARAM_MEASUREMENTS)


def param_statistic(name: str) -> str:
    """The store variable (``param``,) of statistic ``name`` of
    ``pipeline.maths.parameters.STATISTICS``: ``param_<name>``."""
    out = f"param_{name}"
    if out not in PARAM_STATISTICS:
        raise KeyError(f"{name!r} is not a parameter statistic; {', '.join(PARAM_STATISTICS)}")
    return out


def _with_step(v: Variable) -> Variable:
    return Variable(v.name, ("step", *v.dims), v.units, v.meaning, v.serves, v.optional)


#: The logit-gradient rank curve of one checkpoint, kept as it is by the reduction.
LOGIT_GRAD_RANK = Variable(
    "logit_grad_rank",
    ("step", "rank_tokens"),
    "rank",
    "rank of the logit-gradient matrix G of the first N tokens",
    f"{GA} Fig. 2",
    True,
)

#: The rank of what survives the output layer: G projected onto U's column space.
LOGIT_GRAD_RANK_KEPT = Variable(
    "logit_grad_rank_kept",
    ("step", "rank_tokens"),
    "rank",
    "rank of GQ, the logit gradients of the first N tokens projected onto U's column space (≤ d)",
    f"{GA} Fig. 2",
    True,
)

#: The share of the logit gradient lost in the output layer, in the forms a reader may mean
#: (Godey & Artzi report "95–99% of the gradient norm suppressed"; their exact normalisation is
#: not confirmed): per token, averaged over V, and for the whole of V as one batch.
SUPPRESSED_FORMS = (
    Variable("suppressed_squared", ("step",), "1", "mean over tokens of 1 − κ (squared norms)", GA),
    Variable(
        "suppressed_norm", ("step",), "1", "mean over tokens of √(1 − κ) = ‖g − QQᵀg‖ / ‖g‖", GA
    ),
    Variable("kept_cosine", ("step",), "1", "mean over tokens of √κ = cos(g, QQᵀg)", GA),
    Variable(
        "suppressed_batch", ("step",), "1", "1 − Σ‖Qᵀg_i‖² / Σ‖g_i‖² over the tokens of V", GA
    ),
)

#: The geometry of one checkpoint (``pipeline.maths.geometry``), kept as it is by the reduction
#: (optional: stores extracted before it existed lack it).
GEOMETRY = (
    Variable(
        "head_singular_values",
        ("step", "singular"),
        "1",
        "singular values of the output layer U over σ₁, largest first",
        f"{GS} Fig. 4",
        True,
    ),
    Variable(
        "head_spectrum_kl",
        ("step",),
        "nats",
        "KL(p ‖ uniform) of p_i = σ_i / Σσ_j over U's singular values",
        f"{GS} Fig. 3, 5",
        True,
    ),
    Variable("head_sigma_ratio", ("step",), "1", "σ₁ / σ₂ of the output layer", GS, True),
    Variable(
        "head_common_direction",
        ("step",),
        "1",
        "‖mean_j U_j‖ / mean_j ‖U_j‖ over U's rows",
        f"{GD} (total dissent)",
        True,
    ),
    Variable(
        "anisotropy",
        ("step",),
        "1",
        "mean pairwise cosine of the final hidden states of V's tokens",
        f"{GS} Fig. 3",
        True,
    ),
)

EXTRACT = (
    *(_with_step(v) for v in TOKEN_MEASUREMENTS),
    *(_with_step(v) for v in PARAM_MEASUREMENTS),
    LOGIT_GRAD_RANK,
    LOGIT_GRAD_RANK_KEPT,
    *GEOMETRY,
)
