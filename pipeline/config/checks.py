"""The cross-key checks that a JSON schema cannot express, each error naming the key and the
fix, and the facts about a config that they and the plan share (which models carry optimizer
states, which data folders a run writes, where its results go).

Light on purpose (no torch, no matplotlib): Snakemake imports it to build the DAG.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import formats
from pipeline.config.load import (
    ConfigError,
    fit_configs,
    section,
    toy_language,
    toy_train,
    uses_toy,
)
from pipeline.toy.schedule import TrainConfig, pythia_schedule

#: What the default run keeps in ``results/`` (a named run's folder must not be one of them).
RESULTS_ENTRIES = (
    "benchmarks",
    "checkpoints",
    "data",
    "extract",
    "figures",
    "fits",
    "logs",
    "provenance.html",
    "reduce",
    "report.html",
    "summary.zarr",
    "update",
)


def results_dir(config: dict) -> str:
    """The run's results folder: ``results/`` for a config without ``run`` (the embedded
    default), ``results/{run}/`` for a named run, so that runs of two configs leave each
    other's results, figures and report alone."""
    run = config.get("run")
    return f"results/{run}" if run else "results"


def check(config: dict) -> None:
    """Raise ``ConfigError`` for settings that are well-typed but inconsistent."""
    toy_models = [m for m, spec in config["models"].items() if spec["source"] == "toy"]
    toy = uses_toy(config)
    if config.get("run") in RESULTS_ENTRIES:
        raise ConfigError(
            f"run: {config['run']!r} is a folder of the default run's results/ "
            f"(results/{config['run']}); choose another run name"
        )
    for name, spec in config["models"].items():
        if spec["source"] == "hub" and "{step}" not in spec.get("revision", "{step}") + spec.get(
            "subfolder", ""
        ):
            raise ConfigError(
                f"models.{name}: revision {spec['revision']!r} names one revision for every step; "
                "give a template with {step} (step{step}) or a subfolder template "
                "(subfolder: checkpoint-{step})"
            )
        if (
            "format" in spec
            and formats.get(spec["format"]).PICKLES_ONLY
            and not spec.get("allow_pickle")
        ):
            raise ConfigError(
                f"models.{name}: format olmo reads OLMo's model.pt and optim.pt, which are "
                "pickles; set allow_pickle: true to read them (weights_only loading, no code runs)"
            )
    for name in toy_models:
        spec = config["models"][name]
        if spec["hidden_size"] % spec["heads"]:
            raise ConfigError(
                f"models.{name}: hidden_size {spec['hidden_size']} is not divisible by "
                f"heads {spec['heads']}"
            )
        if spec.get("head_rank", 0) > spec["hidden_size"]:
            raise ConfigError(
                f"models.{name}: head_rank {spec['head_rank']} exceeds hidden_size "
                f"{spec['hidden_size']}; the output layer's rank is at most d anyway: lower it "
                "(or leave it out for an unfactored output layer)"
            )
        corpus = toy_train(config, name).get("corpus_tokens")
        window = toy_train(config)["sequence_length"] + 1
        if corpus is not None and corpus < window:
            raise ConfigError(
                f"models.{name}.train.corpus_tokens {corpus} is shorter than one training "
                f"window (toy.train.sequence_length + 1 = {window}); raise it"
            )
        stream = section(config, "toy")["train_tokens"]
        if corpus is not None and corpus > stream:
            raise ConfigError(
                f"models.{name}.train.corpus_tokens {corpus} exceeds the training stream "
                f"(toy.train_tokens = {stream}): the model would train on the whole stream, as "
                "without it; lower it, or raise toy.train_tokens"
            )
        if "language" in spec:
            try:
                toy_language(config, spec["language"])
            except ConfigError as err:
                raise ConfigError(f"models.{name}.language: {err}") from None
    train = TrainConfig(**section(config, "toy", "train")) if toy else None
    for name in toy_models:
        saved = set(pythia_schedule(train.steps, train.save_every))
        listed = config["models"][name].get("steps", config["steps"])
        missing = sorted(set(listed if listed != "all" else ()) - saved)
        if missing:
            raise ConfigError(
                f"steps: {missing} are not saved by the toy training schedule of {name} "
                f"(toy.train.steps={train.steps}, save_every={train.save_every} saves "
                f"{sorted(saved)}); pick steps from that list or change toy.train"
            )
    if toy:
        if config["eval"]["context_length"] > train.sequence_length:
            raise ConfigError(
                "eval.context_length exceeds toy.train.sequence_length, the toy models' "
                "maximum context; lower it"
            )
        _check_toy_languages(config, toy_models)
    if toy:
        _check_no_ops(config, toy_models)
    _check_eval_inputs(config["eval"])
    _check_stage_steps(config, "extract")
    _check_update(config)
    try:
        fit_configs(config)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def has_optimizer_states(config: dict, name: str) -> bool:
    """Whether model ``name``'s checkpoints carry optimizer states that the update stage can
    step: the toy suite's, whatever its optimizer (not with a factored output layer, whose
    states are of the factors), hub suites in OLMo's native format (``optim.pt`` beside every
    checkpoint), and Trainer checkpoints (hub subfolders, local runs: ``pipeline.plan`` checks
    the files where they are on disk)."""
    model = config["models"][name]
    if model["source"] == "toy":
        return model.get("head_rank") is None
    if model["source"] == "local" and "format" not in model:
        return True  # the files decide (pipeline.plan)
    default = "trainer" if "subfolder" in model else "transformers"
    return formats.get(model.get("format", default)).OPTIMIZER_EXPECTED


