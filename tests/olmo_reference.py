"""OLMo's own implementation (``ai2-olmo``) as the reference of ``pipeline.olmo``.

Run in a subprocess with ``.olmo-reference/`` on the path (``tests/olmo-reference.txt``; the
suite itself never imports ``olmo``)::

    python tests/olmo_reference.py OUT --save 1,2,4 [--tying 0] [--d-model 32] …

Builds a tiny OLMo model with the Zero-sum learning suite's architecture (RMSNorm without
affine, no biases, SwiGLU, rotary embeddings), trains it with OLMo's own optimizer and scheduler
builders, stepping as OLMo's ``Trainer.train_step`` does (the global step counted first; the
summed loss over B·T input ids; clipping with the group's ``max_grad_norm``; then the
scheduler's learning rate), and saves every step of ``--save`` with OLMo's ``FullCheckpointer``
under a single-process FSDP, as the suite was saved: ``OUT/step{N}/`` with config.yaml,
model.pt, optim.pt and train.pt. ``OUT/reference.pt`` holds fixed inputs and OLMo's logits on
them at every saved step, and, from the last saved step, the next batch (``--next-batch``, or
a random one) and OLMo's own update of every parameter on it.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from olmo.checkpoint import FullCheckpointer
from olmo.config import (
    ActivationType,
    BlockType,
    DistributedStrategy,
    FSDPConfig,
    FSDPPrecision,
    LayerNormType,
    ModelConfig,
    OptimizerConfig,
    OptimizerType,
    SchedulerConfig,
    TrainConfig,
)
from olmo.model import OLMo
from olmo.optim import build_optimizer, build_scheduler
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--save", default="1,2,4", help="steps to save, comma-separated")
    ap.add_argument("--tying", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--mlp-ratio", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=120)
    ap.add_argument("--embedding-size", type=int, default=128)
    ap.add_argument("--rope-theta", type=int, default=10000)
    ap.add_argument("--scheduler", default="cosine_with_warmup")
    ap.add_argument("--max-steps", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0, help="0: no clipping")
    ap.add_argument("--next-batch", type=Path, help=".npy ids (sequences, window) of the next step")
    args = ap.parse_args()
    save = sorted(int(s) for s in args.save.split(","))

    cfg = TrainConfig(
        run_name="olmo-reference",
        seed=args.seed,
        model=ModelConfig(
            d_model=args.d_model,
            n_heads=args.heads,
            n_layers=args.layers,
            mlp_ratio=args.mlp_ratio,
            activation_type=ActivationType.swiglu,
            block_type=BlockType.sequential,
            layer_norm_type=LayerNormType.rms,
            layer_norm_with_affine=False,
            bias_for_layer_norm=False,
            attention_layer_norm=False,
            include_bias=False,
            rope=True,
            rope_theta=args.rope_theta,
            alibi=False,
            weight_tying=bool(args.tying),
            vocab_size=args.vocab,
            embedding_size=args.embedding_size,
            max_sequence_length=64,
            init_device="cpu",
            flash_attention=False,
            attention_dropout=0.0,
            residual_dropout=0.0,
            embedding_dropout=0.0,
            eos_token_id=0,
            pad_token_id=1,
            init_fn="normal",
            init_std=0.3,  # larger than OLMo's default, so that the logits differ visibly
        ),
        optimizer=OptimizerConfig(
            name=OptimizerType.adamw,
            learning_rate=3e-3,
            betas=(0.9, 0.95),
            eps=1e-8,
            weight_decay=0.1,
            decay_norm_and_bias=False,
            decay_embeddings=False,
        ),
        scheduler=SchedulerConfig(name=args.scheduler, t_warmup=3, alpha_f=0.1),
        max_duration=args.max_steps,
        global_train_batch_size=args.batch,
        device_train_microbatch_size=args.batch,
        max_grad_norm=args.max_grad_norm or None,
        precision="fp32",
        save_folder=str(args.out / "olmo-run"),
        save_overwrite=True,
        distributed_strategy=DistributedStrategy.fsdp,
        fsdp=FSDPConfig(precision=FSDPPrecision.pure, use_orig_params=True),
    )
    torch.manual_seed(args.seed)
    model = OLMo(cfg.model)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(20000 + os.getpid() % 20000))
    dist.init_process_group(backend="gloo", rank=0, world_size=1)
    fsdp = FSDP(
        model,
        sharding_strategy=cfg.fsdp.sharding_strategy,
        mixed_precision=cfg.fsdp_precision,
        use_orig_params=True,
        device_id=torch.device("cpu"),
    )
    optim, scheduler = build_optimizer(cfg, fsdp), build_scheduler(cfg)
    checkpointer = FullCheckpointer(cfg)
    data = torch.Generator().manual_seed(args.seed + 1)

    def batch() -> torch.Tensor:
        return torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=data)

    def train_step(global_step: int, ids: torch.Tensor) -> None:
        optim.zero_grad(set_to_none=True)
        logits = fsdp(input_ids=ids).logits
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        (ce / ids.numel()).backward()
        optim.clip_grads_and_collect_metrics(global_step, collect_param_metrics=False)
        for group in optim.param_groups:
            group["lr"] = scheduler.get_lr(cfg.optimizer.learning_rate, global_step, args.max_steps)
            group["max_grad_norm"] = scheduler.get_max_grad_norm(
                cfg.max_grad_norm, global_step, args.max_steps
            )
        optim.step()

    probe = torch.randint(0, args.vocab, (2, args.seq_len), generator=data)
    logits = {}
    for step in range(1, save[-1] + 1):
        fsdp.train()
        train_step(step, batch())
        if step in save:
            optim.zero_grad(set_to_none=True)
            trainer = {"epoch": 0, "global_step": step, "world_size": 1}
            target = Path(cfg.save_folder) / f"step{step}-unsharded"
            checkpointer.save_checkpoint(target, fsdp, optim, trainer)
            shutil.copytree(target, args.out / f"step{step}", dirs_exist_ok=True)
            fsdp.eval()
            with torch.no_grad():
                logits[step] = fsdp(input_ids=probe).logits.clone()
    fsdp.train()
    ids = batch() if args.next_batch is None else torch.from_numpy(np.load(args.next_batch)).long()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_step(save[-1] + 1, ids)
    update = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    torch.save(
        {"probe": probe, "logits": logits, "next_batch": ids, "next_update": update},
        args.out / "reference.pt",
    )
    shutil.rmtree(cfg.save_folder)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
