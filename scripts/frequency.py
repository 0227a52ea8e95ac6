"""Entry point of rule frequency: count the training data's ids into log2 frequency bins."""

from pipeline.data import build_frequency
from pipeline.logs import setup
from pipeline.provenance import from_job

setup(snakemake.log[0])  # noqa: F821
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
build_frequency(
    snakemake.params.frequency,  # noqa: F821
    snakemake.output[0],  # noqa: F821
    corpus_path=snakemake.input.get("corpus"),  # noqa: F821
)
