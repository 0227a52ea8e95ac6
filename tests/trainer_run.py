"""A real ``transformers.Trainer`` run on the CPU, for the tests of Trainer checkpoints: a tiny
GPT-NeoX on fixed token windows, checkpoints every ``save_steps`` in Trainer's own format."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB, WINDOW, BATCH = 97, 17, 4


class Windows(torch.utils.data.Dataset):
    """Fixed token windows as a causal LM's training examples (labels = inputs)."""

    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_model():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
        rotary_pct=0.25,
        tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(cfg)


def train(
    out: Path,
    model,
    ids: torch.Tensor,
    max_steps: int,
    resume: str | None = None,
    stop_at: int | None = None,
    save_steps: int = 4,
    **kw,
):
    """A real Trainer run (CPU, float32), checkpoints every ``save_steps`` steps and at the end;
    ``stop_at``: stop there (as a job that runs out of time), to be resumed later."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_steps=save_steps,
        logging_steps=1,
        per_device_train_batch_size=BATCH,
        learning_rate=1e-3,
        lr_scheduler_type="linear",
        warmup_steps=3,
        weight_decay=0.1,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        ignore_data_skip=resume is not None,
        **kw,
    )

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **_):
            if state.global_step == stop_at:
                control.should_training_stop = True

    callbacks = [Stop()] if stop_at else []
    Trainer(model=model, args=args, train_dataset=Windows(ids), callbacks=callbacks).train(
        resume_from_checkpoint=resume
    )
