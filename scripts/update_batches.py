"""Entry point of rule update_batches: the fixed batches the update stage takes its steps on."""

from pipeline.data import build_update_batches
from pipeline.logs import setup
from pipeline.provenance import from_job
from pipeline.toy.language import ToyLanguage

setup(snakemake.log[0])  # noqa: F821
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
p = snakemake.params  # noqa: F821
build_update_batches(
    p.data,
    p.batches,
    snakemake.input.frequency,  # noqa: F821
    snakemake.output[0],  # noqa: F821
    language=ToyLanguage(**p.language) if p.language else None,
    train=p.train,
)
