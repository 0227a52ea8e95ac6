"""The per-token measurements' names, used by every stage.

Kept free of heavy imports so that the analysis half (reduce, fit, plots) never loads torch.
"""

#: The per-token measurements of ``pipeline.decomposition.decompose_at_h``, in order.
MEASUREMENTS = (
    "loss",
    "p_target",
    "norm_attractive",
    "norm_repulsive",
    "norm_grad",
    "cos_h_attractive",
    "cos_h_repulsive",
    "cos_grad_attractive",
    "cos_grad_repulsive",
    "cos_attractive_repulsive",
    "kept_fraction",
)
