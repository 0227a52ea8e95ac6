"""Training the toy suite: small GPT-NeoX models (Pythia's architecture) on the toy corpus.

AdamW from fixed seeds, Pythia's learning-rate shape (``TrainConfig.lr_factor``), random
training windows from the corpus's training stream. Training is deterministic: one intra-op
thread, seeded initialisation and a seeded batch order, so two runs give identical weights.
``toy_training`` yields the model and its optimizer at every step of the checkpoint schedule;
saving is the checkpoints stage's business (``pipeline.checkpoints.train_toy``).
``training_batches`` is the batch order, so that a test can replay the batch of any step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from pipeline.logs import Progress, quiet_transformers
from pipeline.toy.schedule import ToyModel, TrainConfig, pythia_schedule

log = logging.getLogger(__name__)


def build_toy_model(model: ToyModel, vocab_size: int, context_length: int, seed: int):
    """A randomly initialised ``GPTNeoXForCausalLM`` from a fixed seed."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=model.hidden_size,
        num_hidden_layers=model.layers,
        num_attention_heads=model.heads,
        intermediate_size=4 * model.hidden_size,
        max_position_embeddings=context_length,
        rotary_pct=0.25,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


def training_batches(train: TrainConfig, stream: np.ndarray) -> Iterator[torch.Tensor]:
    """The training batches of steps 1, 2, …: ``batch_size`` windows of ``sequence_length + 1``
    ids at seeded random offsets of ``stream`` (the model shifts the labels itself)."""
    window = train.sequence_length + 1
    if stream.size < window:
        raise ValueError(f"the training stream has {stream.size} ids, fewer than one sequence")

    def batches():
        rng = np.random.default_rng(train.seed)
        while True:
            offsets = rng.integers(0, stream.size - window + 1, size=train.batch_size)
            windows = np.stack([stream[o : o + window] for o in offsets])
            yield torch.from_numpy(windows.astype(np.int64))

    return batches()


def toy_training(
    model: ToyModel,
    train: TrainConfig,
    stream: np.ndarray,
    vocab_size: int,
    losses: list[tuple[int, float]] | None = None,
) -> Iterator[tuple[int, torch.nn.Module, torch.optim.AdamW]]:
    """Train one toy model on ``stream``, yielding ``(step, model, optimizer)`` at every step of
    the checkpoint schedule (step 0 first). The model is in training mode; neither may be changed.
    After step t the optimizer's learning rate is the one the schedule gives step t + 1.
    ``losses``, if given, receives ``(step, training loss of that step's batch)`` for every step.
    """
    quiet_transformers()
    torch.set_num_threads(1)  # determinism: results must not depend on the machine's cores
    torch.use_deterministic_algorithms(True)
    schedule = pythia_schedule(train.steps, train.save_every)
    net = build_toy_model(model, vocab_size, train.sequence_length, train.seed)
    n_params = sum(p.numel() for p in net.parameters())
    log.info("model d=%d, %d layers, %d parameters", model.hidden_size, model.layers, n_params)
    opt = torch.optim.AdamW(
        net.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, train.lr_factor)
    batches = training_batches(train, stream)
    progress = Progress(log, train.steps, "steps")
    net.train()
    yield 0, net, opt
    for step, batch in zip(range(1, train.steps + 1), batches):
        loss = net(input_ids=batch, labels=batch).loss  # (the model shifts the labels itself)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
        if losses is not None:
            losses.append((step, value))
        if step in schedule:
            yield step, net, opt
        progress.update(step, f"train loss {value:.3f}")