def _check_stage_steps(config: dict, stage: str) -> None:
    """A stage's ``steps`` (``extract.steps``, ``update.steps``) are steps some model lists."""
    lists = [spec.get("steps", config["steps"]) for spec in config["models"].values()]
    if "all" in lists:
        return
    known = set().union(*map(set, lists))
    unknown = sorted(set(section(config, stage)["steps"] or ()) - known)
    if unknown:
        raise ConfigError(f"{stage}.steps {unknown} are not in steps; pick steps from that list")


def _check_update(config: dict) -> None:
    update = section(config, "update")
    alpha = update["alpha"]
    if 0 not in alpha or 1 not in alpha:
        raise ConfigError(
            f"update.alpha {alpha} must include 0 (the checkpoint) and 1 (the actual step)"
        )
    _check_stage_steps(config, "update")
    stateful = [m for m in config["models"] if has_optimizer_states(config, m)]
    data = update["data"] or {"source": "toy"}
    if stateful and update["direction"] != "displacement":
        if data["source"] == "toy" and not uses_toy(config):
            raise ConfigError(
                f"{stateful} take optimizer steps, but update.data is not given and there is no "
                "toy language to draw the update batches from; set update.data (a dataset, text "
                "files or exported training batches, as for eval)"
            )
        if data["source"] != "toy" and not {"sequences", "context_length"} <= set(data):
            raise ConfigError(
                "update.data: give sequences (per update batch) and context_length for the "
                f"{data['source']} source"
            )
    if update["direction"] == "optimizer":
        stateless = [m for m in config["models"] if m not in stateful]
        if stateless:
            raise ConfigError(
                f"update.direction is optimizer, but {stateless} have no saved optimizer states; "
                "use auto (the displacement to the next checkpoint where there is none)"
            )


def language_data_names(config: dict) -> dict[str, str]:
    """The ``results/data/{name}/`` folders of the run's own data, by what they hold: the toy
    corpus, the frequency table, the evaluation set and the update batches (names in
    ``toy.languages`` must differ from them: each named language has its folder)."""
    update = section(config, "update")["data"] or {"name": "toy"}
    return {
        "toy.language's corpus": "toy",
        "frequency.name": config["frequency"]["name"],
        "eval.name": config["eval"]["name"],
        "update.data.name": update.get("name", "toy"),
    }


