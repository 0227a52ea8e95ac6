"""Checkpoint formats: what the files of one checkpoint are, one module a format.

A format module says, as module-level names:

* ``NAME`` and ``DESCRIPTION``;
* ``patterns(allow_pickle)``: the files fetched of one hub revision (or subfolder);
* ``matches(path)``: whether a directory holds this format's files (detection);
* ``problem(path)``: why a directory is not a complete checkpoint of this format, or None;
* ``linked_files(src)``: the files a checkpoint directory links to; ``write_config(src, dst)``
  writes its ``config.json`` (a copy, so that a deleted source re-runs nothing);
* ``load_model(path, dtype, allow_pickle)`` and ``weight_files(path)``;
* ``has_optimizer(path)`` and ``read_optimizer(path, model, allow_pickle)``: its optimizer state
  as the update stage's ``pipeline.optimizer.OptimizerState`` (names, moments, step count, the
  next step's learning rate, weight decay per tensor, clipping, loss normalisation);
* ``OPTIMIZER_FILE``: the file its optimizer state is read from (named in its errors);
* ``OPTIMIZER_EXPECTED`` (its checkpoints carry an optimizer state), ``OPTIMIZER_PICKLED`` and
  ``PICKLES_ONLY`` (what is read only with the ``allow_pickle`` opt-in);
* ``TRAIN_LOG``: the file of a checkpoint that holds the training-loss log, or None, and
  ``read_train_log(path)`` → (steps, losses).

``get`` looks a format up by name (the ``format`` key of a model entry); ``detect`` chooses one
from the files where that is unambiguous. Light to import (no torch): the DAG is built with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from pipeline.formats import olmo, trainer, transformers

#: Every format, by the name a model entry's ``format`` key gives.
FORMATS: dict[str, ModuleType] = {m.NAME: m for m in (transformers, trainer, olmo)}
#: Detection tries the most specific files first: OLMo's config.yaml + model.pt, the Trainer's
#: trainer_state.json beside a transformers directory, then a plain transformers directory.
DETECTION_ORDER = ("olmo", "trainer", "transformers")


def get(name: str) -> ModuleType:
    """The format module called ``name``; a ``ValueError`` lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown checkpoint format {name!r}; known: {', '.join(FORMATS)}"
        ) from None


def refuse_adapter(path: str | os.PathLike) -> None:
    """A PEFT/LoRA adapter checkpoint holds only the adapter's low-rank weights, not a model:
    the measurements need the merged model's full weights."""
    path = Path(path)
    if (path / "adapter_config.json").exists():
        raise ValueError(
            f"{path} is a PEFT adapter checkpoint (adapter_config.json): it holds the adapter's "
            "low-rank weights only, and its optimizer state covers only those. Merge the adapter "
            "into the base model (peft's merge_and_unload, then save_pretrained) and point the "
            "workflow at the merged checkpoints"
        )


def detect(path: str | os.PathLike) -> ModuleType:
    """The format of the checkpoint directory ``path``, from its files."""
    refuse_adapter(path)
    for name in DETECTION_ORDER:
        if FORMATS[name].matches(path):
            return FORMATS[name]
    raise ValueError(
        f"{path}: no checkpoint format recognised (a transformers directory has config.json; a "
        "Trainer checkpoint also trainer_state.json; an OLMo-native one config.yaml and "
        "model.pt); point the model's path at a checkpoint directory or set its format"
    )


def resolve(path: str | os.PathLike, name: str | None = None) -> ModuleType:
    """The format ``name`` (checked against the files), or the detected one when None."""
    if name is None:
        return detect(path)
    refuse_adapter(path)
    fmt = get(name)
    if not fmt.matches(path):
        raise ValueError(
            f"{path} is not a checkpoint of format {name!r} ({fmt.DESCRIPTION}); "
            f"its files look like {detect(path).NAME!r}: fix the model's format key"
        )
    return fmt


def weights_sha256(path: str | os.PathLike) -> str:
    """sha256 over a checkpoint's weight files as its format names them (sorted by name, links
    followed), streamed: what identifies a checkpoint's weights in every store measured on it."""
    import hashlib

    h = hashlib.sha256()
    for f in detect(path).weight_files(path):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
