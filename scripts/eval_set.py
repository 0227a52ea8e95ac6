"""Entry point of rule eval_set: build the evaluation set V."""

from pipeline.data import build_eval
from pipeline.logs import setup
from pipeline.provenance import from_job

setup(snakemake.log[0])  # noqa: F821
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
build_eval(
    snakemake.params.eval,  # noqa: F821
    snakemake.input.frequency,  # noqa: F821
    snakemake.output[0],  # noqa: F821
    corpus_path=snakemake.input.get("corpus"),  # noqa: F821
)
