"""Entry point of rule frequency: count the training data's ids into log2 frequency bins."""

from pipeline.data import build_frequency
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
build_frequency(
    snakemake.params.frequency,  # noqa: F821
    snakemake.output[0],  # noqa: F821
    corpus_path=snakemake.input.get("corpus"),  # noqa: F821
)
