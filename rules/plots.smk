# The plots stage: one terminal rule per figure of the run (FIGURES, rules/common.smk), drawn
# from results/summary.zarr by the figure's module of pipeline/plots/ and collected with its
# caption and category by `snakemake --report`. A figure re-runs when its module, the shared
# pipeline/plots/common.py or `plots.dpi` changes; nothing upstream does.

from pipeline.plots import COMMON_SOURCE

for figure, spec in FIGURES.items():

    rule:
        name:
            f"plot_{figure}"
        input:
            summary=results("summary.zarr"),
            code=[
                workflow.source_path(f"../{spec.source}"),
                workflow.source_path(f"../{COMMON_SOURCE}"),
            ],
        output:
            png=report(
                results(f"figures/{figure}.png"),
                caption=f"../{spec.caption}",
                category=spec.category,
            ),
            pdf=results(f"figures/{figure}.pdf"),
        log:
            results(f"logs/plots/{figure}.log"),
        localrule: True
        conda:
            "../envs/analysis.yaml"
        params:
            figure=figure,
            dpi=section(config, "plots")["dpi"],  # (not the list of figures: another figure re-draws none)
        script:
            "../scripts/plot.py"
