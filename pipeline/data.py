"""The data stage: the toy language, token-frequency bins and the evaluation set V.

* ``ToyLanguage`` is the embedded default's synthetic language: Zipfian unigram frequencies and a
  sparse second-order Markov chain whose conditional distributions have far more rank than the
  small models' hidden size, so small models hit the softmax bottleneck while large ones keep
  learning (DESIGN.md, "Embedded default").
* ``frequency_bins`` implements Gradient Dissent §2: ``f_j = count_j / Σ count``,
  ``bin_j = floor(log2 f_j)``; ids never seen form their own bin, ``UNSEEN_BIN``.
* The evaluation set V: windows of (context, target) ids cut from the toy language's held-out
  stream, or sampled with a seed from local text files, a Hugging Face dataset, or a
  pre-tokenized array, tokenized with the models' own tokenizer.
* Token counts: the toy corpus, a counts vector (``.npy``), or Pythia's Megatron ``.bin``/``.idx``
  training shards counted in chunks.

The functions here are pure (numpy in, numpy out); ``write_*`` functions add the labels and write
the Zarr stores of ``results/data/``.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import xarray as xr

from pipeline.logs import Progress
from pipeline.store import write_zarr

log = logging.getLogger(__name__)

#: The bin of ids that never occur in the training data (no log2 frequency exists for them).
UNSEEN_BIN = -64


@dataclass(frozen=True)
class ToyLanguage:
    """A seeded synthetic language: Zipfian unigrams and a sparse second-order Markov chain.

    The next id depends on the previous id (which of ``successors`` ids may follow) and on a
    class of the id two back (``context_classes`` different weightings of those successors);
    with probability ``noise`` it is instead drawn from the unigram distribution, so that every id
    occurs. Successor weights are proportional to the unigram probability times log-normal noise
    of width ``weight_sigma``, which keeps the marginal frequencies Zipfian.
    """

    vocab_size: int = 2048
    zipf_exponent: float = 1.0
    successors: int = 32
    context_classes: int = 8
    weight_sigma: float = 1.5
    noise: float = 0.05
    seed: int = 0

    def tables(self) -> dict[str, np.ndarray]:
        """Draw the language's parameters from its seed.

        Returns
        -------
        dict with ``unigram (vocab)``, ``successor (vocab, successors)`` ids,
        ``cdf (vocab, context_classes, successors)`` cumulative successor weights and
        ``token_class (vocab)``.
        """
        rng = np.random.default_rng(self.seed)
        V, K, C = self.vocab_size, self.successors, self.context_classes
        rank = rng.permutation(V)  # id -> frequency rank, so ids carry no order
        unigram = (rank + 1.0) ** -self.zipf_exponent
        unigram /= unigram.sum()
        successor = np.stack([rng.choice(V, size=K, replace=False) for _ in range(V)])
        noise = np.exp(self.weight_sigma * rng.standard_normal((V, C, K)))
        weight = unigram[successor][:, None, :] * noise  # (V, C, K)
        cdf = np.cumsum(weight / weight.sum(-1, keepdims=True), axis=-1)
        cdf[..., -1] = 1.0
        token_class = rng.integers(C, size=V)
        return {"unigram": unigram, "successor": successor, "cdf": cdf, "token_class": token_class}

    def sample(self, n_chains: int, length: int, seed: int) -> np.ndarray:
        """Sample ``n_chains`` independent chains of ``length`` ids, shape (n_chains, length).

        The chains advance together, one vectorised step per position.
        """
        t = self.tables()
        rng = np.random.default_rng(seed)
        unigram_cdf = np.cumsum(t["unigram"])
        unigram_cdf[-1] = 1.0
        out = np.empty((n_chains, length), dtype=np.int64)
        out[:, 0] = np.searchsorted(unigram_cdf, rng.random(n_chains), side="right")
        out[:, 1] = np.searchsorted(unigram_cdf, rng.random(n_chains), side="right")
        for i in range(2, length):
            prev, prev2 = out[:, i - 1], out[:, i - 2]
            cdf = t["cdf"][prev, t["token_class"][prev2]]  # (n_chains, K)
            k = (rng.random(n_chains)[:, None] >= cdf).sum(-1)
            nxt = t["successor"][prev, k]
            from_unigram = rng.random(n_chains) < self.noise
            u = np.searchsorted(unigram_cdf, rng.random(n_chains), side="right")
            out[:, i] = np.where(from_unigram, u, nxt)
        return out


def frequency_bins(count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative frequencies and log2 frequency bins of a counts vector (Gradient Dissent §2).

    Parameters
    ----------
    count : (vocab,) non-negative integer counts.

    Returns
    -------
    frequency : (vocab,) float64, ``count / count.sum()``.
    bin : (vocab,) int64, ``floor(log2(frequency))``; ``UNSEEN_BIN`` where the count is 0.
    """
    count = np.asarray(count)
    if count.ndim != 1 or count.size == 0:
        raise ValueError(f"counts must be a non-empty vector, got shape {count.shape}")
    if (count < 0).any():
        raise ValueError("counts must be non-negative")
    total = count.sum()
    if total == 0:
        raise ValueError("counts are all zero: no token was seen in the training data")
    frequency = count / total
    with np.errstate(divide="ignore"):
        bins = np.floor(np.log2(frequency))
    bins = np.where(count > 0, bins, UNSEEN_BIN).astype(np.int64)
    return frequency, bins


