"""Training the toy suite: small GPT-NeoX models (Pythia's architecture) on the toy corpus.

AdamW (or SGD with momentum, or an intervention's optimizer and loss terms:
``pipeline.maths.interventions``) from fixed seeds, Pythia's learning-rate shape (``TrainConfig.lr_factor``), random
training windows from the corpus's training stream. Training is deterministic: one intra-op
thread, seeded initialisation and a seeded batch order, so two runs give identical weights.
``toy_training`` yields the model and its optimizer at every step of the checkpoint schedule;
saving is the checkpoints stage's business (``pipeline.checkpoints.train_toy``).
``training_batches`` is the batch order, so that a test can replay the batch of any step.

A model with a head rank r trains its output layer as two factors (``FactoredHead``);
``plain_model`` gives the same function as an ordinary ``GPTNeoXForCausalLM`` whose output
layer is the product U = A·B, which is what the checkpoints hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from pipeline.logs import Progress, quiet_transformers
from pipeline.maths.interventions import (
    AdEMAMix,
    CautiousAdamW,
    CoupledAdamW,
    LossTerms,
    center_rows,
    embedding_parameters,
    mu_loss,
    muon_groups,
    z_loss,
)
from pipeline.toy.schedule import ToyModel, TrainConfig, pythia_schedule

log = logging.getLogger(__name__)


class FactoredHead(torch.nn.Module):
    """An output layer of rank ≤ r: logits = h Bᵀ Aᵀ, with A (V × r) and B (r × d).

    Initialised so that U = A·B has the entries' scale of an ordinary head (standard deviation
    ``std``): A and B are normal with standard deviation (std / √r)^½ each.
    """

    def __init__(self, vocab_size: int, hidden_size: int, rank: int, std: float):
        super().__init__()
        scale = (std / rank**0.5) ** 0.5
        self.A = torch.nn.Parameter(torch.randn(vocab_size, rank) * scale)
        self.B = torch.nn.Parameter(torch.randn(rank, hidden_size) * scale)

    @property
    def weight(self) -> torch.Tensor:
        """The effective output layer U = A·B (V × d)."""
        return self.A @ self.B

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h @ self.B.T) @ self.A.T


def build_toy_model(model: ToyModel, vocab_size: int, context_length: int, seed: int):
    """A randomly initialised ``GPTNeoXForCausalLM`` from a fixed seed, its output layer
    factored (``FactoredHead``) if the model has a head rank."""
    from transformers import GPTNeoXForCausalLM

    config = toy_config(model, vocab_size, context_length)
    torch.manual_seed(seed)
    net = GPTNeoXForCausalLM(config)
    if model.head_rank is not None:
        net.set_output_embeddings(
            FactoredHead(vocab_size, model.hidden_size, model.head_rank, config.initializer_range)
        )
    return net


def toy_config(model: ToyModel, vocab_size: int, context_length: int):
    """The ``GPTNeoXConfig`` of a toy model; a head rank is recorded as ``head_rank``."""
    from transformers import GPTNeoXConfig

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
    if model.head_rank is not None:
        config.head_rank = model.head_rank
    return config


def plain_model(net):
    """``net`` as an ordinary ``GPTNeoXForCausalLM``: itself if its output layer is one matrix,
    else a copy whose output layer is the product U = A·B of its factors (same function)."""
    head = net.get_output_embeddings()
    if not isinstance(head, FactoredHead):
        return net
    from transformers import GPTNeoXForCausalLM

    with torch.random.fork_rng():  # initialising the copy must not move training's random state
        plain = GPTNeoXForCausalLM(net.config)
    name = next(n for n, m in net.named_children() if m is head)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith(f"{name}.")}
    state[f"{name}.weight"] = head.weight.detach()
    plain.load_state_dict(state)
    return plain


def training_batches(train: TrainConfig, stream: np.ndarray) -> Iterator[torch.Tensor]:
    """The training batches of steps 1, 2, …: ``batch_size`` windows of ``sequence_length + 1``
    ids at seeded random offsets of ``stream`` (the model shifts the labels itself)."""
    window = train.sequence_length + 1
    if train.corpus_tokens is not None:
        stream = stream[: train.corpus_tokens]
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
) -> Iterator[tuple[int, torch.nn.Module, tuple[torch.optim.Optimizer, ...]]]:
    """Train one toy model on ``stream``, yielding ``(step, model, optimizers)`` at every step of
    the checkpoint schedule (step 0 first; ``build_optimizers``). The model is in training mode;
    none may be changed. After step t the optimizers' learning rate is the one the schedule
    gives step t + 1.
    ``losses``, if given, receives ``(step, training loss of that step's batch)`` for every step.
    """
    quiet_transformers()
    torch.set_num_threads(1)  # determinism: results must not depend on the machine's cores
    torch.use_deterministic_algorithms(True)
    # … without filling every new tensor with NaN first (a check for kernels that read memory
    # they did not write: 12% of a toy step, measured; the weights come out bitwise the same)
    torch.utils.deterministic.fill_uninitialized_memory = False
    schedule = pythia_schedule(train.steps, train.save_every)
    net = build_toy_model(model, vocab_size, train.sequence_length, train.seed)
    n_params = sum(p.numel() for p in net.parameters())
    log.info("model d=%d, %d layers, %d parameters", model.hidden_size, model.layers, n_params)
    optimizers = build_optimizers(net, train)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, train.lr_factor) for o in optimizers]
    batches = training_batches(train, stream)
    progress = Progress(log, train.steps, "steps")
    net.train()
    yield 0, net, optimizers
    for step, batch in zip(range(1, train.steps + 1), batches):
        out = net(input_ids=batch, labels=batch)  # (the model shifts the labels itself)
        net.zero_grad(set_to_none=True)
        training_loss(net, out, train).backward()
        for opt, sched in zip(optimizers, schedulers):
            opt.step()
            sched.step()
        if train.mu_centering:
            center_rows(output_rows(net))
        value = out.loss.item()  # the cross-entropy, without the loss terms
        if losses is not None:
            losses.append((step, value))
        if step in schedule:
            yield step, net, optimizers
        progress.update(step, f"train loss {value:.3f}")


def loss_terms(train: TrainConfig) -> LossTerms:
    """The loss terms and projection of a toy model's training."""
    return LossTerms(train.z_loss, train.mu_loss, train.mu_centering)


def training_loss(net, out, train: TrainConfig) -> torch.Tensor:
    """The loss a toy model trains on: the cross-entropy ``out.loss`` of its batch, plus the
    loss terms of an intervention (z-loss on the logits of the predicting positions, μ-loss on
    the output layer)."""
    loss = out.loss
    if train.z_loss:
        loss = loss + train.z_loss * z_loss(out.logits[:, :-1])
    if train.mu_loss:
        loss = loss + train.mu_loss * mu_loss(net.get_output_embeddings().weight)
    return loss


def output_rows(net) -> torch.nn.Parameter:
    """The parameter whose rows are the output layer's (of a factored head, its factor A:
    centring A's rows centres U = A·B's)."""
    head = net.get_output_embeddings()
    return head.A if isinstance(head, FactoredHead) else head.weight


def build_optimizers(net, train: TrainConfig) -> tuple[torch.optim.Optimizer, ...]:
    """The optimizers of a toy model: one over every parameter, or for Muon two (Muon over the
    body's matrices at AdamW's RMS-matched rate, AdamW over the rest); weight decay on all."""
    params = dict(net.named_parameters())
    lr, wd = train.learning_rate, train.weight_decay
    if train.optimizer == "sgd":
        return (torch.optim.SGD(params.values(), lr=lr, momentum=train.momentum, weight_decay=wd),)
    if train.optimizer == "muon":
        body, rest = muon_groups(net)
        return (
            torch.optim.Muon(
                [params[n] for n in body], lr=lr, weight_decay=wd, adjust_lr_fn="match_rms_adamw"
            ),
            torch.optim.AdamW([params[n] for n in rest], lr=lr, weight_decay=wd),
        )
    if train.optimizer == "coupled_adamw":
        rows = set(embedding_parameters(net))
        groups = [
            {"params": [p for n, p in params.items() if n not in rows], "coupled": False},
            {"params": [p for n, p in params.items() if n in rows], "coupled": True},
        ]
        return (CoupledAdamW(groups, lr=lr, weight_decay=wd),)
    if train.optimizer == "cautious_adamw":
        return (CautiousAdamW(params.values(), lr=lr, weight_decay=wd),)
    if train.optimizer == "ademamix":
        betas = (0.9, 0.999, train.ademamix_beta3)
        return (
            AdEMAMix(
                params.values(),
                lr=lr,
                betas=betas,
                alpha=train.ademamix_alpha,
                warmup=train.steps,
                weight_decay=wd,
            ),
        )
    return (torch.optim.AdamW(params.values(), lr=lr, weight_decay=wd),)
