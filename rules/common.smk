# Config validation, wildcard constraints and the named input helpers every rule file uses.

import json
import os
import re

from snakemake.logging import logger as snakemake_logger
from dataclasses import asdict

from pipeline.config import (
    check as check_config,
    check_files,
    check_types,
    execution,
    filled,
    fit_configs,
    section,
    validate,
)
from pipeline.inputs import check as check_inputs
from pipeline.plan import Plan
from pipeline import provenance

check_files(workflow.configfiles)
check_types(config)
validate(config)
check_config(config)
check_inputs(config)  # the input files, before any job deletes what they made
# the run's config: the file(s) overlaid on the declared defaults (pipeline/config/declarations.py)
config.update(filled(config))

#: The plan (pipeline/plan.py): each model's steps (discovered for steps: all), where its
#: checkpoints live, its update direction.
PLAN = Plan(config)
#: The run's results folder: results/, or results/{run}/ for a config that names its run.
RESULTS = PLAN.results


def results(path):
    """A path in the run's results folder."""
    return f"{RESULTS}/{path}"


MODELS = PLAN.models
TOY_MODELS = PLAN.of_source("toy")
HUB_MODELS = PLAN.of_source("hub")
LOCAL_MODELS = PLAN.of_source("local")
EVAL = config["eval"]["name"]
FREQ = config["frequency"]["name"]
#: Toy languages beside the run's own (toy.languages), each with its corpus, frequency table,
#: evaluation set and update batches in results/data/{name}/, for the toy models that name it.
LANGUAGES = PLAN.languages


