"""Reading a config: strict YAML, the JSON schema with the declarations' descriptions and
defaults, and each section overlaid on its defaults.

``rules/common.smk`` calls ``check_files``, ``check_types`` and ``validate`` before any job runs;
every job reads its settings through ``section`` (science, passed as params so that a change
re-runs exactly the jobs it changes) or ``execution`` (read from the config, so that changing one
re-runs nothing).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from pipeline import declare
from pipeline.config.declarations import SECTIONS, FitConfig


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and what to do."""


SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"

#: Keys that moved, and where they are now: an old config gets the fix, not a schema error.
MOVED = {
    "extract.batch_size": "execution.extract.sequences_per_pass",
    "extract.vocab_chunk": "execution.extract.vocab_chunk",
    "extract.device": "execution.extract.device",
    "update.batch_size": "execution.update.sequences_per_pass",
    "update.device": "execution.update.device",
    "reduce.scheduler": "execution.reduce.scheduler",
}


def section(config: dict, *path: str) -> dict:
    """The config section at ``path`` overlaid on its declared defaults, in key order (Snakemake
    compares params as written: writing a default out, or reordering keys, changes nothing)."""
    values = config
    for key in path:
        values = values.get(key) or {}
    cls = SECTIONS.get(path)
    filled = {**(declare.defaults(cls) if cls else {}), **values}
    return {k: filled[k] for k in sorted(filled)}


def filled(config: dict) -> dict:
    """The run's config: a copy of ``config`` with its models' seeds expanded
    (``expand_seeds``) and every declared section overlaid on its defaults (``toy`` only where
    the toy suite is used; ``update.data`` only where given)."""
    import copy

    out = copy.deepcopy(config)
    out["models"] = expand_seeds(out["models"])
    for path in sorted(SECTIONS, key=len):
        if path[0] == "toy" and not uses_toy(config):
            continue
        parent = out
        for key in path[:-1]:
            parent = parent.setdefault(key, {})
        if path[-1] in parent and parent[path[-1]] is None:
            continue  # a section that is off unless given (update.data: null)
        parent[path[-1]] = section(out, *path)  # its own subsections kept as given
    return out


def expand_seeds(models: dict) -> dict:
    """The models of a ``models`` section, each toy entry with ``seeds: [s, …]`` replaced by
    one entry per seed, ``{name}-seed{s}``, whose ``train.seed`` is s and whose ``group`` is
    the entry's name (its own ``group`` where it sets one); other entries as they are."""
    out = {}
    for name, spec in models.items():
        if "seeds" not in spec:
            out[name] = spec
            continue
        where = f"models.{name}"
        if "seed" in (spec.get("train") or {}):
            raise ConfigError(f"{where} sets both seeds and train.seed; keep one")
        for seed in spec["seeds"]:
            entry = {k: v for k, v in spec.items() if k != "seeds"}
            entry["train"] = {**(spec.get("train") or {}), "seed": seed}
            entry.setdefault("group", name)
            if f"{name}-seed{seed}" in models:
                raise ConfigError(
                    f"{where}'s seed {seed} is named {name}-seed{seed}, which is a model of its "
                    "own; rename one of them"
                )
            out[f"{name}-seed{seed}"] = entry
    return out


def uses_toy(config: dict) -> bool:
    """Whether a model, the evaluation set or the frequency counts come from the toy suite."""
    sources = {spec["source"] for spec in config["models"].values()}
    return "toy" in sources | {config["eval"]["source"], config["frequency"]["source"]}


def execution(config: dict, stage: str) -> dict:
    """The execution settings of ``stage`` (``execution.{stage}``, defaults filled in)."""
    return section(config, "execution", stage)


def toy_language(config: dict, name: str | None = None) -> dict:
    """The toy language ``name`` (a key of ``toy.languages``, whose keys override
    ``toy.language``'s; None: ``toy.language`` itself), defaults filled in, in key order."""
    base = section(config, "toy", "language")
    if name is None:
        return base
    languages = section(config, "toy").get("languages") or {}
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


def fit_configs(config: dict) -> dict[str, FitConfig]:
    """The settings of each fitted curve: ``eval`` (the evaluation loss at checkpoints, from
    ``fit``) and ``train`` (the dense training loss, from ``fit.train`` over ``fit.a``)."""
    base = {k: v for k, v in section(config, "fit").items() if k != "train"}
    train = {k: v for k, v in section(config, "fit", "train").items() if v is not None}
    return {"eval": FitConfig(**base), "train": FitConfig(**{"a": base["a"], **train})}


# --- the file and its schema ----------------------------------------------------------------


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


@cache
def _schema_text() -> str:
    """``config/schema.yaml`` with every declared key's description and default filled in, as
    JSON (a fresh copy per call of ``schema``: YAML's anchors share their objects)."""
    import yaml

    out = yaml.safe_load(SCHEMA.read_text())
    out = json.loads(json.dumps(out))
    for path, cls in SECTIONS.items():
        node = out
        for key in path:
            node = _resolve(node["properties"][key], out)
        for name, field in declare.keys(cls).items():
            prop = node["properties"].get(name)
            if prop is None:
                where = ".".join(path)
                raise KeyError(f"{SCHEMA}: {where}.{name} is declared but not in the schema")
            prop["description"] = declare.meaning(field)
            if declare.kind(field) == "setting":
                prop["default"] = declare.defaults(cls)[name]
    return json.dumps(out)


def schema() -> dict:
    """The JSON schema of a config: ``config/schema.yaml`` (types and ranges) with the
    declarations' descriptions and defaults."""
    return json.loads(_schema_text())


def validate(config: dict) -> None:
    """Raise ``ConfigError`` naming the key for the first violation of the JSON schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "the config"
        raise ConfigError(f"{where}: {error.message} (config/schema.yaml)")


def check_types(config: dict) -> None:
    """What the JSON schema lets through or words poorly: model names that YAML read as numbers,
    floats such as ``64.0`` where the schema asks for an integer (a step would become
    ``step64.0``), and execution settings written where they used to live."""
    for name in config.get("models", {}):
        if not isinstance(name, str):
            raise ConfigError(f"models: the name {name!r} is read as a number; quote it: '{name}'")
    for old, new in MOVED.items():
        stage, key = old.split(".")
        if key in (config.get(stage) or {}):
            raise ConfigError(
                f"{old} is an execution setting (it changes how a job runs, not what it "
                f"computes): it is {new} now; move it there"
            )
    root = schema()
    _integers(config, root, "", root)


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
