"""Entry point of rule extract: measure one checkpoint on the evaluation set."""

from pathlib import Path

from pipeline.config import ExtractConfig, execution
from pipeline.extract import extract_checkpoint
from pipeline.logs import setup
from pipeline.plan import Plan
from pipeline.provenance import from_job

setup(snakemake.log[0])  # noqa: F821
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
w = snakemake.wildcards  # noqa: F821
# the checkpoint belongs to this model (its entry; its other checkpoints)
Plan(snakemake.config).check_checkpoints(w.model)  # noqa: F821
extract_checkpoint(
    checkpoint=str(Path(snakemake.input.config).parent),  # noqa: F821
    eval_path=snakemake.input.eval,  # noqa: F821
    out_path=snakemake.output[0],  # noqa: F821
    model_name=w.model,
    step=int(w.step),
    cfg=ExtractConfig(**snakemake.params.extract, **execution(snakemake.config, "extract")),  # noqa: F821
    allow_pickle=snakemake.params.allow_pickle,  # noqa: F821
    revision=snakemake.params.revision,  # noqa: F821
)
