"""``pipeline.config``: the cross-key checks that the JSON schema cannot express, called directly
on the embedded default (config.yaml) with one key broken at a time; and the run's digest, which
execution and presentation settings leave alone and every science setting changes."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import yaml

from pipeline.config import ConfigError, check, digest, filled, science
from pipeline.toy.schedule import TrainConfig, pythia_schedule
from tests.snake import REPO


@pytest.fixture(scope="module")
def raw() -> dict:
    """The embedded default config file, as YAML reads it."""
    with open(REPO / "config.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def default(raw) -> dict:
    """The embedded default config as the workflow runs it: overlaid on the declared defaults."""
    return filled(raw)


def changed(config: dict, change: Callable[[dict], object]) -> dict:
    """A deep copy of ``config`` with ``change`` applied to it."""
    out = copy.deepcopy(config)
    change(out)
    return out


def unsaved_step(config: dict) -> int:
    """A step below toy.train.steps that the toy training schedule does not save."""
    saved = set(pythia_schedule(**_schedule(config)))
    return next(s for s in range(config["toy"]["train"]["steps"]) if s not in saved)


def _schedule(config: dict) -> dict:
    train = TrainConfig(**config["toy"]["train"])
    return {"steps": train.steps, "save_every": train.save_every}


def test_the_default_config_passes(raw, default):
    check(raw)
    check(default)
    assert any(spec["source"] == "toy" for spec in default["models"].values())


def test_a_hub_suite_needs_no_toy_section(default):
    """The toy checks apply only where the toy suite is used."""

    def hub_only(c):
        del c["toy"]
        c["models"] = {"pythia-14m": {"source": "hub", "repo_id": "EleutherAI/pythia-14m"}}
        c["steps"] = [0, 3, 1000]  # steps the toy schedule would not save
        c["update"]["steps"] = None
        c["eval"] = {**c["eval"], "source": "tokens", "path": "ids.npy", "context_length": 4096}
        c["frequency"] = {**c["frequency"], "source": "counts", "path": "counts.npy"}

    check(changed(default, hub_only))


def _first_toy(c: dict) -> dict:
    return next(spec for spec in c["models"].values() if spec["source"] == "toy")


def _indivisible_heads(c: dict) -> None:
    spec = _first_toy(c)
    spec["heads"] = spec["hidden_size"] + 1


@pytest.mark.parametrize(
    "change, names",
    [
        pytest.param(_indivisible_heads, ["hidden_size", "heads"], id="heads"),
        pytest.param(
            lambda c: c["steps"].append(unsaved_step(c)),
            ["steps", "toy.train.steps", "save_every"],
            id="unsaved-step",
        ),
        pytest.param(
            lambda c: c["eval"].update(context_length=c["toy"]["train"]["sequence_length"] + 1),
            ["eval.context_length", "toy.train.sequence_length"],
            id="context-length",
        ),
        pytest.param(lambda c: c["fit"].update(smooth=4), ["fit.smooth"], id="fit-smooth"),
        pytest.param(lambda c: c["fit"].update(a=-0.5), ["fit.a"], id="fit-a"),
        pytest.param(lambda c: c["fit"].update(subsample=1), ["fit.subsample"], id="fit-subsample"),
        pytest.param(
            lambda c: c["fit"].update(min_step=float("inf")), ["fit.min_step"], id="fit-min-step"
        ),
        pytest.param(
            lambda c: c["update"].update(alpha=[-1, 0, 2]), ["update.alpha"], id="update-alpha"
        ),
        pytest.param(
            lambda c: c["update"].update(steps=[3]), ["update.steps", "[3]"], id="update-steps"
        ),
        pytest.param(
            lambda c: c.setdefault("extract", {}).update(steps=[3]),
            ["extract.steps", "[3]"],
            id="extract-steps",
        ),
        pytest.param(
            lambda c: (
                c["update"].update(direction="optimizer"),
                c["models"].update(p={"source": "hub", "repo_id": "EleutherAI/pythia-14m"}),
            ),
            ["update.direction", "'p'"],
            id="update-optimizer-without-states",
        ),
        pytest.param(
            lambda c: c["models"].update(
                z={"source": "hub", "repo_id": "mirandrom/zsl-checkpoints", "format": "olmo"}
            ),
            ["models.z", "allow_pickle: true"],
            id="olmo-without-pickle-opt-in",
        ),
        pytest.param(
            lambda c: c["update"].update(
                data={"name": "t", "source": "text", "paths": ["a.txt"], "tokenizer": {}}
            ),
            ["update.data", "sequences", "context_length"],
            id="update-data-without-shape",
        ),
        pytest.param(
            lambda c: _first_toy(c).update(language="nowhere"),
            ["models.toy-d16.language", "'nowhere'", "toy.languages"],
            id="unknown-language",
        ),
        pytest.param(
            lambda c: _first_toy(c).update(head_rank=_first_toy(c)["hidden_size"] + 1),
            ["models.toy-d16", "head_rank", "hidden_size"],
            id="head-rank-above-width",
        ),
        pytest.param(
            lambda c: c["toy"].update(languages={"toy": {"kind": "spam"}}),
            ["toy.languages.toy", "results/data/toy/"],
            id="language-named-like-the-runs-data",
        ),
        pytest.param(
            lambda c: (
                c["toy"].update(languages={"s": {"kind": "spam", "chain_length": 8}}),
                _first_toy(c).update(language="s"),
            ),
            ["toy.languages.s", "chain_length 8", "sequence_length"],
            id="chains-shorter-than-update-windows",
        ),
        pytest.param(
            lambda c: c["toy"].update(languages={"m": {"vocab_size": 16}}),
            ["toy.languages.m.successors", "vocab_size"],
            id="named-language-successors",
        ),
        pytest.param(
            lambda c: _first_toy(c).update(train={"corpus_tokens": 10}),
            ["models.toy-d16.train.corpus_tokens", "sequence_length"],
            id="corpus-shorter-than-a-window",
        ),
        pytest.param(
            lambda c: _first_toy(c).update(train={"corpus_tokens": c["toy"]["train_tokens"] + 1}),
            ["models.toy-d16.train.corpus_tokens", "toy.train_tokens", "whole stream"],
            id="corpus-longer-than-the-stream",
        ),
        pytest.param(
            lambda c: c["toy"]["language"].update(dead_ids=c["toy"]["language"]["vocab_size"]),
            ["toy.language.dead_ids", "vocab_size", "no dead tail"],
            id="every-id-dead",
        ),
        pytest.param(
            lambda c: c["toy"]["language"].update(dead_ids=0, dead_weight=1e-3),
            ["toy.language.dead_weight", "dead_ids is 0"],
            id="dead-weight-without-dead-ids",
        ),
        pytest.param(
            lambda c: c["toy"]["train"].update(optimizer="adamw", momentum=0.5),
            ["toy.train.momentum", "SGD's", "adamw"],
            id="momentum-without-sgd",
        ),
        pytest.param(
            lambda c: c.update(run="figures"),
            ["run: 'figures'", "results/figures", "another run name"],
            id="run-named-like-a-results-folder",
        ),
    ],
)
def test_each_broken_key_is_named(default, change, names):
    broken = changed(default, change)
    with pytest.raises(ConfigError) as err:
        check(broken)
    for name in names:
        assert name in str(err.value), (name, str(err.value))


def test_olmo_suite_without_a_toy_language_needs_update_data():
    cfg = yaml.safe_load((REPO / "config" / "zsl.yaml").read_text())
    check(cfg)
    del cfg["update"]["data"]
    with pytest.raises(ConfigError, match="update.data is not given"):
        check(cfg)


def test_the_step_error_lists_the_offending_steps_and_the_saved_ones(default):
    step = unsaved_step(default)
    with pytest.raises(ConfigError) as err:
        check(changed(default, lambda c: c["steps"].append(step)))
    assert f"steps: [{step}] are not saved" in str(err.value)
    assert str(sorted(pythia_schedule(**_schedule(default)))) in str(err.value)


def test_the_indivisible_model_is_named(default):
    name = next(n for n, spec in default["models"].items() if spec["source"] == "toy")
    with pytest.raises(ConfigError, match=f"models.{name}: hidden_size"):
        check(changed(default, _indivisible_heads))


# --- the digest of a run's science --------------------------------------------------------------

EXECUTION = [
    (("execution", "extract"), "sequences_per_pass", 3),
    (("execution", "extract"), "device", "cuda"),
    (("execution", "extract"), "vocab_chunk", 17),
    (("execution", "reduce"), "scheduler", "tcp://localhost:8786"),
    (("execution", "update"), "sequences_per_pass", 3),
    (("execution", "update"), "device", "cuda"),
    (("plots",), "dpi", 31),
    (("plots",), "figures", ["bnsl"]),
]


def _at(config: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        config = config[key]
    return config


@pytest.mark.parametrize(
    "path, key, value", EXECUTION, ids=[".".join((*p, k)) for p, k, _ in EXECUTION]
)
def test_execution_and_presentation_keys_leave_the_digest(default, path, key, value):
    assert _at(default, path).get(key) != value
    other = changed(default, lambda c: _at(c, path).update({key: value}))
    assert digest(other) == digest(default)
    assert science(other) == science(default)


def test_all_execution_keys_at_once_leave_the_digest(default):
    def every(c):
        for path, key, value in EXECUTION:
            _at(c, path)[key] = value

    assert digest(changed(default, every)) == digest(default)


SCIENCE = {
    "a step": lambda c: c["steps"].remove(max(c["steps"])),
    "reduce.saturation_tolerance": lambda c: c["reduce"].update(
        saturation_tolerance=c["reduce"]["saturation_tolerance"] * 2
    ),
    "reduce.quantiles": lambda c: c["reduce"].update(quantiles=[0.5]),
    "extract.dtype": lambda c: c["extract"].update(dtype="bfloat16"),
    "fit.min_step": lambda c: c["fit"].update(min_step=c["fit"]["min_step"] + 1),
    "toy.train.seed": lambda c: c["toy"]["train"].update(seed=c["toy"]["train"]["seed"] + 1),
    "a model": lambda c: c["models"].pop(next(iter(c["models"]))),
    "update.batches": lambda c: c["update"].update(batches=c["update"]["batches"] + 1),
}


@pytest.mark.parametrize("change", SCIENCE.values(), ids=list(SCIENCE))
def test_science_keys_change_the_digest(default, change):
    assert digest(changed(default, change)) != digest(default)


def test_the_digest_is_a_sha256_that_ignores_key_order(default):
    value = digest(default)
    assert len(value) == 64 and int(value, 16) >= 0
    reordered = {k: default[k] for k in reversed(list(default))}
    reordered["extract"] = {k: v for k, v in reversed(list(default["extract"].items()))}
    assert digest(reordered) == value
    assert digest(copy.deepcopy(default)) == value
    assert "plots" not in science(default) and "execution" not in science(default)
    assert science(default)["extract"]["dtype"] == default["extract"]["dtype"]


# --- what the JSON schema lets through (issue: values accepted but not handled) -------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(steps=[0, 64.0]), r"steps\[1\]: 64.0 is not an integer"),
        (lambda c: c["models"]["toy-d16"].update(hidden_size=16.0), "models.toy-d16.hidden_size"),
        (lambda c: c["models"].update({123: c["models"]["toy-d16"]}), "'123'"),
        (lambda c: c["eval"].update(sequences=2.0), r"eval.sequences: 2.0"),
        (
            lambda c: c["toy"].update(languages={"s": {"vocab_size": 64.0}}),
            r"toy.languages.s.vocab_size: 64.0",
        ),
        (lambda c: c["toy"]["language"].update(seed=1.0), r"toy.language.seed: 1.0"),
    ],
)
def test_check_types_names_the_key(default, change, message):
    from pipeline.config import check_types

    with pytest.raises(ConfigError, match=message):
        check_types(changed(default, change))
    check_types(default)


def test_a_key_given_twice_is_named_with_its_line(tmp_path):
    from pipeline.config import check_files

    path = tmp_path / "c.yaml"
    path.write_text("models:\n  a: {source: toy}\n  b: {source: toy}\n  a: {source: hub}\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: key 'a' is given twice"):
        check_files([str(path)])
    check_files([str(REPO / "config.yaml")])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["toy"]["language"].update(successors=4096), "toy.language.successors"),
        (lambda c: c["eval"].update(sequences=10**6), "toy.heldout_tokens"),
        (
            lambda c: c["eval"].update(source="text", paths=["/nonexistent.txt"], tokenizer={}),
            "eval.paths: /nonexistent.txt does not exist",
        ),
        (
            lambda c: c["eval"].update(
                source="text", paths=[str(REPO / "README.md")], tokenizer={"path": "/no/tok"}
            ),
            "eval.tokenizer.path: /no/tok",
        ),
    ],
)
def test_inputs_the_workflow_cannot_handle_fail_at_parse_time(default, change, message):
    with pytest.raises(ConfigError, match=message):
        check(changed(default, change))


def test_too_few_pretokenized_windows_fail_at_parse_time(default, tmp_path):
    import numpy as np

    np.save(tmp_path / "ids.npy", np.arange(100))
    cfg = changed(
        default, lambda c: c["eval"].update(source="tokens", path=str(tmp_path / "ids.npy"))
    )
    with pytest.raises(ConfigError, match="holds only 1 windows of 65 ids"):
        check(cfg)


def test_params_sections_fill_defaults_and_ignore_key_order(default):
    from pipeline.config import execution, section

    explicit = changed(default, lambda c: c["eval"].update(seed=0, text_field="text"))
    assert section(explicit, "eval") == section(default, "eval")
    reordered = changed(default, lambda c: c.update(fit=dict(reversed(list(c["fit"].items())))))
    assert list(section(reordered, "fit").items()) == list(section(default, "fit").items())
    assert (
        execution(default, "extract")["vocab_chunk"]
        == default["execution"]["extract"]["vocab_chunk"]
    )


def test_a_model_overrides_the_training_and_names_its_language(default):
    from pipeline.config import toy_language, toy_train

    cfg = changed(
        default,
        lambda c: (
            c["toy"].update(languages={"s": {"kind": "spam", "vocab_size": 64}}),
            _first_toy(c).update(language="s", train={"learning_rate": 0.01}),
        ),
    )
    check(cfg)
    name = next(m for m, spec in cfg["models"].items() if spec.get("language") == "s")
    other = next(m for m in cfg["models"] if m != name)
    assert toy_train(cfg, name) == {**toy_train(cfg), "learning_rate": 0.01}
    assert toy_train(cfg, other) == toy_train(cfg)
    language = toy_language(cfg, "s")
    assert language["kind"] == "spam" and language["vocab_size"] == 64
    # the keys it does not set are toy.language's
    assert language["seed"] == toy_language(cfg)["seed"] == cfg["toy"]["language"]["seed"]


def test_models_whose_saved_state_cannot_be_stepped_follow_displacements():
    from pipeline.config import has_optimizer_states
    from pipeline.toy.schedule import OPTIMIZERS

    toy = {"source": "toy", "hidden_size": 8, "layers": 1, "heads": 1}

    def stateful(model: dict, run_train: dict | None = None) -> bool:
        config = {"models": {"m": model}, "toy": {"train": run_train or {}}}
        return has_optimizer_states(config, "m")

    assert stateful(toy)
    assert not stateful({**toy, "head_rank": 2})  # the factors' moments
    for optimizer in OPTIMIZERS:  # every toy optimizer's state is stepped
        assert stateful({**toy, "train": {"optimizer": optimizer}})
        assert stateful(toy, {"optimizer": optimizer})


# --- one home per setting: the declarations, the schema, the presets ---------------------------


def test_the_schema_carries_every_declared_key_and_nothing_undeclared():
    """Each declared section's keys are the schema's properties there (its subsections apart),
    each with the declaration's meaning and, for a setting, its default."""
    from pipeline import declare
    from pipeline.config import SECTIONS
    from pipeline.config.load import _resolve, schema

    root = schema()
    for path, cls in SECTIONS.items():
        node = root
        for key in path:
            node = _resolve(node["properties"][key], root)
        subsections = {
            p[len(path)] for p in SECTIONS if len(p) > len(path) and p[: len(path)] == path
        }
        assert set(node["properties"]) == set(declare.keys(cls)) | subsections, path
        for name, field in declare.keys(cls).items():
            prop = node["properties"][name]
            assert prop["description"] == declare.meaning(field)
            if declare.kind(field) == "setting":
                assert prop["default"] == declare.defaults(cls)[name], (path, name)
            else:
                assert "default" not in prop, (path, name)
            if declare.kind(field) == "required":
                assert name in node.get("required", []), (path, name)


