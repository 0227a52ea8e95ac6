"""Entry point of rule link_local: link one checkpoint of a local run where it lies."""

from pathlib import Path

from pipeline.checkpoints import link_checkpoint
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
p = snakemake.params  # noqa: F821
link_checkpoint(p.path, Path(snakemake.output.config).parent, p.format, p.allow_pickle)  # noqa: F821
