"""The plots stage: the papers' figures, and the one registry of them.

Each figure is one function ``plot_<name>(dataset) -> Figure`` in a submodule, one per paper:
``dissent`` (Gradient Dissent), ``zsl`` (Zero-sum learning), ``single_step`` (its single-step
half, from the update stage), ``bottleneck`` (Godey & Artzi), ``spectral`` (Godey, de la
Clergerie & Sagot) and ``overview`` (across models); ``common`` holds what they share (palette, step axis, colorbars,
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
    experiment : the toy experiment it shows (a key of ``EXPERIMENTS``), drawn only for a run
        with a model of it; None: drawn for every run.
    """

    name: str
    module: str
    category: str
    caption: str
    experiment: str | None = None

    @property
    def source(self) -> str:
        """The file of ``module``, relative to the repository root."""
        return f"pipeline/plots/{self.module}.py"


def _spec(name: str, module: str, category: str, experiment: str | None = None) -> FigureSpec:
    return FigureSpec(name, module, category, f"report/{name}.rst", experiment)


#: The toy experiments that have figures of their own: whether a toy model belongs to one, from
#: how the toy suite trained it (its entry of the summary's ``attrs["toy_models"]``).
EXPERIMENTS: dict[str, Callable[[dict], bool]] = {
    "head_rank": lambda toy: bool(toy.get("head_rank")),
    "spamlang": lambda toy: toy.get("language_kind") == "spam",
}


#: Every figure, by name, in the order of the report.
FIGURES: dict[str, FigureSpec] = {
    s.name: s
    for s in (
        _spec("token_frequency", "dissent", "Saturation"),
        _spec("loss_by_bin", "dissent", "Saturation"),
        _spec("decomposition_basis", "dissent", "Gradient dissent"),
        _spec("dissent", "dissent", "Gradient dissent"),
        _spec("parameter_dissent", "dissent", "Gradient dissent"),
        _spec("bnsl", "zsl", "Zero-sum learning"),
        _spec("interference", "zsl", "Zero-sum learning"),
        _spec("layer_interference", "zsl", "Zero-sum learning"),
        _spec("single_step_interference", "single_step", "One optimizer step"),
        _spec("first_order", "single_step", "One optimizer step"),
        _spec("alignment", "single_step", "One optimizer step"),
        _spec("landscape_tokens", "single_step", "One optimizer step"),
        _spec("landscape", "single_step", "One optimizer step"),
        _spec("bottleneck", "bottleneck", "Gradient bottleneck"),
        _spec("head_rank", "bottleneck", "Gradient bottleneck", "head_rank"),
        _spec("spamlang", "bottleneck", "Gradient bottleneck", "spamlang"),
        _spec("head_spectrum", "spectral", "Spectral saturation"),
        _spec("spectral_saturation", "spectral", "Spectral saturation"),
        _spec("overview", "overview", "Saturation"),
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
