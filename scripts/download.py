"""Entry point of rule download: fetch one revision (or subfolder) into the hub cache and link it."""

from pathlib import Path

from pipeline.checkpoints import fetch_revision, link_checkpoint
from pipeline.logs import setup
from pipeline.provenance import checkpoint_source, snapshot_commit

setup(snakemake.log[0])  # noqa: F821
p = snakemake.params  # noqa: F821
snapshot = fetch_revision(p.repo_id, p.revision, p.allow_pickle, p.format, p.subfolder)
source = checkpoint_source(
    kind="hub",
    repo_id=p.repo_id,
    revision=p.revision,
    subfolder=p.subfolder,
    commit=snapshot_commit(snapshot),
)
out = Path(snakemake.output.config).parent  # noqa: F821
link_checkpoint(snapshot, out, p.format, p.allow_pickle, source=source)
