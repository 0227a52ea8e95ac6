"""The checkpoints stage: the toy suite's training, and loading any checkpoint for extraction.

The toy suite trains small GPT-NeoX models (Pythia's architecture) on the toy corpus with AdamW
from fixed seeds and saves each checkpoint with ``save_pretrained`` on a Pythia-like schedule
(step 0, powers of two, then evenly spaced). Training is deterministic: one intra-op thread,
seeded initialisation and a seeded batch order, so two runs write identical weights.

From there on a toy checkpoint is treated like a downloaded one: ``load_checkpoint`` reads a
Hugging Face model directory (safetensors only), checks the weights, and reports their sha256.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.logs import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyModel:
    """The shape of one toy GPT-NeoX model."""

    hidden_size: int
    layers: int = 2
    heads: int = 1


@dataclass(frozen=True)
class TrainConfig:
    """How the toy suite is trained (shared by all its models)."""

    steps: int = 2048
    batch_size: int = 16
    sequence_length: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 64
    weight_decay: float = 0.01
    save_every: int = 256
    seed: int = 0


def pythia_schedule(steps: int, save_every: int) -> list[int]:
    """Pythia's checkpoint schedule scaled down: step 0, powers of two below ``save_every``,
    then every ``save_every`` steps up to ``steps``."""
    powers = [2**i for i in range(int(math.log2(save_every)) + 1) if 2**i < save_every]
    even = list(range(save_every, steps + 1, save_every))
    return sorted({0, *[p for p in powers if p <= steps], *even})


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


def train_toy(
    model: ToyModel,
    train: TrainConfig,
    stream: np.ndarray,
    vocab_size: int,
    out_dir: str | os.PathLike,
) -> list[int]:
    """Train one toy model on ``stream`` and save ``out_dir/step{N}/`` on the schedule.

    Returns the saved steps. The learning rate warms up linearly, then follows a cosine decay to
    10% of its peak, as Pythia's does.
    """
    torch.set_num_threads(1)  # determinism: results must not depend on the machine's cores
    torch.use_deterministic_algorithms(True)
    out_dir = Path(out_dir)
    schedule = pythia_schedule(train.steps, train.save_every)
    net = build_toy_model(model, vocab_size, train.sequence_length, train.seed)
    n_params = sum(p.numel() for p in net.parameters())
    log.info("model d=%d, %d layers, %d parameters", model.hidden_size, model.layers, n_params)
    opt = torch.optim.AdamW(
        net.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay
    )

    def lr_at(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        frac = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = np.random.default_rng(train.seed)
    window = train.sequence_length + 1
    if stream.size < window:
        raise ValueError(f"the training stream has {stream.size} ids, fewer than one sequence")
    progress = Progress(log, train.steps, "steps")
    _save(net, out_dir / "step0")
    net.train()
    for step in range(1, train.steps + 1):
        offsets = rng.integers(0, stream.size - window + 1, size=train.batch_size)
        batch = torch.from_numpy(
            np.stack([stream[o : o + window] for o in offsets]).astype(np.int64)
        )
        loss = net(input_ids=batch, labels=batch).loss  # (the model shifts the labels itself)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step in schedule:
            _save(net, out_dir / f"step{step}")
        progress.update(step, f"train loss {loss.item():.3f}")
    return schedule


def _save(net, path: Path) -> None:
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def link_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Materialise ``dst`` as a Hugging Face model directory holding hard links to ``src``'s
    files (a copy where hard links are impossible), atomically."""
    src, dst = Path(src), Path(dst)
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src} is not a Hugging Face model directory (no config.json)")
    tmp = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def weights_sha256(path: str | os.PathLike) -> str:
    """sha256 over a checkpoint's weight files (sorted by name), streamed."""
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {path}")
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """Load a causal LM from a Hugging Face model directory, safetensors only, no remote code.

    Raises a ``ValueError`` that names the checkpoint if its weights hold NaN or infinity.
    """
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
    except Exception as err:
        raise ValueError(
            f"cannot load checkpoint {path}: {err}. Delete it and re-run to fetch or train it again."
        ) from err
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"checkpoint {path} has NaN or infinite weights in {name!r}")
    model.eval()
    return model
