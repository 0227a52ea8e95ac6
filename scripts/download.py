"""Entry point of rule download: fetch one revision (or subfolder) into the hub cache and link it."""

from pathlib import Path

from pipeline.checkpoints import fetch_revision, link_checkpoint
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
p = snakemake.params  # noqa: F821
snapshot = fetch_revision(p.repo_id, p.revision, p.allow_pickle, p.format, p.subfolder)
link_checkpoint(snapshot, Path(snakemake.output.config).parent, p.format, p.allow_pickle)  # noqa: F821
