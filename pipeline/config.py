"""The config's typed sections, and the checks that a JSON schema cannot express.

``config/schema.yaml`` checks keys and types (``rules/common.smk`` validates against it before
any job runs); ``check`` adds the cross-key rules, each error naming the key and the fix. Inside
the package every section is a frozen dataclass: ``ExtractConfig``, ``ReduceConfig``,
``FitConfig`` here, the toy suite's in ``pipeline.toy``.

Light on purpose (no torch, no matplotlib): Snakemake imports it to build the DAG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.toy.schedule import TrainConfig, pythia_schedule


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and what to do."""


@dataclass(frozen=True)
class ExtractConfig:
    """How a checkpoint is measured (the ``extract`` section)."""

    batch_size: int | None = None  # sequences per forward pass; None: sized to the device
    vocab_chunk: int = 8192  # vocabulary rows per block of logits
    dtype: str = "float32"  # "float32", or "bfloat16" (softmax and sums stay float32)
    device: str = "auto"  # "auto": CUDA when present, else CPU
    parameters: bool = True  # parameter-gradient decomposition and D_W (two backward passes)
    rank_tokens: int = 512  # logit-gradient rank for powers of two up to this many tokens; 0: off


@dataclass(frozen=True)
class ReduceConfig:
    """The ``reduce`` section, with ``checkpoints.duplicates``.

    The reductions work one step at a time: their memory is bounded by one step's tokens (all
    measurements of one checkpoint), however many steps there are.
    """

    saturation_tolerance: float = 0.01
    quantiles: tuple[float, ...] | list[float] = (0.1, 0.5, 0.9)
    dissent_threshold: float = -0.9
    duplicates: str = "warn"  # revisions with identical weights: "warn", "skip" or "fail"
    scheduler: str | None = None  # address of a dask.distributed scheduler; None: local threads


@dataclass(frozen=True)
class FitConfig:
    """The ``fit`` section of the config.

    Parameters
    ----------
    min_step : steps t <= ``min_step`` (the initial transient) are not fitted; step 0 never is.
    a : the irreducible loss, fixed; ``None`` fits it (a >= 0).
    smooth : odd window (in points) of a centred moving average of log L; 0 or 1 is off.
    subsample : keep at most this many points, log-spaced in step; 0 is off.
    """

    min_step: float = 100
    a: float | None = 0.0
    smooth: int = 0
    subsample: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_step) and self.min_step >= 0):
            raise ValueError(f"fit.min_step must be finite and >= 0, got {self.min_step}")
        if self.a is not None and not (math.isfinite(self.a) and self.a >= 0):
            raise ValueError(f"fit.a must be None or finite and >= 0, got {self.a}")
        if self.smooth < 0 or (self.smooth > 1 and self.smooth % 2 == 0):
            raise ValueError(f"fit.smooth must be 0, 1 or an odd window length, got {self.smooth}")
        if self.subsample < 0 or self.subsample == 1:
            raise ValueError(f"fit.subsample must be 0 (off) or >= 2, got {self.subsample}")


def check(config: dict) -> None:
    """Raise ``ConfigError`` for settings that are well-typed but inconsistent."""
    toy_models = [m for m, spec in config["models"].items() if spec["source"] == "toy"]
    uses_toy = toy_models or "toy" in (config["eval"]["source"], config["frequency"]["source"])
    if uses_toy and "toy" not in config:
        raise ConfigError("the toy suite is used but the config has no 'toy' section; add one")
    for name in toy_models:
        spec = config["models"][name]
        if spec["hidden_size"] % spec["heads"]:
            raise ConfigError(
                f"models.{name}: hidden_size {spec['hidden_size']} is not divisible by "
                f"heads {spec['heads']}"
            )
    if toy_models:
        train = TrainConfig(**config["toy"]["train"])
        saved = set(pythia_schedule(train.steps, train.save_every))
        missing = sorted(set(config["steps"]) - saved)
        if missing:
            raise ConfigError(
                f"steps: {missing} are not saved by the toy training schedule "
                f"(toy.train.steps={train.steps}, save_every={train.save_every} saves "
                f"{sorted(saved)}); pick steps from that list or change toy.train"
            )
    if uses_toy:
        train = TrainConfig(**config["toy"]["train"])
        if config["eval"]["context_length"] > train.sequence_length:
            raise ConfigError(
                "eval.context_length exceeds toy.train.sequence_length, the toy models' "
                "maximum context; lower it"
            )
    try:
        FitConfig(**config.get("fit", {}))
    except ValueError as err:
        raise ConfigError(str(err)) from err


#: Settings that change how a job runs, not what it computes (left out of ``science``).
EXECUTION_KEYS = {
    "extract": ("batch_size", "device", "vocab_chunk"),
    "reduce": ("scheduler",),
}
#: Sections that change no stored number (the figures' resolution).
PRESENTATION_SECTIONS = ("plots",)


def science(config: dict) -> dict:
    """The config without its execution settings and presentation sections: what the results
    depend on."""
    out = {k: v for k, v in config.items() if k not in PRESENTATION_SECTIONS}
    for section, keys in EXECUTION_KEYS.items():
        if section in out:
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


def digest(config: dict) -> str:
    """sha256 of ``science(config)`` as canonical JSON: the provenance of a run's results."""
    import hashlib
    import json

    text = json.dumps(science(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