def eval_windows(stream: np.ndarray, n_sequences: int, context_length: int) -> np.ndarray:
    """Cut ``n_sequences`` non-overlapping windows of ``context_length + 1`` ids from a stream.

    Returns an array of shape (n_sequences, context_length + 1): inputs are ``[:, :-1]`` and
    targets ``[:, 1:]``.
    """
    need = n_sequences * (context_length + 1)
    if n_sequences < 1 or context_length < 1:
        raise ValueError(
            "the evaluation set is empty: set eval.sequences and eval.context_length ≥ 1"
        )
    if stream.size < need:
        raise ValueError(
            f"the held-out stream has {stream.size} ids but the evaluation set needs {need}; "
            "lower eval.sequences or eval.context_length, or raise toy.heldout_tokens"
        )
    return stream[:need].reshape(n_sequences, context_length + 1)


# --- real evaluation data: text, Hugging Face datasets, pre-tokenized arrays ----------------


def read_texts(paths: list[str], text_field: str = "text") -> Iterator[str]:
    """Documents from local files: a ``.txt`` file is one document, a ``.jsonl`` file one
    document per line (its ``text_field``)."""
    for path in paths:
        if path.endswith(".jsonl"):
            with open(path) as fh:
                for i, line in enumerate(fh):
                    if line.strip():
                        record = json.loads(line)
                        if text_field not in record:
                            raise ValueError(
                                f"{path}:{i + 1} has no field {text_field!r}; set eval.text_field"
                            )
                        yield record[text_field]
        elif path.endswith(".txt"):
            with open(path) as fh:
                yield fh.read()
        else:
            raise ValueError(f"{path}: evaluation text files must be .txt or .jsonl")


def dataset_texts(spec: dict) -> Iterator[str]:
    """Documents of a Hugging Face dataset, streamed: ``spec`` has ``path`` (a hub name such as
    a Pile validation mirror, or a builder such as "json"), and optionally ``name``,
    ``split`` (default "validation"), ``text_column`` (default "text") and ``data_files``."""
    import datasets

    ds = datasets.load_dataset(
        spec["path"],
        spec.get("name"),
        split=spec.get("split", "validation"),
        data_files=spec.get("data_files"),
        streaming=True,
    )
    column = spec.get("text_column", "text")
    for record in ds:
        yield record[column]


def tokenize_stream(texts: Iterable[str], tokenizer, max_tokens: int) -> np.ndarray:
    """Concatenate the documents' token ids, each followed by the end-of-text id, up to
    ``max_tokens`` ids."""
    eos = tokenizer.eos_token_id
    parts, n = [], 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if eos is not None:
            ids = [*ids, eos]
        parts.append(np.asarray(ids, dtype=np.int64))
        n += len(ids)
        if n >= max_tokens:
            break
    if not parts:
        raise ValueError("the evaluation source holds no documents")
    return np.concatenate(parts)[:max_tokens]


