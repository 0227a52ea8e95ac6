"""Entry point of rules fit_bnsl and fit_bnsl_train: fit one model's loss curve."""

from pipeline.config import FitConfig
from pipeline.fit import fit_model, fit_train_curve
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
cfg = FitConfig(**snakemake.params.fit)  # noqa: F821
if snakemake.rule == "fit_bnsl_train":  # noqa: F821
    fit_train_curve(
        snakemake.input.curve,  # noqa: F821
        snakemake.wildcards.model,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        cfg,
        reader=snakemake.params.reader,  # noqa: F821
    )
else:
    fit_model(snakemake.input[0], snakemake.output[0], cfg)  # noqa: F821
