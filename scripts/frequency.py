"""Entry point of rule frequency: count the training stream's ids into log2 frequency bins."""

import numpy as np
import xarray as xr

from pipeline.data import write_frequency
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
train = xr.open_zarr(snakemake.input.corpus)["train"].values  # noqa: F821
count = np.bincount(train, minlength=snakemake.params.vocab_size)  # noqa: F821
write_frequency(count, snakemake.output[0], source="toy corpus")  # noqa: F821
