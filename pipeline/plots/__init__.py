"""The plots stage: the papers' figures, and the one registry of them.

Each figure is one function ``plot_<name>(dataset) -> Figure`` in a submodule, one per paper:
``dissent`` (Gradient Dissent), ``zsl`` (Zero-sum learning), ``single_step`` (its single-step
half, from the update stage), ``bottleneck`` (Godey & Artzi), ``spectral`` (Godey, de la
Clergerie & Sagot), ``interventions`` (the interventions experiment) and ``overview`` (across
models); ``common`` holds what they share (palette, step axis, colorbars,
notes, legends, ``save``). ``FIGURES`` names every figure once: its submodule, its category in
the report and its caption file. The workflow (``rules/plots.smk``), the final targets
(``rules/common.smk``) and the tests all iterate it.

This module imports neither matplotlib nor xarray (nor torch): Snakemake imports it while it
parses the DAG. ``figure_function`` imports a figure's submodule only when it is drawn.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report.

    Attributes
    ----------
    name : the figure's name: ``plot_<name>``, ``results/figures/<name>.png``.
    module : the submodule of ``pipeline.plots`` that holds ``plot_<name>``.
    category : the figure's category in ``snakemake --report``.
    caption : its caption (reStructuredText), relative to the repository root.
    shows : one line: what it draws and the paper's figure it reproduces (the docs' tables).
    experiment : the toy experiment it shows (a key of ``EXPERIMENTS``), drawn only for a run
        with a model of it; None: drawn for every run.
    """

    name: str
    module: str
    category: str
    caption: str
    shows: str
    experiment: str | None = None

    @property
    def source(self) -> str:
        """The file of ``module``, relative to the repository root."""
        return f"pipeline/plots/{self.module}.py"


def _spec(
    name: str, module: str, category: str, shows: str, experiment: str | None = None
) -> FigureSpec:
    return FigureSpec(name, module, category, f"report/{name}.rst", shows, experiment)


#: The toy experiments that have figures of their own: whether a toy model belongs to one, from
#: how the toy suite trained it (its entry of the summary's ``attrs["toy_models"]``).
EXPERIMENTS: dict[str, Callable[[dict], bool]] = {
    "head_rank": lambda toy: bool(toy.get("head_rank")),
    "spamlang": lambda toy: toy.get("language_kind") == "spam",
    "interventions": lambda toy: toy.get("intervention", "baseline") != "baseline",
}


