"""A Python API for a notebook: measure one checkpoint, open a finished run.

* ``measure``: one checkpoint (a loaded causal LM or its directory) on ids or texts of your
  own, through the extract stage's own code (``pipeline.extract.checkpoint_dataset``): the
  variables, dimensions and attrs of ``results/extract/{model}/step{N}.zarr``, without its
  ``step`` dimension; with frequency counts, each token's log2 frequency ``bin``
  (``pipeline.maths.frequency``, Gradient Dissent §2), as the evaluation set gives it.
* ``open_run``: a finished run's ``summary.zarr``, checked against its manifest and with its
  names as coordinates (``pipeline.summary.open_summary``), as every figure reads it.

Importing this module loads no torch (``measure`` imports it when called), so that a notebook
that only reads a run stays light.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline import sources
from pipeline.data import eval_dataset
from pipeline.maths.frequency import frequency_bins
from pipeline.toy.language import eval_windows


def measure(
    model,
    ids: np.ndarray | None = None,
    *,
    texts: str | Iterable[str] | None = None,
    tokenizer=None,
    counts: np.ndarray | None = None,
    context_length: int | None = None,
    parameters: bool = False,
    rank_tokens: int = 0,
    dtype: str = "float32",
    device: str = "cpu",
    sequences_per_pass: int | None = None,
    vocab_chunk: int | None = None,
    allow_pickle: bool = False,
    name: str | None = None,
) -> xr.Dataset:
    """Measure one checkpoint on ``ids`` or ``texts``; what an extraction store holds.

    Parameters
    ----------
    model : a causal LM (a ``transformers`` model object, moved to ``device`` and ``dtype`` and
        put in eval mode in place), or the path of a checkpoint directory (loaded with
        ``pipeline.checkpoints.load_checkpoint``, as the extract stage loads it).
    ids : (sequence, window) token ids, each window ``context + 1`` ids: the inputs are
        ``ids[:, :-1]`` and the targets ``ids[:, 1:]``, as in the evaluation set; or a 1-D
        stream of ids, cut into windows of ``context_length + 1``.
    texts : a text or texts, tokenized with ``tokenizer`` into one stream (each text followed
        by the end-of-text id, as the evaluation set is built) and cut into windows of
        ``context_length + 1``. Give ``ids`` or ``texts``, not both.
    tokenizer : a ``transformers`` tokenizer, or its directory; needed with ``texts``.
    counts : (vocab,) how often each id occurs in the training data (shorter than the model's
        vocabulary: padded with zeros); gives each token the ``bin`` coordinate
        ``floor(log2(count / total))`` of its target, ``UNSEEN_BIN`` (−64) for an unseen id.
        Without counts the result has no ``bin``.
    context_length : positions per window for a stream (1-D ``ids`` or ``texts``); default:
        the model's ``max_position_embeddings``, or the whole stream if shorter.
    parameters, rank_tokens, dtype, device, sequences_per_pass, vocab_chunk : as the config's
        ``extract`` and ``execution.extract`` sections (here without the parameter-gradient
        statistics and the rank curve by default, and on the CPU).
    allow_pickle : load a checkpoint's ``.bin`` (pickle) weights, as ``load_checkpoint``.
    name : the ``model`` attr; default: the checkpoint's path or the model's class.

    Returns
    -------
    The variables of ``results/extract/{model}/step{N}.zarr`` (see ``pipeline.schema.extract``)
    with their ``long_name`` and ``units``, over ``token`` (with ``target`` and, given counts,
    ``bin`` coordinates), ``param``, ``rank_tokens`` and ``singular``; no ``step``.
    """
    import torch

    from pipeline.checkpoints import load_checkpoint, weights_sha256
    from pipeline.config import ExtractConfig
    from pipeline.extract import checkpoint_dataset, resolve_device

    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype; give 'float32' or 'bfloat16'")
    cfg = ExtractConfig(
        dtype=dtype,
        parameters=parameters,
        rank_tokens=rank_tokens,
        device=device,
        sequences_per_pass=sequences_per_pass,
        **({"vocab_chunk": vocab_chunk} if vocab_chunk else {}),
    )
    torch_device, torch_dtype = resolve_device(device), getattr(torch, dtype)
    attrs = {}
    if isinstance(model, (str, os.PathLike)):
        where = str(model)
        loaded = load_checkpoint(model, dtype=torch_dtype, allow_pickle=allow_pickle)
        attrs["weights_sha256"] = weights_sha256(model)
        model = loaded
    elif hasattr(model, "get_output_embeddings"):
        where = type(model).__name__
        model.to(dtype=torch_dtype).eval()
    else:
        raise TypeError(
            f"model is a {type(model).__name__}; give a causal LM (a transformers model such as "
            "GPTNeoXForCausalLM) or the path of a checkpoint directory"
        )
    windows, what = _windows(model, ids, texts, tokenizer, context_length)
    bins = None if counts is None else _bins(model, counts, windows, what)
    ev = eval_dataset(windows, bins, source=what)
    ds = checkpoint_dataset(
        model.to(torch_device), ev, cfg, torch_device, {"model": name or where, **attrs}, where
    )
    return ds.isel(step=0)


def _vocab(model) -> int:
    """The ids the model can both read and predict."""
    rows_in = model.get_input_embeddings().weight.shape[0]
    rows_out = model.get_output_embeddings().weight.shape[0]
    return min(rows_in, rows_out)


def _windows(model, ids, texts, tokenizer, context_length) -> tuple[np.ndarray, str]:
    """The (sequence, window) ids that ``measure`` is given, checked against the model's
    vocabulary, and what they are (the evaluation set's ``source``)."""
    if (ids is None) == (texts is None):
        raise ValueError(
            "give either ids (token ids) or texts (with a tokenizer), not "
            + ("both" if ids is not None else "neither")
        )
    if texts is not None:
        if tokenizer is None:
            raise ValueError(
                "texts need a tokenizer: pass tokenizer= (a transformers tokenizer or its "
                "directory), the one the model was trained with; or pass token ids as ids"
            )
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = sources.load_tokenizer({"path": str(tokenizer)})
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("texts is empty: give at least one text")
        ids = sources.tokenize_stream(texts, tokenizer, np.iinfo(np.int64).max)
        what = f"texts tokenized with {type(tokenizer).__name__}"
    else:
        ids, what = np.asarray(ids), "ids"
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be integer token ids, got dtype {ids.dtype}")
    if ids.ndim == 1:
        ids = _cut(model, ids, context_length, what)
    elif ids.ndim != 2 or ids.shape[1] < 2 or ids.shape[0] < 1:
        raise ValueError(
            f"ids has shape {ids.shape}; give (sequence, window) ids with windows of at least 2 "
            "(inputs ids[:, :-1], targets ids[:, 1:]), or a 1-D stream with context_length"
        )
    elif context_length is not None and context_length != ids.shape[1] - 1:
        raise ValueError(
            f"context_length is {context_length} but ids has windows of {ids.shape[1]} ids "
            f"(context {ids.shape[1] - 1}); leave context_length out with (sequence, window) ids"
        )
    vocab = _vocab(model)
    bad = np.argwhere((ids < 0) | (ids >= vocab))
    if bad.size:
        at = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{what} hold id {int(ids[at])} (at {list(at)}; {len(bad)} such), outside the "
            f"model's vocabulary 0..{vocab - 1}; give ids of the model's own tokenizer"
        )
    return ids, what


