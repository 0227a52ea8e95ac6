"""Entry point of rule train_toy: train one toy model and save its checkpoints."""

from pathlib import Path

from pipeline.checkpoints import train_toy
from pipeline.logs import setup
from pipeline.toy.schedule import ToyModel, TrainConfig

setup(snakemake.log[0])  # noqa: F821
p = snakemake.params  # noqa: F821
corpus = snakemake.input.corpus  # noqa: F821
out_dir = Path(snakemake.output[0]).parents[1]  # results/checkpoints/{model}  # noqa: F821
train_toy(ToyModel(**p.model), TrainConfig(**p.train), corpus, p.vocab_size, out_dir)
