"""Entry point of the report rule: the run's page, from its summary and figures."""

from pipeline.logs import setup
from pipeline.report import build

setup(snakemake.log[0])  # noqa: F821
build(snakemake.input.summary, snakemake.params.figures, snakemake.output[0])  # noqa: F821
