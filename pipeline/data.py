"""The data stage: the toy corpus, token-frequency bins and the evaluation set V.

* ``write_corpus``: the toy language's training and held-out streams (``pipeline.toy``).
* ``build_frequency``: token counts (the toy corpus, a counts vector, or Megatron training
  shards, read by ``pipeline.sources``) → ``frequency.zarr`` with the log2 frequency bins of
  ``pipeline.maths.frequency`` (Gradient Dissent §2).
* ``build_update_batches``: the K fixed batches the update stage takes its single optimizer
  steps on (the toy language's, outside its training stream; or windows of text, a dataset or
  exported training batches) → ``update.zarr``.
* ``build_eval``: the evaluation set V, windows of (context, target) ids cut from the toy
  language's held-out stream, or sampled with a seed from local text files, a Hugging Face
  dataset or a pre-tokenized array (tokenized with the models' own tokenizer) → ``eval.zarr``.
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from pipeline import declare, sources
from pipeline.config.declarations import Windows
from pipeline.logs import console_warning
from pipeline.maths.frequency import UNSEEN_BIN, frequency_bins
from pipeline.maths.geometry import log_prob_spectra, w_error
from pipeline.store import open_store, write_zarr
from pipeline.toy.language import ToyLanguage, eval_windows, toy_streams, update_batches

log = logging.getLogger(__name__)


def write_corpus(language: ToyLanguage, train_tokens: int, heldout_tokens: int, path: str) -> None:
    """Sample the toy corpus (a training and a held-out stream) and write it as a Zarr store,
    with the singular values of the language's true log-probability matrix
    (``ToyLanguage.log_prob_matrix``), as it is and with its rows centred, from which W-error(d)
    follows for any width d (``pipeline.maths.geometry.w_error``)."""
    streams = toy_streams(language, train_tokens, heldout_tokens)
    s = log_prob_spectra(language.log_prob_matrix())
    spectra = {
        "log_prob_singular_values": s["uncentred"],
        "log_prob_centred_singular_values": s["centred"],
    }
    for name, s in spectra.items():
        log.info(
            "%s: W-error %s at d = 8, 16, 32, 64, 128",
            name,
            ", ".join(f"{w_error(s, d):.3f}" for d in (8, 16, 32, 64, 128)),
        )
    ds = xr.Dataset(
        {
            "train": ("train_position", streams["train"]),
            "heldout": ("heldout_position", streams["heldout"]),
            **{name: ("singular", s) for name, s in spectra.items()},
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


def eval_dataset(windows: np.ndarray, bins: np.ndarray | None, source: str) -> xr.Dataset:
    """The evaluation set of ``windows`` (sequence, context + 1) ids: ``input_ids``/``targets``
    (sequence, position) and per token (the flattened (sequence, position) pairs) its
    ``target`` id and, given the frequency ``bins`` of every id, its ``bin``."""
    inputs, targets = windows[:, :-1], windows[:, 1:]
    target = targets.reshape(-1)
    data = {
        "input_ids": (("sequence", "position"), inputs.astype(np.int32)),
        "targets": (("sequence", "position"), targets.astype(np.int32)),
        "target": ("token", target.astype(np.int32)),
    }
    attrs = {"source": source}
    if bins is not None:
        if windows.max() >= bins.size or windows.min() < 0:
            raise ValueError(
                f"evaluation ids (inputs and targets) span {windows.min()}..{windows.max()} but "
                f"the frequency table has {bins.size} ids; use the same tokenizer for both"
            )
        unseen = int((bins[target] == UNSEEN_BIN).sum())
        if unseen:
            console_warning(
                log,
                f"{unseen} of {target.size} evaluation tokens ({unseen / target.size:.2%}) are "
                "ids the frequency counts never saw: they form the unseen bin. Many of them mean "
                "that the counts and the evaluation tokenizer do not match.",
            )
        data["bin"] = ("token", bins[target])
        attrs["unseen_bin"] = UNSEEN_BIN
    return xr.Dataset(data, coords={"token": np.arange(target.size)}, attrs=attrs)


def write_eval(windows: np.ndarray, bins: np.ndarray, path: str, source: str) -> None:
    """Write the evaluation set (``eval_dataset``) of ``windows`` with their frequency ``bins``."""
    write_zarr(eval_dataset(windows, bins, source), path)


def write_update_batches(
    windows: np.ndarray, frequency_path: str, path: str, source: str, attrs: dict | None = None
) -> None:
    """Write the update batches: ``input_ids (batch, sequence, window)`` and the frequency
    ``bin`` of each target ``(batch, sequence, position)``; ``source`` says what they are."""
    bins = open_store(frequency_path)["bin"].values
    if windows.max() >= bins.size or windows.min() < 0:
        raise ValueError(
            f"update batch ids span {windows.min()}..{windows.max()} but {frequency_path} has "
            f"{bins.size} ids; use the models' tokenizer for both"
        )
    K, S, W = windows.shape
    ds = xr.Dataset(
        {
            "input_ids": (("update_batch", "sequence", "window"), windows.astype(np.int32)),
            "bin": (("update_batch", "sequence", "position"), bins[windows[:, :, 1:]]),
        },
        coords={"update_batch": np.arange(K)},
        attrs={"source": source, **(attrs or {})},
    )
    write_zarr(ds, path)
    log.info("%d update batches of %d x %d tokens: %s", K, S, W - 1, source)


def _asdict(obj) -> dict:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}


# --- the stage's entry points: a config section in, a store out ------------------------------


def windows_from_source(
    spec: dict,
    n: int,
    context_length: int,
    frequency_path: str,
    corpus_path: str | None = None,
    in_order: bool = False,
) -> tuple[np.ndarray, str]:
    """``n`` windows of ``context_length + 1`` ids from the source that ``spec`` (an ``eval``
    or ``update.data`` section) names, and a label saying where they come from.

    Text and datasets are tokenized with the models' tokenizer (checked against the frequency
    counts) and windows sampled from the stream with ``spec["seed"]``; a 1-D token array is
    sampled alike; a 2-D array of windows gives a seeded sample of its rows, or its first ``n``
    rows in order (``in_order``: exported training batches).
    """
    spec = {**declare.defaults(Windows), **spec}
    L, seed, source = context_length, spec["seed"], spec["source"]
    if source == "toy":
        return eval_windows(open_store(corpus_path)["heldout"].values, n, L), "toy held-out stream"
    if source in ("text", "dataset"):
        freq = open_store(frequency_path)
        counted = freq.attrs.get("counted_ids", freq.sizes["vocab"])
        tokenizer = sources.load_tokenizer(spec["tokenizer"])
        where = str(spec["tokenizer"])
        counts = f"{frequency_path}, from {freq.attrs.get('source')}"
        sources.check_tokenizer(tokenizer, counted, where, counts)
        pool = spec["pool_tokens"] or 4 * n * (L + 1)
        if source == "text":
            texts, label = sources.read_texts(spec["paths"], spec["text_field"]), "text files"
        else:
            texts, label = sources.dataset_texts(spec["dataset"]), _dataset_label(spec["dataset"])
        stream = sources.tokenize_stream(texts, tokenizer, pool, spec["tokenizer"].get("eos_id"))
        sources.check_stream(stream, tokenizer, counted, where)
        log.info("tokenized %d ids from %s", stream.size, label)
        return sources.sample_windows(stream, n, L, seed), label
    if source == "tokens":
        arr = sources.load_tokens(spec["path"])
        label = f"tokens {spec['path']}"
        if arr.ndim == 1:
            return sources.sample_windows(arr, n, L, seed), label
        if arr.shape[1] < L + 1 or arr.shape[0] < n:
            raise ValueError(f"{spec['path']} has windows {arr.shape}; need ≥ ({n}, {L + 1})")
        if in_order:
            return np.asarray(arr[:n, : L + 1]), f"{label}, its first {n} rows in order"
        rows = np.sort(np.random.default_rng(seed).choice(arr.shape[0], n, replace=False))
        return arr[rows, : L + 1], label
    raise ValueError(f"source {source!r} is not one of toy, text, dataset, tokens")


def _dataset_label(dataset: dict) -> str:
    parts = [dataset["path"], dataset.get("name"), dataset.get("split")]
    return "dataset " + " ".join(str(p) for p in parts if p)


def build_eval(
    spec: dict, frequency_path: str, out_path: str, corpus_path: str | None = None
) -> None:
    """Build the evaluation set of the ``eval`` config section and write ``eval.zarr``."""
    bins = open_store(frequency_path)["bin"].values
    windows, label = windows_from_source(
        spec, spec["sequences"], spec["context_length"], frequency_path, corpus_path
    )
    write_eval(windows, bins, out_path, source=label)


def build_update_batches(
    spec: dict,
    n_batches: int,
    frequency_path: str,
    out_path: str,
    language: ToyLanguage | None = None,
    train: dict | None = None,
) -> None:
    """Build the update batches of the ``update.data`` section and write ``update.zarr``:
    the toy language's (outside its training stream, shaped like its training batches), or
    ``n_batches`` × ``spec["sequences"]`` windows from text, a dataset or a token array."""
    if spec["source"] == "toy":
        windows = update_batches(
            language, n_batches, train["batch_size"], train["sequence_length"] + 1
        )
        label = "toy language, outside the training stream"
    else:
        S, L = spec["sequences"], spec["context_length"]
        flat, label = windows_from_source(spec, n_batches * S, L, frequency_path, in_order=True)
        windows = flat.reshape(n_batches, S, L + 1)
        if spec["source"] in ("text", "dataset"):
            label = f"held-out text sample, {label} (not the training batches)"
        label = spec.get("label") or label
    write_update_batches(windows, frequency_path, out_path, label)


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
    elif source == "dataset":
        tokenizer = sources.load_tokenizer(spec["tokenizer"])
        texts = sources.dataset_texts(spec["dataset"])
        stream = sources.tokenize_stream(
            texts, tokenizer, spec["tokens"], spec["tokenizer"].get("eos_id")
        )
        if stream.size < spec["tokens"]:
            console_warning(
                log,
                f"frequency: the dataset ran out after {stream.size} of {spec['tokens']} tokens",
            )
        if stream.max() >= vocab:
            raise ValueError(
                f"frequency.vocab_size is {vocab} but the tokenizer ({spec['tokenizer']}) gives "
                f"id {stream.max()}; set it to the models' (padded) output size"
            )
        count = np.bincount(stream, minlength=vocab)
        label = f"{_dataset_label(spec['dataset'])}, its first {stream.size} tokens"
        counted = len(tokenizer)
    else:
        raise ValueError(
            f"frequency.source {source!r} is not one of toy, counts, megatron, dataset"
        )
    write_frequency(count, out_path, source=label, counted_ids=counted)
