"""The seeds stage: one job per (group, step) compares the predictive distributions of a
group's models (the seeds of one setting: ``models.{name}.seeds``) at every evaluation token
and writes ``results/seeds/{group}/step{N}.zarr`` (schema: ``pipeline/schema/seeds.py``).

``seed_kl`` (``model``, ``token``) is each seed's mean KL divergence to the group's other seeds
at the token's position (``pipeline.maths.divergence.seed_kl``); the summary reduces it per
frequency bin. The models are read in float32, ``sequences_per_pass`` evaluation sequences at
a time (``execution.extract``'s setting), all of them at once per pass.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import xarray as xr

from pipeline.checkpoints import load_checkpoint, weights_sha256
from pipeline.extract import resolve_device
from pipeline.logs import Progress
from pipeline.maths.divergence import seed_kl
from pipeline.schema import conform
from pipeline.store import open_store, with_labels, write_zarr

log = logging.getLogger(__name__)


def compare_seeds(
    checkpoints: dict[str, str],
    eval_path: str,
    out_path: str,
    group: str,
    step: int,
    per_pass: int | None = None,
    device: str = "auto",
) -> xr.Dataset:
    """Measure the group's ``checkpoints`` (model name → checkpoint directory, ≥ 2) at ``step``
    on the evaluation set and write ``out_path``."""
    if len(checkpoints) < 2:
        raise ValueError(f"group {group}: the cross-seed KL needs two or more seeds")
    dev = resolve_device(device)
    ev = open_store(eval_path)
    ids = torch.from_numpy(ev["input_ids"].values.astype(np.int64))
    targets = ev["targets"].values
    models = [load_checkpoint(path).to(dev).eval() for path in checkpoints.values()]
    vocab = {m.config.vocab_size for m in models}
    if len(vocab) != 1:
        raise ValueError(f"group {group}: its models' vocabularies differ in size ({vocab})")
    n = per_pass or max(1, 2**22 // (ids.shape[1] * vocab.pop() * len(models)))
    log.info("group %s step %d: %d seeds, %d tokens", group, step, len(models), targets.size)
    progress = Progress(log, ids.shape[0], "sequences")
    out = []
    with torch.no_grad():
        for start in range(0, ids.shape[0], n):
            batch = ids[start : start + n].to(dev)
            logp = torch.stack(
                [torch.log_softmax(m(input_ids=batch).logits.float(), -1) for m in models]
            )
            out.append(seed_kl(logp.flatten(1, 2)).cpu().numpy())
            progress.update(min(start + n, ids.shape[0]))
    kl = np.concatenate(out, axis=1)
    coords = {"token": ev["token"].values, "target": ev["target"]}
    if "bin" in ev:
        coords["bin"] = ev["bin"]
    ds = xr.Dataset({"seed_kl": (("model", "token"), kl)}, coords=coords)
    ds.attrs = {
        "group": group,
        "step": int(step),
        "weights_sha256": {m: weights_sha256(p) for m, p in checkpoints.items()},
    }
    ds = with_labels(conform(ds, "seeds"), {"model": list(checkpoints)})
    write_zarr(ds, out_path)
    log.info("mean cross-seed KL %.4g nats, wrote %s", float(kl.mean()), out_path)
    return ds