def sample_windows(
    stream: np.ndarray, n_sequences: int, context_length: int, seed: int
) -> np.ndarray:
    """A seeded sample of ``n_sequences`` non-overlapping windows of ``context_length + 1`` ids.

    The same stream, size and seed give the same set V for every checkpoint of every model.
    """
    window = context_length + 1
    available = stream.size // window
    if n_sequences < 1 or context_length < 1:
        raise ValueError(
            "the evaluation set is empty: set eval.sequences and eval.context_length ≥ 1"
        )
    if available < n_sequences:
        raise ValueError(
            f"the evaluation source has {stream.size} tokens, {available} windows of "
            f"{window}, but eval.sequences asks for {n_sequences}; lower it or add data"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(available, n_sequences, replace=False))
    return stream[: available * window].reshape(available, window)[chosen]


def load_tokens(path: str) -> np.ndarray:
    """A pre-tokenized evaluation source: a ``.npy`` array of ids, a 1-D stream or 2-D windows."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{path}: expected a 1-D or 2-D integer array of token ids, got {arr.dtype} {arr.shape}"
        )
    return np.asarray(arr, dtype=np.int64)


# --- token counts: a counts vector, or Megatron .bin/.idx training shards --------------------

#: Megatron's MMapIndexedDataset: header magic, then version, dtype code, sequence/document counts.
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}


def read_megatron_index(idx_path: str) -> tuple[np.dtype, np.ndarray]:
    """The token dtype and the per-sequence sizes of a Megatron ``.idx`` file."""
    with open(idx_path, "rb") as fh:
        magic = fh.read(9)
        if magic != MEGATRON_MAGIC:
            raise ValueError(f"{idx_path} is not a Megatron .idx file (bad magic {magic!r})")
        (version,) = struct.unpack("<Q", fh.read(8))
        (code,) = struct.unpack("<B", fh.read(1))
        n_seq, _n_doc = struct.unpack("<QQ", fh.read(16))
        offset = fh.tell()
    if version != 1 or code not in MEGATRON_DTYPES:
        raise ValueError(f"{idx_path}: unsupported version {version} or dtype code {code}")
    sizes = np.memmap(idx_path, dtype=np.int32, mode="r", offset=offset, shape=(n_seq,))
    return np.dtype(MEGATRON_DTYPES[code]), np.asarray(sizes)


def count_megatron(prefixes: list[str], vocab_size: int, chunk_tokens: int = 1 << 26) -> np.ndarray:
    """Token counts of Megatron ``{prefix}.bin``/``{prefix}.idx`` shards, read in chunks of
    ``chunk_tokens`` ids through a memory map (memory stays bounded), with a progress line."""
    count = np.zeros(vocab_size, dtype=np.int64)
    for prefix in prefixes:
        dtype, sizes = read_megatron_index(f"{prefix}.idx")
        total = int(sizes.sum(dtype=np.int64))
        data = np.memmap(f"{prefix}.bin", dtype=dtype, mode="r")
        if data.size < total:
            raise ValueError(
                f"{prefix}.bin holds {data.size} tokens but its .idx lists {total}: truncated"
            )
        progress = Progress(log, total, "tokens", every=30.0)
        for lo in range(0, total, chunk_tokens):
            block = np.asarray(data[lo : min(lo + chunk_tokens, total)])
            if block.size and int(block.max()) >= vocab_size:
                raise ValueError(
                    f"{prefix}.bin holds id {int(block.max())} ≥ frequency.vocab_size {vocab_size}"
                )
            count += np.bincount(block, minlength=vocab_size)
            progress.update(min(lo + chunk_tokens, total))
    return count


def load_counts(path: str, vocab_size: int) -> np.ndarray:
    """A counts vector (``.npy``, one count per id), padded with zeros to ``vocab_size`` (the
    model's output size, which may exceed the tokenizer's: padded ids are never seen)."""
    count = np.load(path, allow_pickle=False)
    if count.ndim != 1:
        raise ValueError(f"{path}: a counts vector must be 1-D, got shape {count.shape}")
    if count.size > vocab_size:
        raise ValueError(f"{path} has {count.size} counts but frequency.vocab_size is {vocab_size}")
    return np.pad(count.astype(np.int64), (0, vocab_size - count.size))


# --- the Zarr layer -------------------------------------------------------------------------


def toy_streams(language: ToyLanguage, train_tokens: int, heldout_tokens: int) -> dict:
    """The toy corpus: ``train`` and ``heldout`` id streams (int32), sampled as chains of 1,024
    ids from the language's seed (the held-out chains from a different seed)."""
    chain_length = 1024
    streams = {}
    for name, n, seed_offset in (("train", train_tokens, 1), ("heldout", heldout_tokens, 2)):
        n_chains = -(-n // chain_length)
        log.info("sampling %s stream: %d chains x %d ids", name, n_chains, chain_length)
        ids = language.sample(n_chains, chain_length, seed=language.seed + seed_offset)
        streams[name] = ids.reshape(-1)[:n].astype(np.int32)
    return streams


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


def write_frequency(count: np.ndarray, path: str, source: str) -> xr.Dataset:
    """Write ``count``, ``frequency`` and ``bin`` over the ``vocab`` dimension."""
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
        attrs={"source": source, "unseen_bin": UNSEEN_BIN},
    )
    write_zarr(ds, path)
    return ds


