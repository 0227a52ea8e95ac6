"""Entry point of rule update: one optimizer step (or the displacement to the next checkpoint)
from one checkpoint, measured on the update batches and the evaluation set."""

from pathlib import Path

from pipeline.config import UpdateConfig, execution
from pipeline.logs import setup
from pipeline.plan import Plan
from pipeline.provenance import from_job
from pipeline.toy.schedule import TrainConfig
from pipeline.update import analyse_update

setup(snakemake.log[0])  # noqa: F821
from_job(snakemake)  # noqa: F821 (every store it writes records the inputs)
w, inp, p = snakemake.wildcards, snakemake.input, snakemake.params  # noqa: F821
# the checkpoint belongs to this model (its entry; its other checkpoints)
Plan(snakemake.config).check_checkpoints(w.model)  # noqa: F821
analyse_update(
    checkpoint=str(Path(inp.config).parent),
    eval_path=inp.eval,
    out_path=snakemake.output[0],  # noqa: F821
    model_name=w.model,
    step=int(w.step),
    cfg=UpdateConfig(
        **p.section,  # with the direction the workflow planned (pipeline.plan)
        **execution(snakemake.config, "update"),  # noqa: F821
    ),
    update_path=inp.batches if "batches" in inp.keys() else None,
    next_checkpoint=str(Path(inp.next_config).parent) if "next_config" in inp.keys() else None,
    next_step=p.next_step,
    allow_pickle=p.allow_pickle,
    max_grad_norm=p.max_grad_norm,
    # the learning rate the toy schedule gives the next step (others check their own schedule)
    lr=TrainConfig(**p.schedule).lr_after(int(w.step)) if p.schedule else None,
)
