"""The data stage: the toy corpus, token-frequency bins and the evaluation set V.

* ``write_corpus``: the toy language's training and held-out streams (``pipeline.toy``).
* ``build_frequency``: token counts (the toy corpus, a counts vector, or Megatron training
  shards, read by ``pipeline.sources``) → ``frequency.zarr`` with the log2 frequency bins of
  ``pipeline.maths.frequency`` (Gradient Dissent §2).
* ``write_update_batches``: the K fixed batches the update stage takes its single optimizer
  steps on (the toy language's, outside its training stream) → ``update.zarr``.
* ``build_eval``: the evaluation set V, windows of (context, target) ids cut from the toy
  language's held-out stream, or sampled with a seed from local text files, a Hugging Face
  dataset or a pre-tokenized array (tokenized with the models' own tokenizer) → ``eval.zarr``.
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from pipeline import sources
from pipeline.config import EVAL_DEFAULTS
from pipeline.logs import console_warning
from pipeline.maths.frequency import UNSEEN_BIN, frequency_bins
from pipeline.store import open_store, write_zarr
from pipeline.toy.language import ToyLanguage, eval_windows, toy_streams, update_batches

log = logging.getLogger(__name__)


def write_corpus(language: ToyLanguage, train_tokens: int, heldout_tokens: int, path: str) -> None:
    """Sample the toy corpus (a training and a held-out stream) and write it as a Zarr store."""
    streams = toy_streams(language, train_tokens, heldout_tokens)
    ds = xr.Dataset(
        {
            "train": ("train_position", streams["train"]),
            "heldout": ("heldout_position", streams["heldout"]),
        },
        attrs={"language": _asdict(language)},
    )
    write_zarr(ds, path)


def write_frequency(
    count: np.ndarray, path: str, source: str, counted_ids: int | None = None
) -> xr.Dataset:
    """Write ``count``, ``frequency`` and ``bin`` over the ``vocab`` dimension; ``counted_ids``
    is how many ids the source counted (default: all; a counts vector may be shorter than the
    padded ``vocab``), recorded so that the evaluation set can check its tokenizer against it."""
    frequency, bins = frequency_bins(count)
    seen = bins[bins != UNSEEN_BIN]
    log.info(
        "%d ids, %d seen, log2 frequency bins %d..%d (%d bins)",
        count.size,
        seen.size,
        seen.min(),
        seen.max(),
        np.unique(seen).size,
    )
    ds = xr.Dataset(
        {
            "count": ("vocab", count.astype(np.int64)),
            "frequency": ("vocab", frequency),
            "bin": ("vocab", bins),
        },
        coords={"vocab": np.arange(count.size)},
        attrs={
            "source": source,
            "unseen_bin": UNSEEN_BIN,
            "counted_ids": int(counted_ids or count.size),
        },
    )
    write_zarr(ds, path)
    return ds


def write_eval(windows: np.ndarray, bins: np.ndarray, path: str, source: str) -> None:
    """Write the evaluation set: ``input_ids``/``targets`` (sequence, position) and per token
    (the flattened (sequence, position) pairs) its ``target`` id and frequency ``bin``."""
    inputs, targets = windows[:, :-1], windows[:, 1:]
    if windows.max() >= bins.size or windows.min() < 0:
        raise ValueError(
            f"evaluation ids (inputs and targets) span {windows.min()}..{windows.max()} but the "
            f"frequency table has {bins.size} ids; use the same tokenizer for both"
        )
    target = targets.reshape(-1)
    unseen = int((bins[target] == UNSEEN_BIN).sum())
    if unseen:
        console_warning(
            log,
            f"{unseen} of {target.size} evaluation tokens ({unseen / target.size:.2%}) are ids "
            "the frequency counts never saw: they form the unseen bin. Many of them mean that the "
            "counts and the evaluation tokenizer do not match.",
        )
    ds = xr.Dataset(
        {
            "input_ids": (("sequence", "position"), inputs.astype(np.int32)),
            "targets": (("sequence", "position"), targets.astype(np.int32)),
            "target": ("token", target.astype(np.int32)),
            "bin": ("token", bins[target]),
        },
        coords={"token": np.arange(target.size)},
        attrs={"source": source, "unseen_bin": UNSEEN_BIN},
    )
    write_zarr(ds, path)


def write_update_batches(
    language: ToyLanguage,
    n_batches: int,
    batch_size: int,
    sequence_length: int,
    frequency_path: str,
    path: str,
) -> None:
    """Write the update batches: ``input_ids (batch, sequence, window)``, windows of
    ``sequence_length + 1`` ids as in a training batch, and the frequency ``bin`` of each target
    ``(batch, sequence, position)``."""
    windows = update_batches(language, n_batches, batch_size, sequence_length + 1)
    bins = open_store(frequency_path)["bin"].values
    if windows.max() >= bins.size:
        raise ValueError(
            f"update batch ids reach {windows.max()} but {frequency_path} has {bins.size} ids"
        )
    ds = xr.Dataset(
        {
            "input_ids": (("batch", "sequence", "window"), windows),
            "bin": (("batch", "sequence", "position"), bins[windows[:, :, 1:]]),
        },
        coords={"batch": np.arange(n_batches)},
        attrs={
            "source": "toy language, outside the training stream",
            "language": _asdict(language),
        },
    )
    write_zarr(ds, path)
    log.info("%d update batches of %d x %d tokens", n_batches, batch_size, sequence_length)


def _asdict(obj) -> dict:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}


# --- the stage's entry points: a config section in, a store out ------------------------------


def build_eval(
    spec: dict, frequency_path: str, out_path: str, corpus_path: str | None = None
) -> None:
    """Build the evaluation set of the ``eval`` config section and write ``eval.zarr``."""
    freq = open_store(frequency_path)
    bins = freq["bin"].values
    spec = {**EVAL_DEFAULTS, **spec}
    n, L, seed = spec["sequences"], spec["context_length"], spec["seed"]
    source = spec["source"]
    if source == "toy":
        windows = eval_windows(open_store(corpus_path)["heldout"].values, n, L)
        label = "toy held-out stream"
    elif source in ("text", "dataset"):
        tokenizer = sources.load_tokenizer(spec["tokenizer"])
        counted = freq.attrs.get("counted_ids", bins.size)
        if len(tokenizer) > counted:
            raise ValueError(
                f"the evaluation tokenizer ({spec['tokenizer']}) has {len(tokenizer)} ids but the "
                f"frequency counts ({frequency_path}, from {freq.attrs.get('source')}) cover "
                f"{counted}: they come from another tokenizer (or a modified copy of it); use the "
                "tokenizer the counts were made with"
            )
        pool = spec["pool_tokens"] or 4 * n * (L + 1)
        if source == "text":
            texts, label = (
                sources.read_texts(spec["paths"], spec["text_field"]),
                "text files",
            )
        else:
            texts, label = (
                sources.dataset_texts(spec["dataset"]),
                f"dataset {spec['dataset']['path']}",
            )
        stream = sources.tokenize_stream(texts, tokenizer, pool)
        log.info("tokenized %d ids from %s", stream.size, label)
        windows = sources.sample_windows(stream, n, L, seed)
    elif source == "tokens":
        arr = sources.load_tokens(spec["path"])
        if arr.ndim == 1:
            windows = sources.sample_windows(arr, n, L, seed)
        else:
            if arr.shape[1] < L + 1 or arr.shape[0] < n:
                raise ValueError(f"{spec['path']} has windows {arr.shape}; need ≥ ({n}, {L + 1})")
            rows = np.sort(np.random.default_rng(seed).choice(arr.shape[0], n, replace=False))
            windows = arr[rows, : L + 1]
        label = f"tokens {spec['path']}"
    else:
        raise ValueError(f"eval.source {source!r} is not one of toy, text, dataset, tokens")
    write_eval(windows, bins, out_path, source=label)


def build_frequency(spec: dict, out_path: str, corpus_path: str | None = None) -> None:
    """Count tokens as the ``frequency`` config section says and write ``frequency.zarr``."""
    source, vocab = spec["source"], spec.get("vocab_size")
    if source == "toy":
        train = open_store(corpus_path)["train"].values
        count, label = np.bincount(train, minlength=vocab or int(train.max()) + 1), "toy corpus"
        counted = count.size
    elif source == "counts":
        count, label = sources.load_counts(spec["path"], vocab), spec["path"]
        counted = np.load(spec["path"], mmap_mode="r").shape[0]
    elif source == "megatron":
        count, label = sources.count_megatron(spec["paths"], vocab), "Megatron shards"
        counted = count.size
    else:
        raise ValueError(f"frequency.source {source!r} is not one of toy, counts, megatron")
    write_frequency(count, out_path, source=label, counted_ids=counted)
