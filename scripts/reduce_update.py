"""Entry point of rule reduce_update: one model's update stores over steps."""

from pipeline.logs import setup
from pipeline.plan import Plan
from pipeline.provenance import from_job
from pipeline.reduce import reduce_updates

setup(snakemake.log[0])  # noqa: F821
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
Plan(snakemake.config).check_measured(snakemake.wildcards.model, "update")  # noqa: F821
reduce_updates(list(snakemake.input), snakemake.output[0])  # noqa: F821
