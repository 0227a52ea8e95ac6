# Config validation, wildcard constraints and the named input helpers every rule file uses.

from snakemake.utils import validate

from pipeline.config import check as check_config
from pipeline.checkpoints import TrainConfig, pythia_schedule

validate(config, schema="../config/schema.yaml")
check_config(config)

MODELS = list(config["models"])
STEPS = sorted(config["steps"])
EVAL = config["eval"]["name"]
FREQ = config["frequency"]["name"]


wildcard_constraints:
    model="|".join(MODELS),
    step=r"\d+",


def final_targets():
    """The targets of the default rule: the figures, the fits and the summary store."""
    return [
        "results/summary.zarr",
        "results/fits/bnsl.csv",
        "results/figures/loss_by_bin.png",
    ]


# --- data ---------------------------------------------------------------------------------


def eval_store(wildcards=None):
    return f"results/data/{EVAL}/eval.zarr"


def frequency_store(wildcards=None):
    return f"results/data/{FREQ}/frequency.zarr"


# --- checkpoints --------------------------------------------------------------------------


def toy_schedule():
    """Every step the toy training saves (not only the configured ones: those may grow)."""
    train = TrainConfig(**config["toy"]["train"])
    return pythia_schedule(train.steps, train.save_every)


def toy_model_spec(wildcards):
    spec = dict(config["models"][wildcards.model])
    spec.pop("source")
    return spec


def checkpoint_files(wildcards):
    """The Hugging Face model directory of one (model, step), as its two files."""
    root = f"results/checkpoints/{wildcards.model}/step{wildcards.step}"
    return {"config": f"{root}/config.json", "weights": f"{root}/model.safetensors"}


# --- extract and reduce -------------------------------------------------------------------


def extract_stores(wildcards):
    """All step stores of one model: the reduction is per model, over every step."""
    return expand(
        "results/extract/{model}/step{step}.zarr", model=wildcards.model, step=STEPS
    )


def reduce_stores(wildcards=None):
    return {m: f"results/reduce/{m}.zarr" for m in MODELS}
