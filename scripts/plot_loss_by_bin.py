"""Entry point of rule plot_loss_by_bin."""

from pipeline.logs import setup
from pipeline.plots import plot_loss_by_bin, save
from pipeline.reduce import open_summary

setup(snakemake.log[0])  # noqa: F821
fig = plot_loss_by_bin(open_summary(snakemake.input[0]))  # noqa: F821
save(fig, snakemake.output.png, snakemake.output.pdf)  # noqa: F821
