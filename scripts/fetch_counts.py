"""Entry point of rule fetch_counts: download the frequency counts and check their sha256."""

from pipeline.logs import setup
from pipeline.sources import download_verified

setup(snakemake.log[0])  # noqa: F821
download_verified(snakemake.params.url, snakemake.params.sha256, snakemake.output[0])  # noqa: F821
