"""Entry point of rule summary: every model's reduction and fit in one dataset."""

from pipeline.logs import setup
from pipeline.provenance import config_files, from_job
from pipeline.summary import summarize

setup(snakemake.log[0])  # noqa: F821
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
summarize(
    snakemake.params.models,  # noqa: F821
    list(snakemake.input.reduce),  # noqa: F821
    list(snakemake.input.fits),  # noqa: F821
    snakemake.output[0],  # noqa: F821
    provenance={**snakemake.params.provenance, "config_files": config_files()},  # noqa: F821
    update_paths=snakemake.params.updates,  # noqa: F821
    frequency_path=snakemake.input.frequency,  # noqa: F821
    eval_path=snakemake.input.eval,  # noqa: F821
    corpus_paths=snakemake.params.corpora,  # noqa: F821
    train_fits=snakemake.params.train_fits,  # noqa: F821
    groups=snakemake.params.groups,  # noqa: F821
    seeds_paths=list(snakemake.input.seeds),  # noqa: F821
)
