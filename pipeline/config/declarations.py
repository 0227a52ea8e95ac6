"""Every config section's keys, defaults and meanings: the one home of each setting.

A run's config is its file overlaid on these defaults (``load.section`` fills in what the file
leaves out), so a preset holds only what differs. Science settings (what a job computes) and
execution settings (how it runs: batch sizes, devices, vocabulary blocks, the scheduler, under
``execution``) are separate sections, and the figures' ``plots`` a presentation section: what
re-runs when a setting changes follows from where it is declared, with no list of exceptions.
The JSON schema (``config/schema.yaml``) checks types and ranges; the descriptions and defaults
it carries are filled in from here (``load.schema``), and the docs' table of keys is
rendered from here (``pipeline.tables``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.declare import optional, required, setting
from pipeline.toy.language import ToyLanguage
from pipeline.toy.schedule import TrainConfig

# --- science: what a job computes ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Windows:
    """Where a set of (context, target) windows comes from: the ``eval`` section (the
    evaluation set V, measured at every checkpoint) and, with ``label``, ``update.data``."""

    name: str = required("written to results/data/{name}/ (eval.zarr, update.zarr)")
    source: str = required(
        "toy (the toy language's held-out stream), text (files), dataset (a hub or local "
        "dataset) or tokens (a .npy of ids)"
    )
    sequences: int = required("number of sequences (eval: V has sequences × context_length tokens)")
    context_length: int = required("positions per sequence (each window has one id more)")
    seed: int = setting(0, "seed of the sample of windows")
    pool_tokens: int | None = setting(
        None, "text and datasets: tokenize this many ids to sample from; null: 4 × what is needed"
    )
    text_field: str = setting("text", "text source: the field of a .jsonl line that holds its text")
    paths: list[str] | None = optional("text source: the files (.txt, or .jsonl with text_field)")
    path: str | None = optional("tokens source: a .npy of ids (1-D stream, or 2-D rows of windows)")
    tokenizer: dict | None = optional(
        "text and dataset sources: {repo_id, revision} or {path}, and eos_id (the id put after "
        "each document; default: the tokenizer's eos)"
    )
    dataset: dict | None = optional(
        "dataset source: {path, name, split, text_column, data_files}, as datasets.load_dataset"
    )


@dataclass(frozen=True, kw_only=True)
class UpdateData(Windows):
    """``update.data``: the K update batches' source, as ``eval`` with sequences per batch."""

    sequences: int | None = optional("sequences per update batch (required but for toy)")
    context_length: int | None = optional("positions per sequence (required but for toy)")
    label: str | None = optional("what the batches are, recorded in every update store")


@dataclass(frozen=True, kw_only=True)
class Frequency:
    """``frequency``: the token counts that define the log2 frequency bins."""

    name: str = required("written to results/data/{name}/frequency.zarr")
    source: str = required(
        "toy (counts of the toy training stream), counts (a .npy of counts per id), megatron "
        "(.bin/.idx shards) or dataset (counted from a dataset's start)"
    )
    vocab_size: int | None = optional("the models' padded output size (every source but toy)")
    path: str | None = optional("counts: the .npy of counts per id")
    url: str | None = optional("counts: fetch the .npy from here (with sha256)")
    sha256: str | None = optional("counts: the fetched file's sha256")
    paths: list[str] | None = optional("megatron: the shards' path prefixes")
    dataset: dict | None = optional("dataset: as eval.dataset")
    tokenizer: dict | None = optional("dataset: as eval.tokenizer")
    tokens: int | None = optional("dataset: count this many tokens from its start")


@dataclass(frozen=True, kw_only=True)
class Checkpoints:
    """``checkpoints``: checkpoint integrity."""

    duplicates: str = setting(
        "warn", "revisions with identical weights: warn, skip (leave them out) or fail"
    )


@dataclass(frozen=True, kw_only=True)
class Extract:
    """``extract``: how a checkpoint is measured (rules/extract.smk, one job per model and step)."""

    steps: list[int] | None = setting(
        None, "checkpoints measured (a subset of steps; the seeds stage follows it); null: all"
    )
    dtype: str = setting("float32", "model compute dtype: float32, or bfloat16 (sums in float32)")
    parameters: bool = setting(True, "parameter-gradient decomposition and D_W (a second backward)")
    rank_tokens: int = setting(
        512, "logit-gradient rank for 1, 2, 4, … up to this many tokens; 0: off"
    )


