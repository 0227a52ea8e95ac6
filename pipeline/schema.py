"""The one declaration of every variable the workflow stores: name, dimensions, units, meaning,
and the paper and figure it serves.

Writers pass their dataset through ``conform(ds, store)`` before writing: every data variable
must be declared for that store with those dimensions, and each gets CF-style ``long_name`` and
``units`` attrs. Readers take names from here (``overall``, ``quantile``, ``bnsl`` …) rather than
building them. The README's tables of the stores are rendered from it by ``pipeline.tables``
(``python -m pipeline.tables``), and a test checks that they match.

The stores:

* ``extract``: ``results/extract/{model}/step{N}.zarr``, one checkpoint over ``token``,
  ``param`` and ``rank_tokens``.
* ``update``: ``results/update/{model}/step{N}.zarr``, one step (or checkpoint displacement)
  from one checkpoint over ``batch``, ``token``, ``train_token``, ``alpha``, ``sample``,
  ``gradient_token`` and ``param``.
* ``reduce``: ``results/reduce/{model}.zarr``, one model over ``step`` (and ``bin``, ``layer``,
  ``quantile``, ``rank_tokens``).
* ``summary``: ``results/summary.zarr``, every ``reduce`` variable stacked along ``model``, the
  update stores' reductions (``UPDATE_SUMMARY``), the BNSL fits (``bnsl_*``, per model) and the run's provenance in its attrs.
* ``fits``: the columns of ``results/fits/bnsl.csv`` (one row per model).

Kept free of heavy imports: the workflow's DAG and the analysis half never load torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import xarray as xr


@dataclass(frozen=True)
class Variable:
    """One stored variable: its name, dimensions, units, one-line meaning, and what it serves."""

    name: str
    dims: tuple[str, ...]
    units: str
    meaning: str
    serves: str = ""
    optional: bool = False  # absent when its measurement is switched off (or needs two steps)


GD = "Gradient Dissent"
ZSL = "Zero-sum learning"
GA = "Godey & Artzi"

#: The per-token measurements of one checkpoint (``pipeline.maths.decomposition``), in order.
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

GS = "Godey et al. 2024"
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


# --- the reduce store: names derived from the measurements ---------------------------------------


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
    Variable("vocab_size", (), "1", "V, rows of the output layer; G's rank is ≤ min(N, V − 1)", GA),
    Variable(
        "update_rank_bound",
        (),
        "rank",
        "2d, the rank bound of a logit update, not of G (-1: unknown)",
        GA,
    ),
    Variable("n_params", (), "parameters", "the model's parameter count (-1: unknown)", GD),
)


# --- the BNSL fits (one row per model) --------------------------------------------------------

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


SUMMARY = (
    *(
        Variable(v.name, ("model", *v.dims), v.units, v.meaning, v.serves, v.optional)
        for v in REDUCE
    ),
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
)

# --- the update store: one step (or checkpoint displacement) from one checkpoint ----------------

_DIR = "along Δθ_k (the store's attrs name the direction)"
UPDATE = (
    Variable("loss", ("step", "token"), "nats", "ℓ_i(θ) on V, in float32", f"{ZSL} §3.2"),
    Variable(
        "loss_change", ("step", "batch", "token"), "nats", f"Δℓ_i on V {_DIR}", f"{ZSL} Fig. 3b"
    ),
    Variable(
        "loss_change_pred",
        ("step", "batch", "token"),
        "nats",
        "first-order prediction Δ̃ℓ_i = ∇θℓ_i·Δθ_k on V (forward-mode)",
        f"{ZSL} Fig. 4",
    ),
    Variable(
        "train_loss",
        ("step", "batch", "train_token"),
        "nats",
        "ℓ_i(θ) on update batch k",
        f"{ZSL} Fig. 3b",
        True,
    ),
    Variable(
        "train_loss_change",
        ("step", "batch", "train_token"),
        "nats",
        "Δℓ_i on update batch k after the step taken on it",
        f"{ZSL} Fig. 3b",
        True,
    ),
    Variable(
        "train_loss_change_pred",
        ("step", "batch", "train_token"),
        "nats",
        "Δ̃ℓ_i on update batch k",
        f"{ZSL} Fig. 4",
        True,
    ),
    Variable("update_norm", ("step", "batch"), "unit θ", "‖Δθ_k‖", f"{ZSL} Fig. 6"),
    Variable(
        "update_param_norm",
        ("step", "batch", "param"),
        "unit θ",
        "‖Δθ_k‖ of each parameter tensor",
        ZSL,
    ),
    Variable(
        "landscape_mean",
        ("step", "batch", "alpha"),
        "nats",
        "mean ℓ_i(θ + α·Δθ_k/‖Δθ_k‖) over the landscape sequences, α = alpha × ‖Δθ_k‖",
        f"{ZSL} Fig. 9, 10",
    ),
    Variable(
        "landscape",
        ("step", "batch", "alpha", "sample"),
        "nats",
        "per-token cross-section ℓ_i(θ + α·Δθ_k/‖Δθ_k‖) of the sampled tokens",
        f"{ZSL} Fig. 7, 8",
    ),
    Variable(
        "grad_norm",
        ("step", "gradient_token"),
        "nats / unit θ",
        "‖∇θℓ_i‖ (exact, per token)",
        f"{ZSL} Fig. 6",
        True,
    ),
    Variable(
        "update_grad_cos",
        ("step", "batch", "gradient_token"),
        "1",
        "cos(Δθ_k, ∇θℓ_i)",
        f"{ZSL} Fig. 6",
        True,
    ),
    Variable(
        "coherence_g",
        ("step", "batch"),
        "1",
        "C_g = Σ_j |Σ_i u_j g_ij| / Σ_ij |u_j g_ij|",
        f"{ZSL} App. C.4",
        True,
    ),
    Variable(
        "coherence_ug",
        ("step", "batch"),
        "1",
        "C_ug = Σ_i |Σ_j u_j g_ij| / Σ_ij |u_j g_ij|",
        f"{ZSL} App. C.4",
        True,
    ),
    Variable(
        "coherence_uG",
        ("step", "batch"),
        "1",
        "C_uG = |Σ_ij u_j g_ij| / Σ_j |Σ_i u_j g_ij|",
        f"{ZSL} App. C.4",
        True,
    ),
)


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
UPDATE_SUMMARY = (
    *(
        Variable(update_summary(s, k), ("model", "step", "batch"), u, f"{m} on {where}", z, True)
        for s, where in _SETS.items()
        for k, (u, m, z) in _STATS.items()
    ),
    *(
        Variable(
            update_summary(s, f"{k}_bin"),
            ("model", "step", "batch", "bin"),
            _STATS[k][0],
            f"{_STATS[k][1]} on {where}, per frequency bin",
            _STATS[k][2],
            True,
        )
        for s, where in _SETS.items()
        for k in ("D", "M")
    ),
    Variable("update_norm", ("model", "step", "batch"), "unit θ", "‖Δθ_k‖", f"{ZSL} Fig. 6", True),
    Variable(
        "landscape_change",
        ("model", "step", "batch", "alpha"),
        "nats",
        "ΔL(α): mean landscape loss minus its value at α = 0",
        f"{ZSL} Fig. 9, 10",
        True,
    ),
    Variable(
        "landscape_token",
        ("model", "step", "alpha", "sample"),
        "nats",
        "per-token cross-sections along Δθ_0 of the sampled tokens",
        f"{ZSL} Fig. 7, 8",
        True,
    ),
    Variable(
        "sample_improved",
        ("model", "step", "sample"),
        "bool",
        "the sampled token's loss fell at the actual step (α = ‖Δθ_0‖)",
        f"{ZSL} Fig. 7, 8",
        True,
    ),
    Variable(
        "sample_loss_change",
        ("model", "step", "sample"),
        "nats",
        "Δℓ_i along Δθ_0 of the sampled tokens",
        f"{ZSL} Fig. 4",
        True,
    ),
    Variable(
        "sample_loss_change_pred",
        ("model", "step", "sample"),
        "nats",
        "Δ̃ℓ_i along Δθ_0 of the sampled tokens",
        f"{ZSL} Fig. 4",
        True,
    ),
    Variable(
        "update_grad_cos",
        ("model", "step", "gradient_token"),
        "1",
        "cos(Δθ_0, ∇θℓ_i)",
        f"{ZSL} Fig. 6",
        True,
    ),
    Variable(
        "grad_norm",
        ("model", "step", "gradient_token"),
        "nats / unit θ",
        "‖∇θℓ_i‖",
        f"{ZSL} Fig. 6",
        True,
    ),
    Variable("coherence_g", ("model", "step", "batch"), "1", "C_g", f"{ZSL} App. C.4", True),
    Variable(
        "coherence_u",
        ("model", "step", "batch"),
        "1",
        "C_u = C_uG / C_ug; C_g·C_u = 1 − D(Δ̃ℓ)",
        f"{ZSL} App. C.4",
        True,
    ),
)
SUMMARY = (*SUMMARY, *UPDATE_SUMMARY)
#: One model's update stores reduced over steps (``results/reduce/{model}_update.zarr``): the
#: update summary without its ``model`` dimension, which the summary stacks.
UPDATE_REDUCE = tuple(
    replace(v, dims=tuple(d for d in v.dims if d != "model")) for v in UPDATE_SUMMARY
)

STORES = {
    "extract": EXTRACT,
    "update": UPDATE,
    "reduce": REDUCE,
    "reduce_update": UPDATE_REDUCE,
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
            f"the {store} store does not match pipeline/schema.py: {'; '.join(problems)}"
        )
    out = ds.copy()
    for name in out.data_vars:
        v = decl[name]
        out[name].attrs.update(long_name=v.meaning, units=v.units, serves=v.serves)
    return out
