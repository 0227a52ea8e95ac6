# The plots stage: one terminal rule per figure (plot_<name>), drawn from results/summary.zarr
# by pipeline/plots.py and collected with its caption (report/<name>.rst) by
# `snakemake --report`. A figure re-runs when the plotting code or the `plots` config changes;
# nothing upstream does.

from pipeline.plots import FIGURES

FIGURE_CATEGORIES = {
    "loss_by_bin": "Saturation",
    "overview": "Saturation",
    "decomposition_basis": "Gradient dissent",
    "dissent": "Gradient dissent",
    "parameter_dissent": "Gradient dissent",
    "bnsl": "Zero-sum learning",
    "interference": "Zero-sum learning",
    "layer_interference": "Zero-sum learning",
    "bottleneck": "Gradient bottleneck",
}

for figure, (_, needs_fits) in FIGURES.items():

    rule:
        name:
            f"plot_{figure}"
        input:
            **({"fits": "results/fits/bnsl.csv"} if needs_fits else {}),
            summary="results/summary.zarr",
            code=workflow.source_path("../pipeline/plots.py"),
        output:
            png=report(
                f"results/figures/{figure}.png",
                caption=f"../report/{figure}.rst",
                category=FIGURE_CATEGORIES[figure],
            ),
            pdf=f"results/figures/{figure}.pdf",
        log:
            f"results/logs/plots/{figure}.log",
        localrule: True
        conda:
            "../envs/analysis.yaml"
        params:
            figure=figure,
            plots=config["plots"],
        script:
            "../scripts/plot.py"
