"""Entry point of rule summary: stack the per-model reductions along `model`."""

from pipeline.logs import setup
from pipeline.reduce import summarize

setup(snakemake.log[0])  # noqa: F821
summarize(dict(snakemake.input.items()), snakemake.output[0])  # noqa: F821
