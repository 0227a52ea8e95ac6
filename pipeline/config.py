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
from pathlib import Path

from pipeline import formats
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
class UpdateConfig:
    """How the update stage measures one step from a checkpoint (the ``update`` section).

    ``alpha`` is the landscape grid in multiples of the step length ‖Δθ‖ (0 is θ, 1 the actual
    step); ``steps`` the checkpoints analysed (None: every listed step).
    """

    steps: tuple[int, ...] | list[int] | None = None
    direction: str = "auto"  # "auto", "optimizer" or "displacement"
    batches: int = 5  # K fixed update batches
    alpha: tuple[float, ...] | list[float] = tuple(float(a) for a in range(-10, 11))
    landscape_tokens: int = 1000  # per-token cross-sections for this many tokens of V
    landscape_sequences: int | None = None  # the mean landscape over this many sequences
    gradients: bool = True  # exact per-token gradients for a sample of V
    gradient_tokens: int = 256  # that sample's size
    seed: int = 0  # seed of the token samples
    data: dict | None = None  # where the update batches come from; None: the toy language
    batch_size: int | None = None  # evaluation sequences per forward pass; None: sized
    device: str = "auto"


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
    smooth_width : half-width, in decades of step, of a log-spaced moving average of log L
        (each point the mean over the steps within a factor 10^width of it: ZSL's smoothing of
        a dense training curve); 0 is off.
    subsample : keep at most this many points, log-spaced in step; 0 is off.
    """

    min_step: float = 100
    a: float | None = 0.0
    smooth: int = 0
    smooth_width: float = 0.0
    subsample: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_step) and self.min_step >= 0):
            raise ValueError(f"fit.min_step must be finite and >= 0, got {self.min_step}")
        if self.a is not None and not (math.isfinite(self.a) and self.a >= 0):
            raise ValueError(f"fit.a must be None or finite and >= 0, got {self.a}")
        if self.smooth < 0 or (self.smooth > 1 and self.smooth % 2 == 0):
            raise ValueError(f"fit.smooth must be 0, 1 or an odd window length, got {self.smooth}")
        if not (math.isfinite(self.smooth_width) and self.smooth_width >= 0):
            raise ValueError(f"fit.smooth_width must be finite and >= 0, got {self.smooth_width}")
        if self.subsample < 0 or self.subsample == 1:
            raise ValueError(f"fit.subsample must be 0 (off) or >= 2, got {self.subsample}")


SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


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


def toy_language(config: dict, name: str | None = None) -> dict:
    """The toy language ``name`` (a key of ``toy.languages``, whose keys override
    ``toy.language``'s; None: ``toy.language`` itself), defaults filled in, in key order."""
    base = section(config, "toy", "language")
    if name is None:
        return base
    languages = config["toy"].get("languages") or {}
    if name not in languages:
        known = ", ".join(languages) or "none"
        raise ConfigError(
            f"toy.languages has no language {name!r} (known: {known}); add it or fix the name"
        )
    merged = {**base, **languages[name]}
    return {k: merged[k] for k in sorted(merged)}


def toy_train(config: dict, model: str | None = None) -> dict:
    """``toy.train`` with the defaults filled in and, for ``model``, its own ``train``
    overrides (learning rate, batch size, …), in key order."""
    merged = {**section(config, "toy", "train")}
    if model is not None:
        merged.update(config["models"][model].get("train") or {})
    return {k: merged[k] for k in sorted(merged)}


def check_files(paths: list[str]) -> None:
    """Raise ``ConfigError`` for a key written twice in one mapping of a config file (YAML
    keeps the last silently: a model listed twice would be measured once)."""
    import yaml

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{node.start_mark.name}:{line}: key {key!r} is given twice")
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in paths:
        with open(path) as fh:
            yaml.load(fh, Loader=Strict)


def check_types(config: dict, schema: dict | None = None) -> None:
    """What the JSON schema lets through: model names that YAML read as numbers, and floats
    such as ``64.0`` where the schema asks for an integer (a step would become ``step64.0``)."""
    if schema is None:
        import yaml

        schema = yaml.safe_load(SCHEMA.read_text())
    for name in config.get("models", {}):
        if not isinstance(name, str):
            raise ConfigError(f"models: the name {name!r} is read as a number; quote it: '{name}'")
    _integers(config, schema, "", schema)


def _resolve(schema: dict, root: dict) -> dict:
    """``schema`` with a local ``$ref`` (``#/a/b``) replaced by what it points to."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    for key in ref.removeprefix("#/").split("/"):
        root = root[key]
    return root


def _branches(schema: dict, root: dict) -> list[dict]:
    """``schema`` and every conditional (then/else, nested) or alternative (oneOf) branch."""
    out = [schema]
    for key in ("then", "else"):
        if key in schema:
            out += _branches(_resolve(schema[key], root), root)
    for alternative in schema.get("oneOf", []):
        out += _branches(_resolve(alternative, root), root)
    return out


def _integers(value, schema: dict, where: str, root: dict) -> None:
    schema = _resolve(schema, root)
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "integer" in kinds and isinstance(value, float):
        raise ConfigError(f"{where}: {value!r} is not an integer; write it without a decimal point")
    branches = _branches(schema, root)
    if isinstance(value, dict):
        for key, item in value.items():
            for branch in branches:
                sub = branch.get("properties", {}).get(key)
                if sub is None and isinstance(branch.get("additionalProperties"), dict):
                    sub = branch["additionalProperties"]
                if sub is not None:
                    _integers(item, sub, f"{where}.{key}" if where else str(key), root)
    elif isinstance(value, list):
        for branch in branches:
            if isinstance(branch.get("items"), dict):
                for i, item in enumerate(value):
                    _integers(item, branch["items"], f"{where}[{i}]", root)


def check(config: dict) -> None:
    """Raise ``ConfigError`` for settings that are well-typed but inconsistent."""
    toy_models = [m for m, spec in config["models"].items() if spec["source"] == "toy"]
    uses_toy = toy_models or "toy" in (config["eval"]["source"], config["frequency"]["source"])
    if uses_toy and "toy" not in config:
        raise ConfigError("the toy suite is used but the config has no 'toy' section; add one")
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
        stream = config["toy"]["train_tokens"]
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
    train = TrainConfig(**config["toy"]["train"]) if uses_toy else None
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
    if uses_toy:
        if config["eval"]["context_length"] > train.sequence_length:
            raise ConfigError(
                "eval.context_length exceeds toy.train.sequence_length, the toy models' "
                "maximum context; lower it"
            )
        _check_toy_languages(config, toy_models)
    if uses_toy:
        _check_no_ops(config, toy_models)
    _check_eval_inputs(config["eval"])
    _check_update(config)
    try:
        fit_configs(section(config, "fit"))
    except ValueError as err:
        raise ConfigError(str(err)) from err


#: How the dense training-loss curve is fitted where one exists (``fit.train`` overrides the
#: ``fit`` settings for it): as the Zero-sum learning authors fit it (first 100 steps dropped,
#: a log-spaced moving average, a log-uniform subsample, a = 0).
TRAIN_FIT_DEFAULTS = {"min_step": 100, "smooth": 0, "smooth_width": 0.05, "subsample": 200}


def fit_configs(section_: dict) -> dict[str, FitConfig]:
    """The ``fit`` section (from ``section(config, "fit")``) as the settings of each curve:
    ``eval`` (the evaluation loss at checkpoints) and ``train`` (the dense training loss)."""
    base = {k: v for k, v in section_.items() if k != "train"}
    train = {**base, **TRAIN_FIT_DEFAULTS, **(section_.get("train") or {})}
    return {"eval": FitConfig(**base), "train": FitConfig(**train)}


#: Settings that change how a job runs, not what it computes: they reach the jobs through the
#: config, not through params, so that changing one re-runs nothing.
EXECUTION_KEYS = {
    "extract": ("batch_size", "device", "vocab_chunk"),
    "update": ("batch_size", "device"),
    "reduce": ("scheduler",),
}
#: Sections that change no stored number (the figures' resolution).
PRESENTATION_SECTIONS = ("plots",)
#: The ``eval`` section's optional keys and what they default to (``pipeline.data.build_eval``).
EVAL_DEFAULTS = {"seed": 0, "pool_tokens": None, "text_field": "text"}


def _defaults(path: tuple[str, ...]) -> dict:
    """The defaults of the config section at ``path``, from its dataclass."""
    from dataclasses import asdict

    from pipeline.toy.language import ToyLanguage

    classes = {
        ("extract",): ExtractConfig,
        ("update",): UpdateConfig,
        ("reduce",): ReduceConfig,
        ("fit",): FitConfig,
        ("toy", "train"): TrainConfig,
        ("toy", "language"): ToyLanguage,
    }
    if path == ("eval",):
        return dict(EVAL_DEFAULTS)
    if path == ("fit", "train"):
        return dict(TRAIN_FIT_DEFAULTS)
    if path == ("checkpoints",):
        return {"duplicates": ReduceConfig.duplicates}
    if path not in classes:
        return {}
    defaults = asdict(classes[path]())
    return {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}


def section(config: dict, *path: str) -> dict:
    """The config section at ``path`` with its defaults filled in and its execution settings
    left out: what a rule passes as params, so that only a change of result re-runs a job (and
    writing a default value explicitly, or reordering keys, changes nothing)."""
    values = config
    for key in path:
        values = values.get(key, {})
    filled = {**_defaults(path), **values}
    drop = EXECUTION_KEYS.get(path[0], ()) if len(path) == 1 else ()
    if path == ("reduce",):
        filled = {k: v for k, v in filled.items() if k != "duplicates"}
    # in key order: Snakemake compares params as written, and a reordered config is the same
    return {k: filled[k] for k in sorted(filled) if k not in drop}


def execution(config: dict, name: str) -> dict:
    """The execution settings of section ``name`` (defaults filled in), which jobs read from the
    config rather than from params."""
    return {
        k: v
        for k, v in {**_defaults((name,)), **config.get(name, {})}.items()
        if k in EXECUTION_KEYS[name]
    }


def science(config: dict) -> dict:
    """The config as far as results depend on it: sections with defaults filled in, without
    execution settings and presentation sections."""
    out = {k: v for k, v in config.items() if k not in PRESENTATION_SECTIONS}
    for name in ("extract", "update", "reduce", "fit", "eval", "checkpoints"):
        out[name] = section(config, name)
    if "toy" in out:
        out["toy"] = {
            **out["toy"],
            "train": section(config, "toy", "train"),
            "language": section(config, "toy", "language"),
        }
    return out


def digest(config: dict) -> str:
    """sha256 of ``science(config)`` as canonical JSON: the provenance of a run's results."""
    import hashlib
    import json

    text = json.dumps(science(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def has_optimizer_states(model: dict) -> bool:
    """Whether a model's checkpoints carry optimizer states that the update stage can step: the
    toy suite's (except those with a factored output layer, whose states are of the factors,
    and those trained with SGD),
    hub suites in OLMo's native format (``optim.pt`` beside every checkpoint), and Trainer
    checkpoints (hub subfolders, local runs: ``pipeline.plan`` checks the files where they are
    on disk)."""
    if model["source"] == "toy":
        sgd = (model.get("train") or {}).get("optimizer") == "sgd"
        return model.get("head_rank") is None and not sgd
    if model["source"] == "local" and "format" not in model:
        return True  # the files decide (pipeline.plan)
    default = "trainer" if "subfolder" in model else "transformers"
    return formats.get(model.get("format", default)).OPTIMIZER_EXPECTED


def _check_update(config: dict) -> None:
    update = section(config, "update")
    alpha = update["alpha"]
    if 0 not in alpha or 1 not in alpha:
        raise ConfigError(
            f"update.alpha {alpha} must include 0 (the checkpoint) and 1 (the actual step)"
        )
    steps = update["steps"]
    lists = [spec.get("steps", config["steps"]) for spec in config["models"].values()]
    known = set() if "all" in lists else set().union(*map(set, lists))
    unknown = sorted(set(steps or ()) - known) if "all" not in lists else []
    if unknown:
        raise ConfigError(f"update.steps {unknown} are not in steps; pick steps from that list")
    stateful = [m for m, spec in config["models"].items() if has_optimizer_states(spec)]
    data = update["data"] or {"source": "toy"}
    if stateful and update["direction"] != "displacement":
        if data["source"] == "toy" and not (config.get("toy") and "train" in config["toy"]):
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
    named = list(config["toy"].get("languages") or {})
    for name in named:
        clash = [k for k, v in taken.items() if v == name]
        if clash:
            raise ConfigError(
                f"toy.languages.{name}: the name is already the data folder of {clash[0]} "
                f"(results/data/{name}/); rename the language"
            )
    window = toy_train(config)["sequence_length"] + 1
    stepped = {
        config["models"][m].get("language")
        for m in toy_models
        if has_optimizer_states(config["models"][m])
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
        if need > config["toy"]["heldout_tokens"]:
            raise ConfigError(
                f"eval.sequences × (eval.context_length + 1) = {need} ids, but "
                f"toy.heldout_tokens is {config['toy']['heldout_tokens']}; lower eval.sequences "
                "or raise toy.heldout_tokens"
            )


def _check_no_ops(config: dict, toy_models: list[str]) -> None:
    """A setting changed from its default where it changes nothing is a mistake to name, not
    to ignore (the default written out, as config.yaml documents it, is fine)."""
    from dataclasses import fields

    from pipeline.toy.language import ToyLanguage

    default_momentum = next(f.default for f in fields(TrainConfig) if f.name == "momentum")
    default_dead_weight = next(f.default for f in fields(ToyLanguage) if f.name == "dead_weight")
    toy = config["toy"]
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
