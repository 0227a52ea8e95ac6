"""Entry point of rule update_batches: the toy language's fixed batches for the update stage."""

from pipeline.data import write_update_batches
from pipeline.logs import setup
from pipeline.toy.language import ToyLanguage

setup(snakemake.log[0])  # noqa: F821
p = snakemake.params  # noqa: F821
write_update_batches(
    ToyLanguage(**p.language),
    p.batches,
    p.train["batch_size"],
    p.train["sequence_length"],
    snakemake.input.frequency,  # noqa: F821
    snakemake.output[0],  # noqa: F821
)