def one_of(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    model=one_of(MODELS),
    group=one_of(PLAN.seed_groups()),
    step=r"\d+",


#: The run's figures (pipeline.plots.run_figures): those of the experiments it contains, the
#: update stage's under a category naming the direction its models follow.
FIGURES = PLAN.figures()


def final_targets():
    """The targets of the default rule: the report (every figure), the fits and the summary."""
    figures = [
        results(f"figures/{name}.{ext}") for name in FIGURES for ext in ("png", "pdf")
    ]
    return [
        results("summary.zarr"),
        results("fits/bnsl.csv"),
        *figures,
        results("report.html"),
    ]


# --- data ---------------------------------------------------------------------------------


def language_of(model):
    return PLAN.language_of(model)


def eval_store(wildcards=None):
    """The run's evaluation set (the summary's token counts are of it)."""
    return PLAN.store(EVAL, "eval")


def model_eval_store(wildcards):
    return PLAN.eval_store(wildcards.model)


def frequency_store(wildcards=None):
    return PLAN.store(FREQ, "frequency")


def eval_inputs(wildcards):
    return PLAN.eval_inputs(wildcards.dataset)


def eval_params(wildcards):
    return PLAN.eval_params(wildcards.dataset)


def frequency_inputs(wildcards):
    return PLAN.frequency_inputs(wildcards.dataset)


def frequency_params(wildcards):
    return PLAN.frequency_params(wildcards.dataset)


def corpus_language(wildcards):
    return PLAN.toy_language(wildcards.corpus)


# --- checkpoints --------------------------------------------------------------------------


def toy_schedule():
    """Every step the toy training saves (not only the configured ones: those may grow)."""
    return PLAN.toy_schedule()


def toy_model_spec(wildcards):
    return PLAN.toy_shape(wildcards.model)


def toy_corpus_of(model):
    """The corpus a toy model is trained on: its language's."""
    return PLAN.corpus(language_of(model))


def toy_corpus(wildcards):
    return toy_corpus_of(wildcards.model)


def toy_vocab_size(model):
    return PLAN.toy_language(language_of(model))["vocab_size"]


def hub_revision(wildcards):
    """The hub revision of one (model, step), from the model's revision template."""
    return PLAN.revision(wildcards.model, int(wildcards.step))


def hub_subfolder(wildcards):
    return PLAN.subfolder(wildcards.model, int(wildcards.step))


def local_path(wildcards):
    """Where a local model's checkpoint lies."""
    return PLAN.source_dir(wildcards.model, int(wildcards.step))


def model_format(wildcards):
    return PLAN.format(wildcards.model)


def model_spec(key, default=None):
    """A params function reading one key of the wildcard model's config entry."""
    return lambda wildcards: config["models"][wildcards.model].get(key, default)


def checkpoint_config(wildcards):
    """The checkpoint directory of one (model, step), named by its config.json: ``ancient``
    where the extraction store was measured on exactly these weights (a re-training that
    reproduced them re-runs nothing)."""
    path = PLAN.path("checkpoint_config", model=wildcards.model, step=wildcards.step)
    same = PLAN.unchanged(wildcards.model, int(wildcards.step), "extract")
    return ancient(path) if same else path


# --- resources per model size (parameters in the model's config entry) --------------------


def model_size(wildcards):
    return PLAN.parameters(wildcards.model)


def extract_mem_mb(wildcards, attempt):
    # weights, three float32 accumulators (∇θ⁺, ∇θ⁻, A) and activations; more on a retry
    return int((3000 + 5 * 4 * model_size(wildcards) / 2**20) * attempt)


def extract_runtime(wildcards, attempt):
    return int((15 + model_size(wildcards) / 1e8 * 5) * attempt)  # minutes


def gpus(stage):
    """The GPU request of a stage's jobs (extract, update): one GPU per job of a hub model,
    unless `execution.<stage>.device` pins the stage to the CPU (toy models are small enough
    to share a device without reserving it)."""

    def request(wildcards):
        on_cpu = execution(config, stage)["device"] == "cpu"
        return (
            0 if on_cpu or config["models"][wildcards.model]["source"] == "toy" else 1
        )

    return request


# --- seeds -------------------------------------------------------------------------------

#: Groups of two or more models (the seeds of one setting), by name: each its models.
SEED_GROUPS = PLAN.seed_groups()


def group_checkpoint_configs(wildcards):
    """The checkpoint of every model of a group at one step, named by its config.json."""
    return [
        PLAN.path("checkpoint_config", model=m, step=wildcards.step)
        for m in SEED_GROUPS[wildcards.group]
    ]


def group_eval_store(wildcards):
    return PLAN.eval_store(SEED_GROUPS[wildcards.group][0])


def seeds_stores():
    """Every seeds store: each group of seeds at each of its steps."""
    return [
        results(f"seeds/{g}/step{s}.zarr")
        for g in SEED_GROUPS
        for s in PLAN.group_steps(g)
    ]


# --- extract and reduce -------------------------------------------------------------------


def extract_stores(wildcards):
    """All step stores of one model: the reduction is per model, over every step."""
    return expand(
        PLAN.template("extract"),
        model=wildcards.model,
        step=PLAN.extract_steps(wildcards.model),
    )


# --- update -------------------------------------------------------------------------------

UPDATE = PLAN.update
UPDATE_DATASETS = PLAN.update_datasets


def update_dataset(model):
    return PLAN.update_dataset(model)


def update_batches_inputs(wildcards):
    return PLAN.update_batches_inputs(wildcards.dataset)


def update_batches_data(wildcards):
    return PLAN.update_batches_data(wildcards.dataset)


def update_batches_language(wildcards):
    return PLAN.update_batches_language(wildcards.dataset)


def update_stores(model):
    return PLAN.update_stores(model)


#: The models with update stores (reduced by rule reduce_update).
UPDATE_MODELS = [m for m in MODELS if update_stores(m)]


def update_inputs(wildcards):
    """The update job's inputs; its checkpoints ``ancient`` where the store was measured on
    exactly their weights."""
    model, step = wildcards.model, int(wildcards.step)
    inputs = PLAN.update_inputs(model, step)
    if PLAN.unchanged(model, step, "update"):
        for key in ("config", "next_config"):
            if key in inputs:
                inputs[key] = ancient(inputs[key])
    return inputs


def update_params(wildcards):
    return PLAN.update_params(wildcards.model)


def update_schedule(wildcards):
    return PLAN.update_schedule(wildcards.model)


def update_next_step(wildcards):
    return PLAN.next_step(wildcards.model, int(wildcards.step))


def update_mem_mb(wildcards, attempt):
    # weights, optimizer moments, K updates and the gradients of per-token backward passes
    return int(
        (3000 + (4 + UPDATE["batches"]) * 4 * model_size(wildcards) / 2**20) * attempt
    )


# --- fit ------------------------------------------------------------------------------------

#: Models with a training-loss curve: the toy suite's (recorded while training), hub models
#: that name one (``train_loss``) and Trainer runs (their trainer_state.json).
TRAIN_CURVE_MODELS = [m for m in MODELS if PLAN.train_curve(m) is not None]


def train_curve(wildcards):
    return PLAN.train_curve(wildcards.model)[0]


def train_curve_format(wildcards):
    return PLAN.train_curve(wildcards.model)[1]


def fit_params(curve):
    """The fit settings of one curve (``eval`` or ``train``), as params: a change of the
    training curve's settings re-runs only its fits."""
    return asdict(fit_configs(config)[curve])


# the config files that made the run, as given (the embedded default: config.yaml), for the
# summary's attrs (see pipeline.provenance.CONFIG_FILES_ENV: not a param)
os.environ[provenance.CONFIG_FILES_ENV] = json.dumps(
    [str(f) for f in workflow.configfiles]
)


# what the plan noticed (checkpoints skipped as incomplete, displacements for lack of state)
PLAN.check_update_steps()
for model in MODELS:  # a checkpoint copied from another model is named before any job,
    PLAN.check_checkpoints(model)  # and a store measured on weights a toy checkpoint no
    PLAN.check_measured(
        model, "extract"
    )  # longer holds (Snakemake compares config.json
    PLAN.check_measured(model, "update")  # only)
for note in dict.fromkeys(PLAN.notes):
    snakemake_logger.warning(note)
