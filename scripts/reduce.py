"""Entry point of rule reduce: one model's step stores → binned means and saturation."""

from pipeline.config import ReduceConfig, execution
from pipeline.logs import setup
from pipeline.plan import Plan
from pipeline.provenance import from_job
from pipeline.reduce import reduce_model

setup(snakemake.log[0])  # noqa: F821
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
# every step store was measured on the weights its checkpoint holds now
Plan(snakemake.config).check_measured(snakemake.wildcards.model, "extract")  # noqa: F821
reduce_model(
    list(snakemake.input),  # noqa: F821
    snakemake.output.store,  # noqa: F821
    snakemake.wildcards.model,  # noqa: F821
    ReduceConfig(
        **snakemake.params.reduce,  # noqa: F821
        **snakemake.params.checkpoints,  # noqa: F821
        **execution(snakemake.config, "reduce"),  # noqa: F821
    ),
    duplicates_path=snakemake.output.duplicates,  # noqa: F821
)
