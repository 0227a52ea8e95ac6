"""Entry point of rule eval_set: cut the evaluation set V from the held-out stream."""

import xarray as xr

from pipeline.data import eval_windows, write_eval
from pipeline.logs import setup

setup(snakemake.log[0])  # noqa: F821
p = snakemake.params  # noqa: F821
stream = xr.open_zarr(snakemake.input.corpus)["heldout"].values  # noqa: F821
bins = xr.open_zarr(snakemake.input.frequency)["bin"].values  # noqa: F821
windows = eval_windows(stream, p.sequences, p.context_length)
write_eval(windows, bins, snakemake.output[0], source="toy held-out stream")  # noqa: F821
