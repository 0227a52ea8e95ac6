"""The ``update`` store: ``results/update/{model}/step{N}.zarr``, one step (or checkpoint
displacement) from one checkpoint over ``batch``, ``token``, ``train_token``, ``alpha``,
``sample``, ``gradient_token`` and ``param``."""

from __future__ import annotations

from pipeline.schema.variable import ZSL, Variable

_DIR = "along Δθ_k (the store's attrs name the direction)"
UPDATE = (
    Variable("loss", ("step", "token"), "nats", "ℓ_i(θ) on V, in float32", f"{ZSL} §3.2"),
    Variable(
        "loss_change",
        ("step", "update_batch", "token"),
        "nats",
        f"Δℓ_i on V {_DIR}",
        f"{ZSL} Fig. 3b",
    ),
    Variable(
        "loss_change_pred",
        ("step", "update_batch", "token"),
        "nats",
        "first-order prediction Δ̃ℓ_i = ∇θℓ_i·Δθ_k on V (forward-mode)",
        f"{ZSL} Fig. 4",
    ),
    Variable(
        "train_loss",
        ("step", "update_batch", "train_token"),
        "nats",
        "ℓ_i(θ) on update batch k",
        f"{ZSL} Fig. 3b",
        True,
    ),
    Variable(
        "train_loss_change",
        ("step", "update_batch", "train_token"),
        "nats",
        "Δℓ_i on update batch k after the step taken on it",
        f"{ZSL} Fig. 3b",
        True,
    ),
    Variable(
        "train_loss_change_pred",
        ("step", "update_batch", "train_token"),
        "nats",
        "Δ̃ℓ_i on update batch k",
        f"{ZSL} Fig. 4",
        True,
    ),
    Variable("update_norm", ("step", "update_batch"), "unit θ", "‖Δθ_k‖", f"{ZSL} Fig. 6"),
    Variable(
        "update_param_norm",
        ("step", "update_batch", "param"),
        "unit θ",
        "‖Δθ_k‖ of each parameter tensor",
        ZSL,
    ),
    Variable(
        "landscape_mean",
        ("step", "update_batch", "alpha"),
        "nats",
        "mean ℓ_i(θ + α·Δθ_k/‖Δθ_k‖) over the landscape sequences, α = alpha × ‖Δθ_k‖",
        f"{ZSL} Fig. 9, 10",
    ),
    Variable(
        "landscape",
        ("step", "update_batch", "alpha", "sample"),
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
        ("step", "update_batch", "gradient_token"),
        "1",
        "cos(Δθ_k, ∇θℓ_i)",
        f"{ZSL} Fig. 6",
        True,
    ),
    Variable(
        "coherence_g",
        ("step", "update_batch"),
        "1",
        "C_g = Σ_j |Σ_i u_j g_ij| / Σ_ij |u_j g_ij|",
        f"{ZSL} App. C.4",
        True,
    ),
    Variable(
        "coherence_ug",
        ("step", "update_batch"),
        "1",
        "C_ug = Σ_i |Σ_j u_j g_ij| / Σ_ij |u_j g_ij|",
        f"{ZSL} App. C.4",
        True,
    ),
    Variable(
        "coherence_uG",
        ("step", "update_batch"),
        "1",
        "C_uG = |Σ_ij u_j g_ij| / Σ_j |Σ_i u_j g_ij|",
        f"{ZSL} App. C.4",
        True,
    ),
)
