"""The workflow's configuration, by job:

- ``declarations``: every section's keys with their defaults and meanings (the one home of each
  setting), science apart from execution (``execution``) and presentation (``plots``);
- ``load``: strict YAML, the JSON schema (``config/schema.yaml``, with the declarations'
  descriptions and defaults) and ``section``, which overlays a section on its defaults;
- ``checks``: the cross-key rules that a schema cannot express, each error naming the key;
- ``science``: what the results depend on, and its digest.

Light on purpose (no torch, no matplotlib): Snakemake imports it to build the DAG.
"""

from pipeline.config.checks import (
    RESULTS_ENTRIES,
    check,
    has_optimizer_states,
    language_data_names,
    results_dir,
)
from pipeline.config.declarations import (
    SECTIONS,
    ExtractConfig,
    FitConfig,
    ReduceConfig,
    UpdateConfig,
    Windows,
)
from pipeline.config.load import (
    ConfigError,
    check_files,
    check_types,
    execution,
    filled,
    fit_configs,
    section,
    toy_language,
    toy_train,
    validate,
)
from pipeline.config.science import digest, science

__all__ = [
    "RESULTS_ENTRIES",
    "SECTIONS",
    "ConfigError",
    "ExtractConfig",
    "FitConfig",
    "ReduceConfig",
    "UpdateConfig",
    "Windows",
    "check",
    "check_files",
    "check_types",
    "digest",
    "execution",
    "filled",
    "fit_configs",
    "has_optimizer_states",
    "language_data_names",
    "results_dir",
    "science",
    "section",
    "toy_language",
    "toy_train",
    "validate",
]
