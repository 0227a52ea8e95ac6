# Config validation, wildcard constraints and the named input helpers every rule file uses.

import re

from snakemake.utils import validate

from pipeline.config import (
    check as check_config,
    check_files,
    check_types,
    digest,
    fit_configs,
    has_optimizer_states,
    section,
)
from dataclasses import asdict
from pipeline.plots import FIGURES
from pipeline.toy.schedule import ToyModel, TrainConfig, pythia_schedule

check_files(workflow.configfiles)
check_types(config)
validate(config, schema="../config/schema.yaml")
check_config(config)

MODELS = list(config["models"])
TOY_MODELS = [m for m in MODELS if config["models"][m]["source"] == "toy"]
HUB_MODELS = [m for m in MODELS if config["models"][m]["source"] == "hub"]
STEPS = sorted(config["steps"])
EVAL = config["eval"]["name"]
FREQ = config["frequency"]["name"]
USES_TOY = bool(TOY_MODELS) or "toy" in (
    config["eval"]["source"],
    config["frequency"]["source"],
)


def one_of(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    model=one_of(MODELS),
    step=r"\d+",


def final_targets():
    """The targets of the default rule: every figure, the fits and the summary store."""
    figures = [
        f"results/figures/{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")
    ]
    return ["results/summary.zarr", "results/fits/bnsl.csv", *figures]


# --- data ---------------------------------------------------------------------------------


def eval_store(wildcards=None):
    return f"results/data/{EVAL}/eval.zarr"


def frequency_store(wildcards=None):
    return f"results/data/{FREQ}/frequency.zarr"


def toy_corpus_input(source):
    return {"corpus": "results/data/toy/corpus.zarr"} if source == "toy" else {}


def eval_inputs(wildcards):
    """The evaluation set's inputs: the frequency table, and the files its source reads."""
    spec = config["eval"]
    inputs = {"frequency": frequency_store(), **toy_corpus_input(spec["source"])}
    if spec["source"] == "text":
        inputs["texts"] = spec["paths"]
    elif spec["source"] == "tokens":
        inputs["tokens"] = spec["path"]
    return inputs


def frequency_inputs(wildcards):
    spec = config["frequency"]
    inputs = toy_corpus_input(spec["source"])
    if spec["source"] == "counts":
        inputs["counts"] = spec["path"]
    elif spec["source"] == "megatron":
        inputs["shards"] = [
            f"{p}.{ext}" for p in spec["paths"] for ext in ("bin", "idx")
        ]
    return inputs


def frequency_params():
    """The frequency section, with the toy language's vocabulary where the source is toy."""
    spec = dict(config["frequency"])
    if spec["source"] == "toy":
        spec.setdefault("vocab_size", config["toy"]["language"]["vocab_size"])
    return dict(sorted(spec.items()))


# --- checkpoints --------------------------------------------------------------------------


def toy_schedule():
    """Every step the toy training saves (not only the configured ones: those may grow)."""
    train = TrainConfig(**config["toy"]["train"])
    return pythia_schedule(train.steps, train.save_every)


def toy_model_spec(wildcards):
    spec = config["models"][wildcards.model]
    return {k: spec[k] for k in sorted(spec) if k != "source"}


def hub_revision(wildcards):
    """The hub revision of one (model, step), from the model's revision template."""
    spec = config["models"][wildcards.model]
    return spec.get("revision", "step{step}").format(step=int(wildcards.step))


def model_spec(key, default=None):
    """A params function reading one key of the wildcard model's config entry."""
    return lambda wildcards: config["models"][wildcards.model].get(key, default)


def checkpoint_config(wildcards):
    """The Hugging Face model directory of one (model, step), named by its config.json."""
    return f"results/checkpoints/{wildcards.model}/step{wildcards.step}/config.json"


# --- resources per model size (parameters in the model's config entry) --------------------


def model_size(wildcards):
    spec = config["models"][wildcards.model]
    if spec["source"] == "toy":
        shape = ToyModel(spec["hidden_size"], spec["layers"], spec["heads"])
        return shape.n_params(config["toy"]["language"]["vocab_size"])
    return spec.get("parameters", 1e9)


def extract_mem_mb(wildcards, attempt):
    # weights, three float32 accumulators (∇θ⁺, ∇θ⁻, A) and activations; more on a retry
    return int((3000 + 5 * 4 * model_size(wildcards) / 2**20) * attempt)


def extract_runtime(wildcards, attempt):
    return int((15 + model_size(wildcards) / 1e8 * 5) * attempt)  # minutes


