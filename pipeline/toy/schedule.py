"""The toy suite's model shapes, training settings and checkpoint schedule.

Light on purpose (no torch): ``rules/common.smk`` and ``pipeline.config`` read them while
Snakemake builds the DAG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.declare import setting


@dataclass(frozen=True)
class ToyModel:
    """The shape of one toy GPT-NeoX model (a ``models`` entry with ``source: toy``).

    ``head_rank`` r factors the output layer through rank r without changing the body's width:
    U = A·B with A (V × r) and B (r × d) trained in its place (Godey & Artzi's head-rank
    experiment); None keeps one V × d matrix.
    """

    hidden_size: int
    layers: int = 2
    heads: int = 1
    head_rank: int | None = None

    def n_params(self, vocab_size: int) -> int:
        """Approximate parameter count: the blocks and the (untied) input and output layers."""
        d, r = self.hidden_size, self.head_rank
        head = d * vocab_size if r is None else r * (vocab_size + d)
        return 12 * self.layers * d * d + d * vocab_size + head


#: the optimizers a toy model can train with
OPTIMIZERS = ("adamw", "sgd", "coupled_adamw", "cautious_adamw", "ademamix", "muon")


@dataclass(frozen=True)
class TrainConfig:
    """How the toy suite is trained (``toy.train``, shared by its models; a model's ``train``
    overrides any key but steps, sequence_length and save_every)."""

    steps: int = setting(2048, "optimizer steps")
    batch_size: int = setting(16, "sequences per step")
    sequence_length: int = setting(64, "tokens per sequence (the models' maximum context)")
    learning_rate: float = setting(3e-3, "peak learning rate (linear warm-up, cosine decay to 10%)")
    warmup_steps: int = setting(64, "linear warm-up steps")
    weight_decay: float = setting(
        0.01, "AdamW's decoupled weight decay (SGD: added to the gradient)"
    )
    save_every: int = setting(256, "checkpoint spacing after the powers of two (Pythia: 1000)")
    seed: int = setting(0, "initialisation and batch-order seed")
    optimizer: str = setting(
        "adamw",
        "adamw; sgd (with momentum: an ablation); an intervention: coupled_adamw, "
        "cautious_adamw, ademamix, or muon (the body's matrices; AdamW the rest)",
    )
    momentum: float = setting(0.9, "SGD's momentum")
    ademamix_alpha: float = setting(5.0, "AdEMAMix's weight α of its slow moment")
    ademamix_beta3: float = setting(
        0.999, "AdEMAMix's slow moment's β₃ (α and β₃ warm up over all the steps)"
    )
    z_loss: float = setting(0.0, "γ of PaLM's z-loss, γ·mean (log Z)², in the training loss")
    mu_loss: float = setting(0.0, "γ of μ-loss, γ·‖the output layer's mean row‖², in the loss")
    mu_centering: bool = setting(False, "subtract the output layer's mean row after every step")
    corpus_tokens: int | None = setting(
        None, "train on the stream's first this many ids only, repeated; null: the whole stream"
    )

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"toy.train.optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}"
            )

    @property
    def intervention(self) -> str:
        """What this training changes from plain AdamW: its optimizer and loss terms, or
        ``"baseline"`` (SGD counts as an intervention too)."""
        parts = [] if self.optimizer == "adamw" else [self.optimizer]
        parts += [f"z_loss={self.z_loss:g}"] if self.z_loss else []
        parts += [f"mu_loss={self.mu_loss:g}"] if self.mu_loss else []
        parts += ["mu_centering"] if self.mu_centering else []
        return " + ".join(parts) or "baseline"

    def lr_after(self, step: int) -> float:
        """The learning rate the optimizer holds after ``step`` steps (that of step + 1)."""
        return self.learning_rate * self.lr_factor(step)

    def lr_factor(self, step: int) -> float:
        """The learning rate of optimizer step ``step + 1`` relative to the peak: a linear
        warm-up, then a cosine decay to 10% of the peak, as Pythia's."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        frac = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))


def pythia_schedule(steps: int, save_every: int) -> list[int]:
    """Pythia's checkpoint schedule scaled down: step 0, powers of two below ``save_every``,
    then every ``save_every`` steps up to ``steps``."""
    powers = [2**i for i in range(int(math.log2(save_every)) + 1) if 2**i < save_every]
    even = list(range(save_every, steps + 1, save_every))
    return sorted({0, *[p for p in powers if p <= steps], *even})
