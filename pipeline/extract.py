"""The extract stage: per-token measurements of one checkpoint, written as one Zarr store.

One forward pass through the model's body gives the final hidden states h (the input of the
output layer, found through ``get_output_embeddings()``); everything else is the closed-form
algebra of ``pipeline.decomposition``. The store ``results/extract/{model}/step{step}.zarr``
holds one variable per measurement over the ``token`` dimension (with ``target`` and ``bin``
coordinates from the evaluation set) and attrs naming the model, step, revision, weights
sha256, dtype, device and package versions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

import pipeline
from pipeline.checkpoints import load_checkpoint, weights_sha256
from pipeline.decomposition import MEASUREMENTS, decompose_at_h
from pipeline.logs import Progress
from pipeline.store import write_zarr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractConfig:
    """How a checkpoint is measured (the ``extract`` section of the config)."""

    batch_size: int = 64  # sequences per forward pass
    vocab_chunk: int = 8192  # vocabulary rows per block of logits
    dtype: str = "float32"
    device: str = "auto"  # "auto": CUDA when present, else CPU


def output_layer(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output embedding ``U (V, d)`` and bias ``b (V,)`` (None without one) of a causal LM."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(
            f"{type(model).__name__} has no output embedding (get_output_embeddings())"
        )
    return head.weight, getattr(head, "bias", None)


@torch.no_grad()
def final_hidden(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states (after the final norm) of shape (B, T, d), without computing logits."""
    return model.base_model(input_ids=input_ids).last_hidden_state


@torch.no_grad()
def measure(
    model, input_ids: np.ndarray, targets: np.ndarray, cfg: ExtractConfig, device: torch.device
) -> dict[str, np.ndarray]:
    """All per-token measurements at h for (sequence, position) inputs and targets.

    Returns a dict of (sequence · position,) float32 arrays keyed by ``MEASUREMENTS``.
    """
    U, b = output_layer(model)
    if targets.max() >= U.shape[0] or targets.min() < 0:
        raise ValueError(
            f"target ids span {targets.min()}..{targets.max()} but the model's output has "
            f"{U.shape[0]} rows; the evaluation set was built for another vocabulary"
        )
    if input_ids.max() >= model.get_input_embeddings().weight.shape[0]:
        raise ValueError("input ids exceed the model's input vocabulary")
    U32 = U.float()
    b32 = b.float() if b is not None else None
    out: dict[str, list[np.ndarray]] = {k: [] for k in MEASUREMENTS}
    n_seq = input_ids.shape[0]
    progress = Progress(log, n_seq * input_ids.shape[1], "tokens")
    for lo in range(0, n_seq, cfg.batch_size):
        ids = torch.from_numpy(input_ids[lo : lo + cfg.batch_size].astype(np.int64)).to(device)
        tgt = torch.from_numpy(targets[lo : lo + cfg.batch_size].astype(np.int64)).to(device)
        h = final_hidden(model, ids).float().reshape(-1, U.shape[1])  # (B·T, d)
        res = decompose_at_h(h, U32, b32, tgt.reshape(-1), cfg.vocab_chunk)
        for k in MEASUREMENTS:
            out[k].append(res[k].cpu().numpy())
        progress.update(min(lo + cfg.batch_size, n_seq) * input_ids.shape[1])
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def extract_checkpoint(
    checkpoint: str, eval_path: str, out_path: str, model_name: str, step: int, cfg: ExtractConfig
) -> None:
    """Measure checkpoint ``checkpoint`` on the evaluation set and write ``out_path``."""
    import transformers

    device = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    ev = xr.open_zarr(eval_path)
    input_ids, targets = ev["input_ids"].values, ev["targets"].values
    if input_ids.size == 0:
        raise ValueError(f"the evaluation set {eval_path} is empty")
    sha = weights_sha256(checkpoint)
    log.info("%s step %d: %d tokens on %s in %s", model_name, step, targets.size, device, cfg.dtype)
    model = load_checkpoint(checkpoint, dtype=dtype).to(device)
    values = measure(model, input_ids, targets, cfg, device)
    ds = xr.Dataset(
        {k: ("token", v) for k, v in values.items()},
        coords={"token": ev["token"].values, "target": ev["target"], "bin": ev["bin"]},
        attrs={
            "model": model_name,
            "step": int(step),
            "revision": f"step{step}",
            "weights_sha256": sha,
            "dtype": cfg.dtype,
            "device": str(device),
            "pipeline_version": pipeline.__version__,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
        },
    )
    write_zarr(ds.expand_dims(step=np.array([step], dtype=np.int64)), out_path)
    log.info("mean loss %.4f, wrote %s", float(values["loss"].mean()), out_path)