@dataclass(frozen=True, kw_only=True)
class Update:
    """``update``: one step from a checkpoint (rules/update.smk, one job per model and step).

    ``alpha`` is the landscape grid in multiples of the step length ‖Δθ‖ (0 is θ, 1 the actual
    step).
    """

    steps: list[int] | None = setting(None, "checkpoints analysed (a subset of steps); null: all")
    direction: str = setting(
        "auto",
        "auto (the optimizer step where a state is saved, else the displacement), optimizer or "
        "displacement (θ(t′) − θ(t), t′ the next listed step)",
    )
    batches: int = setting(5, "K fixed update batches, one optimizer step on each")
    alpha: tuple[float, ...] = setting(
        tuple(float(a) for a in range(-10, 11)),
        "landscape points in multiples of the step length ‖Δθ‖ (0 and 1 required)",
    )
    landscape_tokens: int = setting(
        1000, "per-token cross-sections for a sample of this many tokens"
    )
    landscape_sequences: int | None = setting(
        None, "the mean landscape over a sample of this many evaluation sequences; null: all"
    )
    gradients: bool = setting(True, "exact per-token gradients: ‖∇θℓ_i‖, cos(Δθ, ∇θℓ_i), C_g, C_u")
    gradient_tokens: int = setting(256, "… for a sample of this many tokens (a backward each)")
    seed: int = setting(0, "seed of the token samples")
    data: dict | None = setting(
        None,
        "where the update batches come from (as eval, see update.data); null: the toy language",
    )


@dataclass(frozen=True, kw_only=True)
class Reduce:
    """``reduce``: the reductions per model over all steps, one step at a time (memory is bounded
    by one checkpoint's tokens, whatever the number of steps)."""

    saturation_tolerance: float = setting(
        0.01, "a loss improves if < (1 + tolerance) × the best earlier loss"
    )
    quantiles: tuple[float, ...] = setting(
        (0.1, 0.5, 0.9), "per-bin quantiles of every per-token measurement; []: none"
    )
    dissent_threshold: float = setting(
        -0.9, "total dissent: mean cos(∇h⁺, ∇h⁻) at or below this value"
    )


@dataclass(frozen=True, kw_only=True)
class FitConfig:
    """``fit``: the one-break BNSL fit of the loss curves (rules/fit.smk), in log space."""

    min_step: float = setting(100, "fit only steps t > min_step (the initial transient); never 0")
    a: float | None = setting(0.0, "irreducible loss: a fixed value (ZSL: 0), or null to fit it")
    smooth: int = setting(0, "odd moving-average window (points) over log loss; 0 or 1: off")
    smooth_width: float = setting(
        0.0, "half-width (decades of step) of a log-spaced moving average of log loss; 0: off"
    )
    subsample: int = setting(0, "keep at most this many log-spaced points; 0: off")

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


@dataclass(frozen=True, kw_only=True)
class FitTrain:
    """``fit.train``: the dense training-loss curve (toy models; hub: models.X.train_loss), fitted
    by default as the Zero-sum learning authors fit it (first 100 steps dropped, a log-spaced
    moving average, a log-uniform subsample); ``a`` is fit.a's unless given."""

    min_step: float = setting(100, "as fit.min_step, for the training curve")
    a: float | None = optional("as fit.a, for the training curve; default: fit.a")
    smooth: int = setting(0, "as fit.smooth, for the training curve")
    smooth_width: float = setting(0.05, "as fit.smooth_width (ZSL: ±0.05 decades, ×/÷ 1.12)")
    subsample: int = setting(200, "as fit.subsample (ZSL: 200 log-spaced points)")


@dataclass(frozen=True, kw_only=True)
class Toy:
    """``toy``: the toy suite's synthetic language, corpus and training (models with source toy);
    ``toy.language`` and ``toy.train`` are declared with the toy suite (``pipeline.toy``)."""

    train_tokens: int = setting(2097152, "length of the training stream; its counts are the bins'")
    heldout_tokens: int = setting(
        65536, "length of the held-out stream the evaluation set is cut from"
    )
    languages: dict | None = optional(
        "more languages by name, each a set of toy.language's keys that override it, for the toy "
        "models that name one (models.X.language); each has its data in results/data/{name}/"
    )


# --- execution: how a job runs (changing one re-runs nothing) ---------------------------------


@dataclass(frozen=True, kw_only=True)
class ExtractExecution:
    """``execution.extract``."""

    sequences_per_pass: int | None = setting(
        None, "evaluation sequences per forward pass; null: sized to the device"
    )
    vocab_chunk: int = setting(8192, "vocabulary rows per block of logits (bounds the memory)")
    device: str = setting("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N")


@dataclass(frozen=True, kw_only=True)
class UpdateExecution:
    """``execution.update``."""

    sequences_per_pass: int | None = setting(
        None, "sequences per forward (and backward) pass; null: 16k tokens a pass"
    )
    device: str = setting("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N")