def write_eval(windows: np.ndarray, bins: np.ndarray, path: str, source: str) -> None:
    """Write the evaluation set: ``input_ids``/``targets`` (sequence, position) and per token
    (the flattened (sequence, position) pairs) its ``target`` id and frequency ``bin``."""
    inputs, targets = windows[:, :-1], windows[:, 1:]
    if targets.max() >= bins.size or targets.min() < 0:
        raise ValueError(
            f"evaluation ids span {targets.min()}..{targets.max()} but the frequency table has "
            f"{bins.size} ids; use the same tokenizer for both"
        )
    target = targets.reshape(-1)
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


def _asdict(obj) -> dict:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}


# --- the stage's entry points: a config section in, a store out ------------------------------


def load_tokenizer(spec: dict):
    """The tokenizer of ``spec``: ``{"path": dir}`` or ``{"repo_id": …, "revision": …}`` (fetched
    into the hub cache like a checkpoint); no remote code."""
    from transformers import AutoTokenizer

    if "path" in spec:
        path = spec["path"]
    else:
        from huggingface_hub import snapshot_download

        from pipeline.checkpoints import CONFIG_FILES, TOKENIZER_FILES

        path = snapshot_download(
            spec["repo_id"],
            revision=spec.get("revision", "main"),
            allow_patterns=CONFIG_FILES + TOKENIZER_FILES,
        )
    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def build_eval(
    spec: dict, frequency_path: str, out_path: str, corpus_path: str | None = None
) -> None:
    """Build the evaluation set of the ``eval`` config section and write ``eval.zarr``."""
    bins = xr.open_zarr(frequency_path)["bin"].values
    n, L, seed = spec["sequences"], spec["context_length"], spec.get("seed", 0)
    source = spec["source"]
    if source == "toy":
        windows = eval_windows(xr.open_zarr(corpus_path)["heldout"].values, n, L)
        label = "toy held-out stream"
    elif source in ("text", "dataset"):
        tokenizer = load_tokenizer(spec["tokenizer"])
        pool = spec.get("pool_tokens") or 4 * n * (L + 1)
        if source == "text":
            texts, label = read_texts(spec["paths"], spec.get("text_field", "text")), "text files"
        else:
            texts, label = dataset_texts(spec["dataset"]), f"dataset {spec['dataset']['path']}"
        stream = tokenize_stream(texts, tokenizer, pool)
        log.info("tokenized %d ids from %s", stream.size, label)
        windows = sample_windows(stream, n, L, seed)
    elif source == "tokens":
        arr = load_tokens(spec["path"])
        if arr.ndim == 1:
            windows = sample_windows(arr, n, L, seed)
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
        train = xr.open_zarr(corpus_path)["train"].values
        count, label = np.bincount(train, minlength=vocab or int(train.max()) + 1), "toy corpus"
    elif source == "counts":
        count, label = load_counts(spec["path"], vocab), spec["path"]
    elif source == "megatron":
        count, label = count_megatron(spec["paths"], vocab), "Megatron shards"
    else:
        raise ValueError(f"frequency.source {source!r} is not one of toy, counts, megatron")
    write_frequency(count, out_path, source=label)
