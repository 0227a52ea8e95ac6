"""Entry point of rule toy_corpus: sample the toy language's training and held-out streams."""

from pipeline.data import write_corpus
from pipeline.logs import setup
from pipeline.provenance import from_job
from pipeline.toy.language import ToyLanguage

setup(snakemake.log[0])  # noqa: F821 (Snakemake injects `snakemake`)
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
p = snakemake.params  # noqa: F821
write_corpus(ToyLanguage(**p.language), p.train_tokens, p.heldout_tokens, snakemake.output[0])  # noqa: F821