#: Every figure, by name, in the order of the report.
FIGURES: dict[str, FigureSpec] = {
    s.name: s
    for s in (
        _spec(
            "token_frequency",
            "dissent",
            "Saturation",
            "normalised frequency against rank of the training counts and of V's targets, a Zipf fit, the rarest 5% of ids, the share of ids in V (Gradient Dissent Fig. 4)",
        ),
        _spec(
            "loss_by_bin",
            "dissent",
            "Saturation",
            "loss per frequency bin over steps, improving vs saturated points, the saturation step (Gradient Dissent Fig. 1, 5)",
        ),
        _spec(
            "decomposition_basis",
            "dissent",
            "Gradient dissent",
            "cos(h,∇h⁺), cos(h,∇h⁻), cos(∇h,∇h⁺), cos(∇h,∇h⁻) per bin (Gradient Dissent Fig. 2, 6)",
        ),
        _spec(
            "dissent",
            "dissent",
            "Gradient dissent",
            "cos(∇h⁺,∇h⁻) per bin and the norms ‖∇h⁺‖, ‖∇h⁻‖, ‖∇h‖ (Gradient Dissent Fig. 3)",
        ),
        _spec(
            "parameter_dissent",
            "dissent",
            "Gradient dissent",
            "per block, ‖∇θ⁺‖ and ‖∇θ⁻‖ relative to ‖∇θ‖ beside cos(∇θ⁺, ∇θ⁻) (Gradient Dissent Fig. 7)",
        ),
        _spec(
            "bnsl",
            "zsl",
            "Zero-sum learning",
            "the evaluation loss at the checkpoints and, below it, the training loss at every logged step, each with its BNSL fit, its two power laws and the deceleration point (t_d, L_d) where they meet, and the fit table (Zero-sum learning Fig. 1, Table 2)",
        ),
        _spec(
            "interference",
            "zsl",
            "Zero-sum learning",
            "magnitude M of the loss changes, and interference D as a (bin × step) heat map with all tokens on top (Zero-sum learning Fig. 2)",
        ),
        _spec(
            "layer_interference",
            "zsl",
            "Zero-sum learning",
            "D_W per block (Zero-sum learning Fig. 3a)",
        ),
        _spec(
            "single_step_interference",
            "single_step",
            "One optimizer step",
            "single-step D and M on the update batch and on V, mean and range over the K batches, beside D between checkpoints (Zero-sum learning Fig. 3b, 5)",
        ),
        _spec(
            "first_order",
            "single_step",
            "One optimizer step",
            "1 − Pearson r(Δℓ, Δ̃ℓ) over training on a log axis (r is within 10⁻³ of 1), and a 2-D histogram of Δ̃ℓ against Δℓ at one step (Zero-sum learning Fig. 4)",
        ),
        _spec(
            "alignment",
            "single_step",
            "One optimizer step",
            "cos(Δθ, ∇θℓ_i) and ‖Δθ‖‖∇θℓ_i‖ over training, C_g and C_u (Zero-sum learning Fig. 6, App. C.4)",
        ),
        _spec(
            "landscape_tokens",
            "single_step",
            "One optimizer step",
            "per-token loss cross-sections along Δθ, rows = steps, columns = models, coloured by whether the token improved at the actual step (Zero-sum learning Figs. 7–8)",
        ),
        _spec(
            "landscape",
            "single_step",
            "One optimizer step",
            "the mean loss change ΔL(α) over (step, α), symmetric-log colours (Zero-sum learning Figs. 9–10)",
        ),
        _spec(
            "bottleneck",
            "bottleneck",
            "Gradient bottleneck",
            "the share of the logit gradient lost in the output layer over training, its four forms at the last step, and rank(G) and rank(GQ) against tokens under their bounds min(N, V − 1) and d, beside 2d (Godey & Artzi)",
        ),
        _spec(
            "head_rank",
            "bottleneck",
            "Gradient bottleneck",
            "models with a factored output layer: loss and suppressed share over training, final loss against the head rank r (Godey & Artzi Fig. 1, 3)",
            "head_rank",
        ),
        _spec(
            "spamlang",
            "bottleneck",
            "Gradient bottleneck",
            "SpamLang models: final loss over vocabulary × learning rate, its share of ln V against V/d, and over training (Godey & Artzi Fig. 4, 5)",
            "spamlang",
        ),
        _spec(
            "head_spectrum",
            "spectral",
            "Spectral saturation",
            "the output layer's singular values over σ₁ at every step, one panel per model, the steps' colours spaced by how far the spectrum moved (Godey et al. 2024 Fig. 4)",
        ),
        _spec(
            "spectral_saturation",
            "spectral",
            "Spectral saturation",
            "KL(spectrum ‖ uniform) and anisotropy over training with the saturation and dissent-onset steps marked (Godey et al. 2024 Fig. 3, 5); mean cos(∇h⁺, ∇h⁻) against the common-direction share",
        ),
        _spec(
            "interventions",
            "interventions",
            "Interventions",
            "each intervention (optimizer, loss term, output-layer centering) against the baseline of its width, mean ± s.d. over seeds: deceleration (t_d, L_d, r_d), final losses, single-step D, D_W, dissent and the output layer's geometry",
            "interventions",
        ),
        _spec(
            "overview",
            "overview",
            "Saturation",
            "saturation step and onset of total dissent against model size; which bins each model ends saturated on, and from which step",
        ),
    )
}

#: The report category of the update stage's figures, by the directions a run's models follow.
STEP_CATEGORIES = {
    frozenset({"optimizer"}): "One optimizer step",
    frozenset({"displacement"}): "One checkpoint displacement",
    frozenset({"optimizer", "displacement"}): "One optimizer step or displacement",
}


def run_figures(toy_models: dict[str, dict], directions: dict[str, str]) -> dict[str, FigureSpec]:
    """The figures of one run, in report order: those of the experiments it contains (from
    ``toy_models``, how the toy suite trained each of its models), the update stage's under a
    category naming the direction its models follow (``directions``: model → ``optimizer`` or
    ``displacement``)."""
    step_category = STEP_CATEGORIES[frozenset(directions.values())]
    out = {}
    for name, spec in FIGURES.items():
        if spec.experiment and not any(map(EXPERIMENTS[spec.experiment], toy_models.values())):
            continue
        if spec.module == "single_step":
            spec = replace(spec, category=step_category)
        out[name] = spec
    return out


#: The module every figure module draws with (a figure re-runs when it changes).
COMMON_SOURCE = "pipeline/plots/common.py"


def figure_function(name: str) -> Callable[[xr.Dataset], Figure]:
    """``plot_<name>`` of figure ``name``, importing its submodule (and matplotlib) now."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    module = importlib.import_module(f"{__name__}.{FIGURES[name].module}")
    return getattr(module, f"plot_{name}")


def draw(name: str, summary_path: str, png: str, pdf: str, dpi: int = 150) -> None:
    """Draw figure ``name`` from the summary store at ``summary_path`` (model names as the
    ``model`` coordinate) and save it as PNG (at ``dpi``) and PDF."""
    from pipeline.plots.common import save
    from pipeline.store import open_labeled

    function = figure_function(name)
    ds = open_labeled(summary_path).load()
    save(function(ds), png, pdf, dpi=dpi)
