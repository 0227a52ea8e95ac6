"""Entry point of rule fit_bnsl: fit one model's loss curve."""

from pipeline.config import FitConfig
from pipeline.fit import fit_model
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
fit_model(snakemake.input[0], snakemake.output[0], FitConfig(**snakemake.params.fit))  # noqa: F821
