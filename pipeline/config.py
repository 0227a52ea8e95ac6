"""Configuration checks that a JSON schema cannot express, and the config's typed sections.

``config/schema.yaml`` checks keys and types (``rules/common.smk`` validates against it before
any job runs); ``check`` adds the cross-key rules, each error naming the key and the fix.
"""

from __future__ import annotations

from pipeline.checkpoints import TrainConfig, pythia_schedule


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and what to do."""


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
        train = config["toy"]["train"]
        if config["eval"]["context_length"] > train.get(
            "sequence_length", TrainConfig.sequence_length
        ):
            raise ConfigError(
                "eval.context_length exceeds toy.train.sequence_length, the toy models' "
                "maximum context; lower it"
            )
