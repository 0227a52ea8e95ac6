"""Entry point of the plot_<figure> rules: draw one figure from the summary."""

from pipeline.logs import setup
from pipeline.plots import draw

setup(snakemake.log[0])  # noqa: F821
draw(
    snakemake.params.figure,  # noqa: F821
    snakemake.input.summary,  # noqa: F821
    snakemake.output.png,  # noqa: F821
    snakemake.output.pdf,  # noqa: F821
    dpi=snakemake.params.dpi,  # noqa: F821
)
