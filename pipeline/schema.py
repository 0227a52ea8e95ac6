"""Names used everywhere: the dimensions of every store and the per-token measurements.

Kept free of heavy imports so that the analysis half (reduce, fit, plots) never loads torch.
"""

#: Dimension names (DESIGN.md): one evaluation position, a log2 frequency bin, a parameter
#: tensor, a token id; ``model`` and ``step`` label checkpoints.
DIMS = ("model", "step", "token", "bin", "param", "vocab")

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