def _check_toy_languages(config: dict, toy_models: list[str]) -> None:
    """Every toy language (``toy.language`` and each of ``toy.languages``) must be consistent,
    hold the evaluation set and, where the update stage steps its models, its update batches."""
    taken = language_data_names(config)
    named = list(section(config, "toy").get("languages") or {})
    for name in named:
        clash = [k for k, v in taken.items() if v == name]
        if clash:
            raise ConfigError(
                f"toy.languages.{name}: the name is already the data folder of {clash[0]} "
                f"(results/data/{name}/); rename the language"
            )
    window = toy_train(config)["sequence_length"] + 1
    stepped = {
        config["models"][m].get("language") for m in toy_models if has_optimizer_states(config, m)
    }
    for name in [None, *named]:
        where = "toy.language" if name is None else f"toy.languages.{name}"
        language = toy_language(config, name)
        if language["kind"] == "markov" and language["successors"] > language["vocab_size"]:
            raise ConfigError(
                f"{where}.successors ({language['successors']}) exceeds its vocab_size "
                f"({language['vocab_size']}): an id cannot have more distinct successors than "
                "there are ids; lower it"
            )
        if language["dead_ids"] >= language["vocab_size"]:
            raise ConfigError(
                f"{where}.dead_ids ({language['dead_ids']}) is not below its vocab_size "
                f"({language['vocab_size']}): every id would be scaled alike and there would be "
                "no dead tail; lower it (0 for none)"
            )
        if name in stepped and language["chain_length"] < window:
            raise ConfigError(
                f"{where}: chain_length {language['chain_length']} is shorter than a training "
                f"window (toy.train.sequence_length + 1 = {window}), which the update batches "
                "are cut from; raise chain_length"
            )
    spec = config["eval"]
    if spec["source"] == "toy" or named:
        need = spec["sequences"] * (spec["context_length"] + 1)
        if need > section(config, "toy")["heldout_tokens"]:
            raise ConfigError(
                f"eval.sequences × (eval.context_length + 1) = {need} ids, but "
                f"toy.heldout_tokens is {section(config, 'toy')['heldout_tokens']}; lower "
                "eval.sequences "
                "or raise toy.heldout_tokens"
            )


def _check_no_ops(config: dict, toy_models: list[str]) -> None:
    """A setting changed from its default where it changes nothing is a mistake to name, not
    to ignore (the default written out, as config.yaml documents it, is fine)."""
    from dataclasses import fields

    from pipeline.toy.language import ToyLanguage

    default_momentum = next(f.default for f in fields(TrainConfig) if f.name == "momentum")
    default_dead_weight = next(f.default for f in fields(ToyLanguage) if f.name == "dead_weight")
    toy = config.get("toy") or {}
    for where, raw, name in [
        ("toy.train", toy.get("train") or {}, None),
        *((f"models.{m}.train", config["models"][m].get("train") or {}, m) for m in toy_models),
    ]:
        if (
            raw.get("momentum", default_momentum) != default_momentum
            and toy_train(config, name)["optimizer"] != "sgd"
        ):
            raise ConfigError(
                f"{where}.momentum is SGD's, but the optimizer there is "
                f"{toy_train(config, name)['optimizer']}; remove it or set optimizer: sgd"
            )
    languages = toy.get("languages") or {}
    for where, raw, name in [
        ("toy.language", toy.get("language") or {}, None),
        *((f"toy.languages.{n}", languages[n] or {}, n) for n in languages),
    ]:
        if (
            raw.get("dead_weight", default_dead_weight) != default_dead_weight
            and not toy_language(config, name)["dead_ids"]
        ):
            raise ConfigError(
                f"{where}.dead_weight scales the dead tail, but dead_ids is 0 there: give "
                "dead_ids (how many of the rarest ids are dead) or remove dead_weight"
            )


def _check_eval_inputs(spec: dict) -> None:
    """Local files the evaluation set reads must exist (checked before any job deletes the old
    evaluation set), and a pre-tokenized array must hold enough windows."""
    path = spec.get("tokenizer", {}).get("path")
    if path is not None and not Path(path).is_dir():
        raise ConfigError(f"eval.tokenizer.path: {path} is not a directory; give a tokenizer's")
    for p in spec.get("paths", []) if spec["source"] == "text" else []:
        if not Path(p).exists():
            raise ConfigError(f"eval.paths: {p} does not exist")
    if spec["source"] == "tokens" and Path(spec["path"]).exists():
        import numpy as np

        shape = np.load(spec["path"], mmap_mode="r").shape
        window = spec["context_length"] + 1
        windows = shape[0] // window if len(shape) == 1 else shape[0]
        if windows < spec["sequences"]:
            raise ConfigError(
                f"eval.sequences is {spec['sequences']} but {spec['path']} holds only {windows} "
                f"windows of {window} ids; lower eval.sequences or eval.context_length"
            )
