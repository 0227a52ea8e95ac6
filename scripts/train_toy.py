"""Entry point of rule train_toy: train one toy model and save its checkpoints."""

from pathlib import Path

import xarray as xr

from pipeline.checkpoints import ToyModel, TrainConfig, train_toy
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
p = snakemake.params  # noqa: F821
stream = xr.open_zarr(snakemake.input.corpus)["train"].values  # noqa: F821
out_dir = Path(snakemake.output[0]).parents[1]  # results/checkpoints/{model}  # noqa: F821
train_toy(ToyModel(**p.model), TrainConfig(**p.train), stream, p.vocab_size, out_dir)
