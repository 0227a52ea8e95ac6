"""Entry point of rule download: fetch one revision into the hub cache and link it."""

from pathlib import Path

from pipeline.checkpoints import fetch_revision, link_checkpoint
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
p = snakemake.params  # noqa: F821
snapshot = fetch_revision(p.repo_id, p.revision, allow_pickle=p.allow_pickle, format=p.format)
link_checkpoint(snapshot, Path(snakemake.output.config).parent, format=p.format)  # noqa: F821