def test_every_declared_default_passes_the_schema(default):
    """The defaults are valid values: the filled default config validates."""
    from pipeline.config import validate

    validate(default)


PRESETS = sorted(p for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml")


@pytest.mark.parametrize("path", [REPO / "config.yaml", *PRESETS], ids=lambda p: p.name)
def test_a_preset_holds_only_what_differs_from_the_defaults(path):
    from pipeline import declare
    from pipeline.config import SECTIONS

    config = yaml.safe_load(path.read_text())
    for where, cls in SECTIONS.items():
        values = config
        for key in where:
            values = (values or {}).get(key) if isinstance(values, dict) else None
        defaults = declare.defaults(cls)
        same = [k for k, v in (values or {}).items() if k in defaults and defaults[k] == v]
        assert not same, f"{path.name}: {'.'.join(where)}.{same} repeat their defaults"


def test_a_filled_config_is_filled_once(raw, default):
    assert filled(default) == default
    assert science(raw) == science(default) and digest(raw) == digest(default)


@pytest.mark.parametrize(
    "old, new",
    [
        ("extract.batch_size", "execution.extract.sequences_per_pass"),
        ("update.device", "execution.update.device"),
        ("reduce.scheduler", "execution.reduce.scheduler"),
    ],
)
def test_an_execution_setting_in_its_old_place_names_its_new_one(raw, old, new):
    from pipeline.config import check_types

    stage, key = old.split(".")
    with pytest.raises(ConfigError, match=rf"{old} is an execution setting.*it is {new} now"):
        check_types(changed(raw, lambda c: c.setdefault(stage, {}).update({key: 1})))


def test_a_schema_violation_names_the_key(raw):
    from pipeline.config import validate

    with pytest.raises(ConfigError, match=r"extract.dtype: 'float16' is not one of"):
        validate(changed(raw, lambda c: c.update(extract={"dtype": "float16"})))
    with pytest.raises(ConfigError, match=r"reduce: Additional properties .*'tolerance'"):
        validate(changed(raw, lambda c: c.update(reduce={"tolerance": 0.1})))


def test_seeds_expand_into_one_model_per_seed_of_one_group():
    toy = {"source": "toy", "hidden_size": 8, "layers": 1, "heads": 1}
    raw = {
        "models": {"base": {**toy, "seeds": [0, 3], "train": {"learning_rate": 0.01}}, "x": toy},
        "steps": [0],
        "eval": {"source": "toy"},
        "frequency": {"source": "toy"},
    }
    models = filled(raw)["models"]
    assert list(models) == ["base-seed0", "base-seed3", "x"]
    for seed in (0, 3):
        entry = models[f"base-seed{seed}"]
        assert entry["train"] == {"learning_rate": 0.01, "seed": seed}
        assert entry["group"] == "base" and "seeds" not in entry
    assert models["x"] == toy
    with pytest.raises(ConfigError, match="models.base sets both seeds and train.seed"):
        filled({**raw, "models": {"base": {**toy, "seeds": [1], "train": {"seed": 2}}}})
    clash = {"base": {**toy, "seeds": [1]}, "base-seed1": toy}
    with pytest.raises(ConfigError, match="named base-seed1, which is a model of its own"):
        filled({**raw, "models": clash})
