"""Entry point of rule seeds: the cross-seed divergence of one group's models at one step."""

from pathlib import Path

from pipeline.config import execution
from pipeline.logs import setup
from pipeline.provenance import from_job
from pipeline.seeds import compare_seeds

setup(snakemake.log[0])  # noqa: F821
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
w = snakemake.wildcards  # noqa: F821
run = execution(snakemake.config, "extract")  # noqa: F821
compare_seeds(
    checkpoints={
        m: str(Path(c).parent)
        for m, c in zip(snakemake.params.models, snakemake.input.configs)  # noqa: F821
    },
    eval_path=snakemake.input.eval,  # noqa: F821
    out_path=snakemake.output[0],  # noqa: F821
    group=w.group,
    step=int(w.step),
    per_pass=run["sequences_per_pass"],
    device=run["device"],
)