@dataclass(frozen=True, kw_only=True)
class ReduceExecution:
    """``execution.reduce``."""

    scheduler: str | None = setting(
        None, "a dask.distributed scheduler address (tcp://host:8786); null: local threads"
    )


# --- presentation ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Plots:
    """``plots``: the figures (rules/plots.smk); changing these re-draws them and nothing else."""

    dpi: int = setting(150, "resolution of the PNG figures")
    figures: list[str] | None = setting(
        None, "the figures drawn (names from docs/figures); null: every figure of the run's models"
    )


# --- the stages' settings: a science section and its execution section together ---------------


@dataclass(frozen=True, kw_only=True)
class ExtractConfig(ExtractExecution, Extract):
    """What an extraction job reads: ``extract`` and ``execution.extract``."""


@dataclass(frozen=True, kw_only=True)
class UpdateConfig(UpdateExecution, Update):
    """What an update job reads: ``update`` and ``execution.update``."""


@dataclass(frozen=True, kw_only=True)
class ReduceConfig(ReduceExecution, Reduce, Checkpoints):
    """What a reduction reads: ``reduce``, ``checkpoints`` and ``execution.reduce``."""


#: Every declared section by its path in the config.
SECTIONS: dict[tuple[str, ...], type] = {
    ("eval",): Windows,
    ("frequency",): Frequency,
    ("checkpoints",): Checkpoints,
    ("extract",): Extract,
    ("update",): Update,
    ("update", "data"): UpdateData,
    ("reduce",): Reduce,
    ("fit",): FitConfig,
    ("fit", "train"): FitTrain,
    ("toy",): Toy,
    ("toy", "language"): ToyLanguage,
    ("toy", "train"): TrainConfig,
    ("execution", "extract"): ExtractExecution,
    ("execution", "update"): UpdateExecution,
    ("execution", "reduce"): ReduceExecution,
    ("plots",): Plots,
}
#: Top-level sections that change no stored number: left out of a run's science digest.
NOT_SCIENCE = ("execution", "plots")

#: The keys of a model entry (``models.{name}``): the sources each applies to and its meaning.
#: Entries are not sections (their keys depend on ``source``), so they have no defaults here;
#: config/schema.yaml checks them, and a test keeps this table and the schema in step.
MODEL_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "source": (("toy", "hub", "local"), "toy (trained by this workflow), hub or local"),
    "hidden_size": (("toy",), "width d of the residual stream; the output layer has rank ≤ d"),
    "layers": (("toy",), "transformer blocks"),
    "heads": (("toy",), "attention heads (hidden_size must be divisible by heads)"),
    "head_rank": (
        ("toy",),
        "train the output layer as two factors U = A·B of rank r ≤ d (the checkpoints hold "
        "the product; the update stage follows displacements)",
    ),
    "language": (("toy",), "train and measure it on the language of toy.languages by this name"),
    "seeds": (
        ("toy",),
        "one model per seed (initialisation and batch order), named {name}-seed{s}, of group "
        "{name}: the comparisons' mean ± spread",
    ),
    "group": (
        ("toy", "hub", "local"),
        "a label that groups models (seeds of one setting) in the summary's `group`",
    ),
    "train": (
        ("toy",),
        "its own values of toy.train's keys (all but steps, sequence_length and save_every): "
        "the learning rate, the seed, the optimizer and the loss terms of an intervention",
    ),
    "repo_id": (("hub",), "the hub repository, org/name"),
    "revision": (
        ("hub",),
        'the branch: "step{step}" for one branch per checkpoint (Pythia), or main (default)',
    ),
    "subfolder": (
        ("hub",),
        'one folder per checkpoint, e.g. "checkpoint-{step}" (a Trainer run pushed with '
        "hub_strategy all_checkpoints)",
    ),
    "path": (("local",), "the checkpoint directories, a template: runs/my-model/checkpoint-{step}"),
    "format": (
        ("hub", "local"),
        "transformers, trainer or olmo (OLMo's native files); detected from the files where "
        "unambiguous",
    ),
    "allow_pickle": (
        ("hub", "local"),
        "read pickles (.bin weights, a Trainer's optimizer.pt, OLMo's .pt) with weights_only; "
        "default false",
    ),
    "parameters": (("hub", "local"), "the model's size: scales its jobs' memory and time on SLURM"),
    "train_loss": (("hub", "local"), "a (step, loss) table, tab- or comma-separated with a header"),
    "max_grad_norm": (
        ("hub", "local"),
        "training's clipping norm, only where training_args.bin cannot be read",
    ),
    "steps": (("toy", "hub", "local"), "its own steps (a list, or all), instead of the run's"),
}