def _cut(model, stream: np.ndarray, context_length: int | None, what: str) -> np.ndarray:
    """Consecutive windows of ``context_length + 1`` ids of a stream (the rest left out)."""
    longest = getattr(model.config, "max_position_embeddings", None) or stream.size - 1
    L = context_length or min(longest, stream.size - 1)
    if L < 1 or stream.size < L + 1:
        raise ValueError(
            f"{what} hold {stream.size} ids, not one window of context_length + 1 = {L + 1} "
            "ids; give more ids or text, or a smaller context_length (≥ 1)"
        )
    return eval_windows(stream, stream.size // (L + 1), L)


def _bins(model, counts, windows: np.ndarray, what: str) -> np.ndarray:
    """The log2 frequency bin of every id of the model's output, from ``counts``."""
    vocab = model.get_output_embeddings().weight.shape[0]
    where = "the counts argument"
    count = sources.check_counts(counts, vocab, where, "the model's vocabulary size")
    given = np.asarray(counts).size
    if windows.max() >= given:
        raise ValueError(
            f"{where} has {given} counts but the {what} reach id {int(windows.max())}; give one "
            "count per id (counts[i]: how often id i occurs in the training data)"
        )
    return frequency_bins(count)[1]


def open_run(path: str | os.PathLike) -> xr.Dataset:
    """Open a finished run's summary, with the model names as the ``model`` coordinate.

    ``path`` is the run's folder (``results``, or ``results/{run}``) or its ``summary.zarr``;
    the store is checked against its manifest (``pipeline.store.open_store``), as every stage
    reads its inputs.
    """
    from pipeline.summary import open_summary

    path = Path(path)
    store = path if path.suffix == ".zarr" else path / "summary.zarr"
    if not store.is_dir():
        runs = sorted(str(p.parent) for p in path.glob("*/summary.zarr")) if path.is_dir() else []
        hint = (
            f"; the runs in {path}: {', '.join(runs)}"
            if runs
            else "; give a finished run's folder (results, or results/{run}) or its summary.zarr"
        )
        raise FileNotFoundError(f"no summary at {store}{hint}")
    return open_summary(str(store))
