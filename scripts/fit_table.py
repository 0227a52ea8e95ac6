"""Entry point of rule fit_table: one CSV row per model."""

from pipeline.fit import write_table
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
write_table(list(snakemake.input), snakemake.output[0])  # noqa: F821