def extract_gpus(wildcards):
    """One GPU per extraction job of a hub model, unless the config pins extraction to the CPU
    (toy models are small enough to share a device without reserving it)."""
    on_cpu = config["extract"].get("device", "auto") == "cpu"
    return 0 if on_cpu or config["models"][wildcards.model]["source"] == "toy" else 1


# --- extract and reduce -------------------------------------------------------------------


def extract_stores(wildcards):
    """All step stores of one model: the reduction is per model, over every step."""
    return expand(
        "results/extract/{model}/step{step}.zarr", model=wildcards.model, step=STEPS
    )


# --- update -------------------------------------------------------------------------------

UPDATE = section(config, "update")
#: Where models with optimizer states take their steps: the toy language's batches by default.
UPDATE_DATA = UPDATE["data"] or {"name": "toy", "source": "toy"}
UPDATE_BATCHES = (
    f"results/data/{UPDATE_DATA['name']}/update.zarr"
    if any(has_optimizer_states(config["models"][m]) for m in MODELS)
    and UPDATE["direction"] != "displacement"
    else None
)


def update_direction(model):
    """``optimizer`` where the model's checkpoints carry optimizer states (and the config does
    not ask for displacements), else ``displacement``."""
    has_state = has_optimizer_states(config["models"][model])
    return (
        "optimizer"
        if has_state and UPDATE["direction"] != "displacement"
        else "displacement"
    )


def update_batches_inputs(wildcards):
    """The update batches' inputs: the frequency table (for bins), and the files they read."""
    inputs = {"frequency": frequency_store()}
    if UPDATE_DATA["source"] == "text":
        inputs["texts"] = UPDATE_DATA["paths"]
    elif UPDATE_DATA["source"] == "tokens":
        inputs["tokens"] = UPDATE_DATA["path"]
    return inputs


def next_step(model, step):
    """The next listed step after ``step`` (the partner of a displacement), or None."""
    if update_direction(model) == "optimizer":
        return None
    return next((s for s in STEPS if s > step), None)


def update_steps(model):
    """The steps of ``model`` that get an update job."""
    steps = sorted(UPDATE["steps"]) if UPDATE["steps"] is not None else STEPS
    return [
        s
        for s in steps
        if update_direction(model) == "optimizer" or next_step(model, s)
    ]


def update_stores(model):
    return [f"results/update/{model}/step{s}.zarr" for s in update_steps(model)]


def update_inputs(wildcards):
    inputs = {"config": checkpoint_config(wildcards), "eval": eval_store()}
    step = int(wildcards.step)
    if update_direction(wildcards.model) == "optimizer":
        inputs["batches"] = UPDATE_BATCHES
    else:
        later = next_step(wildcards.model, step)
        if later is None:
            raise ValueError(
                f"{wildcards.model} step {step} is the last listed step: there is no next "
                "checkpoint to take the displacement to"
            )
        inputs["next_config"] = (
            f"results/checkpoints/{wildcards.model}/step{later}/config.json"
        )
    return inputs


def update_params(wildcards):
    """The update section without the list of steps (a per-checkpoint job must not depend on
    it: adding a step re-runs only the jobs it touches)."""
    return {k: v for k, v in UPDATE.items() if k != "steps"}


def update_mem_mb(wildcards, attempt):
    # weights, optimizer moments, K updates and the gradients of per-token backward passes
    return int(
        (3000 + (4 + UPDATE["batches"]) * 4 * model_size(wildcards) / 2**20) * attempt
    )


# --- fit ------------------------------------------------------------------------------------

#: Models with a training-loss curve: the toy suite's (recorded while training) and hub models
#: that name one (``train_loss``).
TRAIN_CURVE_MODELS = [
    m
    for m in MODELS
    if config["models"][m]["source"] == "toy" or "train_loss" in config["models"][m]
]


def train_curve(wildcards):
    spec = config["models"][wildcards.model]
    if spec["source"] == "toy":
        return f"results/checkpoints/{wildcards.model}/train_loss.tsv"
    return spec["train_loss"]


def fit_params(curve):
    """The fit settings of one curve (``eval`` or ``train``), as params: a change of the
    training curve's settings re-runs only its fits."""
    return asdict(fit_configs(section(config, "fit"))[curve])


def summary_provenance():
    """What the summary records of the run: the config's digest and the fit settings."""
    return {"config_sha256": digest(config), "fit": section(config, "fit")}
