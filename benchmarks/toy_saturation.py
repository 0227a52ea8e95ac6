"""Does a toy model saturate? Train toy models and follow their held-out loss, without the workflow.

For tuning the toy suite (``config.yaml``'s ``toy:`` section): trains each chosen model exactly
as ``rules/checkpoints.smk`` does (``pipeline.checkpoints.toy_training``), but instead of saving
each checkpoint it measures the evaluation set V (cut from the held-out stream as the workflow
cuts it) on the spot, and prints per model the overall loss curve, its best and last values, the
overall saturation step, and each frequency bin's saturation step (``pipeline.saturation``, the
same rule as the reductions). Nothing is written. Overrides take ``key=value``::

    .venv/bin/python benchmarks/toy_saturation.py --models toy-d16 toy-d128
    .venv/bin/python benchmarks/toy_saturation.py --models toy-d16 \\
        --train steps=8192 save_every=1024 --language zipf_exponent=1.2

One model trains on one thread; run several invocations side by side to use more cores.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import yaml

from pipeline.config import filled
from pipeline.maths.frequency import frequency_bins
from pipeline.maths.saturation import saturation_step
from pipeline.toy.language import ToyLanguage, eval_windows, toy_streams
from pipeline.toy.schedule import ToyModel, TrainConfig
from pipeline.toy.training import toy_training


def overrides(pairs: list[str]) -> dict:
    """``["steps=8192", "learning_rate=0.01"]`` → ``{"steps": 8192, "learning_rate": 0.01}``."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def held_out_losses(net, windows: torch.Tensor) -> np.ndarray:
    """Per-token loss (sequence × position, flattened) of ``net`` on the evaluation windows."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        logits = net(input_ids=windows[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1), reduction="none"
        )
    net.train(was_training)
    return loss.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--models", nargs="*", help="model names (default: all toy models)")
    parser.add_argument("--train", nargs="*", default=[], help="toy.train overrides, key=value")
    parser.add_argument("--language", nargs="*", default=[], help="toy.language overrides")
    parser.add_argument("--eval-sequences", type=int, help="overrides eval.sequences")
    parser.add_argument("--tolerance", type=float, help="overrides the saturation tolerance")
    args = parser.parse_args()

    with open(args.config) as fh:
        cfg = filled(yaml.safe_load(fh))  # the file overlaid on the declared defaults
    toy = cfg["toy"]
    language = ToyLanguage(**{**toy["language"], **overrides(args.language)})
    train = TrainConfig(**{**toy["train"], **overrides(args.train)})
    tol = args.tolerance if args.tolerance is not None else cfg["reduce"]["saturation_tolerance"]
    sequences = args.eval_sequences or cfg["eval"]["sequences"]
    context = cfg["eval"]["context_length"]
    heldout_tokens = max(toy["heldout_tokens"], sequences * (context + 1))
    streams = toy_streams(language, toy["train_tokens"], heldout_tokens)
    stream = streams["train"]
    windows = eval_windows(streams["heldout"], sequences, context).astype(np.int64)
    _, bins = frequency_bins(np.bincount(stream, minlength=language.vocab_size))
    token_bin = bins[windows[:, 1:].reshape(-1)]
    bin_values = np.unique(token_bin)
    members = token_bin[None, :] == bin_values[:, None]  # (bin, token)
    windows = torch.from_numpy(windows)

    names = args.models or [m for m, spec in cfg["models"].items() if spec["source"] == "toy"]
    for name in names:
        spec = cfg["models"][name]
        model = ToyModel(spec["hidden_size"], spec["layers"], spec["heads"])
        start = time.perf_counter()
        steps, overall, per_bin = [], [], []
        for step, net, _ in toy_training(model, train, stream, language.vocab_size):
            loss = held_out_losses(net, windows)
            steps.append(step)
            overall.append(loss.mean())
            per_bin.append((members * loss).sum(1) / members.sum(1))
        steps, overall, per_bin = np.array(steps), np.array(overall), np.array(per_bin)
        step_bin = saturation_step(per_bin, steps, tol, axis=0)
        report = {
            "model": name,
            "seconds": round(time.perf_counter() - start, 1),
            "loss_best": round(float(overall.min()), 4),
            "best_step": int(steps[overall.argmin()]),
            "loss_last": round(float(overall[-1]), 4),
            "last_over_best": round(float(overall[-1] / overall.min()), 4),
            "saturation_step": saturation_step(overall, steps, tol),
            "saturated_bins": {
                int(b): float(s) for b, s in zip(bin_values, step_bin) if np.isfinite(s)
            },
            "token_share_of_saturated_bins": round(
                float(members[np.isfinite(step_bin)].sum() / token_bin.size), 4
            ),
            "curve": {int(s): round(float(v), 4) for s, v in zip(steps, overall)},
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
