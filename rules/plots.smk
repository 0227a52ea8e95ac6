# The plots stage: terminal rules, one per figure, drawn from results/summary.zarr
# (pipeline/plots.py) and collected with captions by `snakemake --report`.


rule plot_loss_by_bin:
    input:
        "results/summary.zarr",
    output:
        png=report(
            "results/figures/loss_by_bin.png",
            caption="../report/loss_by_bin.rst",
            category="Saturation",
        ),
        pdf="results/figures/loss_by_bin.pdf",
    log:
        "results/logs/plots/loss_by_bin.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_loss_by_bin.py"
