"""Readers of the real suites' external inputs: evaluation text, Hugging Face datasets,
pre-tokenized arrays, tokenizers, counts vectors and Megatron training shards.

Each reader turns one external format into numpy (ids, counts) or a stream of documents, and
names the file in its errors; ``pipeline.data`` builds the stores from them.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Iterator

import numpy as np

from pipeline.logs import Progress

log = logging.getLogger(__name__)


# --- evaluation text: local files, Hugging Face datasets, pre-tokenized arrays ------------------


def read_texts(paths: list[str], text_field: str = "text") -> Iterator[str]:
    """Documents from local files: a ``.txt`` file is one document, a ``.jsonl`` file one
    document per line (its ``text_field``). Files are UTF-8; an error names the file and line."""
    for path in paths:
        if not path.endswith((".jsonl", ".txt")):
            raise ValueError(f"{path}: evaluation text files must be .txt or .jsonl")
        with open(path, encoding="utf-8") as fh:
            try:
                if path.endswith(".txt"):
                    yield fh.read()
                    continue
                for i, line in enumerate(fh, start=1):
                    if line.strip():
                        yield _jsonl_text(line, text_field, f"{path}:{i}")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path} is not UTF-8 text ({err.reason} at byte {err.start} of a block); "
                    "convert it to UTF-8"
                ) from err


def _jsonl_text(line: str, text_field: str, where: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON ({err.msg}, column {err.colno})") from err
    if not isinstance(record, dict) or text_field not in record:
        raise ValueError(f"{where} has no field {text_field!r}; set eval.text_field")
    if not isinstance(record[text_field], str):
        raise ValueError(f"{where}: field {text_field!r} is not a string")
    return record[text_field]


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


def tokenize_stream(
    texts: Iterable[str], tokenizer, max_tokens: int, eos: int | None = None
) -> np.ndarray:
    """Concatenate the documents' token ids, each followed by the end-of-text id (``eos``, by
    default the tokenizer's), up to ``max_tokens`` ids."""
    eos = tokenizer.eos_token_id if eos is None else eos
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


def ids_beyond(tokenizer, counted: int) -> list[tuple[int, str, bool]]:
    """The tokenizer's ids at or above ``counted`` (those the frequency counts do not cover):
    (id, token string, whether transformers added it, not the tokenizer's own vocabulary)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return [
        (i, str(tokenizer.convert_ids_to_tokens(i)), i in added)
        for i in range(counted, len(tokenizer))
    ]


def check_tokenizer(tokenizer, counted: int, where: str, counts: str) -> None:
    """Refuse a tokenizer whose own vocabulary reaches beyond the frequency counts (``counted``
    ids, from ``counts``): the counts were made with another tokenizer. Ids beyond them that
    transformers added (a pad token the tokenizer file lacks: GPT-NeoX's ``<|padding|>``) are
    only warned about here; ``check_stream`` refuses them if the text produces them."""
    from pipeline.logs import console_warning

    beyond = ids_beyond(tokenizer, counted)
    own = [b for b in beyond if not b[2]]
    if own:
        listing = ", ".join(f"{i} {t!r}" for i, t, _ in own[:5])
        raise ValueError(
            f"the tokenizer ({where}) has {len(tokenizer)} ids, and its own vocabulary reaches "
            f"beyond the {counted} ids the frequency counts ({counts}) cover: {listing}"
            f"{' …' if len(own) > 5 else ''}. The counts come from another tokenizer (or a "
            "modified copy of it): use the tokenizer the counts were made with"
        )
    if beyond:
        listing = ", ".join(f"{i} {t!r}" for i, t, _ in beyond[:5])
        console_warning(
            log,
            f"the tokenizer ({where}) has {len(tokenizer)} ids, {len(beyond)} more than the "
            f"frequency counts ({counts}) cover: {listing}, added by transformers as special "
            "tokens (not in the tokenizer's own vocabulary). They are fine as long as the text "
            "never produces them (checked); to be rid of them, set the tokenizer's pad_token to "
            "an existing token (e.g. its eos token)",
        )


def check_stream(stream: np.ndarray, tokenizer, counted: int, where: str) -> None:
    """Refuse a tokenized stream holding ids the frequency counts do not cover, naming them."""
    bad = np.unique(stream[stream >= counted])
    if bad.size:
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        listing = ", ".join(
            f"{int(i)} {tokenizer.convert_ids_to_tokens(int(i))!r}"
            + (" (added by transformers as a special token)" if int(i) in added else "")
            for i in bad[:5]
        )
        raise ValueError(
            f"the text tokenized with {where} holds ids the frequency counts do not cover "
            f"({counted} ids): {listing}. Set eval.tokenizer.eos_id (or the tokenizer's "
            "pad_token) to an id the counts cover, or remove that token from the text"
        )


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


# --- tokenizers ------------------------------------------------------------------------------


def load_tokenizer(spec: dict):
    """The tokenizer of ``spec``: ``{"path": dir}`` or ``{"repo_id": …, "revision": …}`` (fetched
    into the hub cache like a checkpoint); no remote code."""
    from transformers import AutoTokenizer

    if "path" in spec:
        path = spec["path"]
    else:
        from pipeline.checkpoints import hub_snapshot
        from pipeline.formats.transformers import CONFIG_FILES, TOKENIZER_FILES

        path = hub_snapshot(
            spec["repo_id"],
            spec.get("revision", "main"),
            CONFIG_FILES + TOKENIZER_FILES,
            "the evaluation tokenizer (eval.tokenizer)",
        )
    from pipeline import provenance
    from pipeline.formats.transformers import TOKENIZER_FILES

    identity = {**spec, "files_sha256": provenance.directory_sha256(path, TOKENIZER_FILES)}
    if "repo_id" in spec:
        identity["commit"] = provenance.snapshot_commit(path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    identity["ids"] = len(tokenizer)
    provenance.add("tokenizer", identity)
    log.info("tokenizer %s", identity)
    return tokenizer


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
    """A counts vector (``.npy``, one integer count per id), padded with zeros to ``vocab_size``
    (the model's output size, which may exceed the tokenizer's: padded ids are never seen);
    checked by ``check_counts``."""
    return check_counts(np.load(path, allow_pickle=False), vocab_size, path)


def check_counts(
    count: np.ndarray, vocab_size: int, where: str, limit: str = "frequency.vocab_size"
) -> np.ndarray:
    """``count`` (one count per id) as int64, padded with zeros to ``vocab_size``.

    Refused with a message naming ``where`` (the file or argument it came from): a non-vector,
    NaN or infinite entries, negative counts, non-integer counts (relative frequencies are not
    counts: a cast would truncate them and move ids between bins), and more counts than
    ``vocab_size`` (``limit`` says what sets it).
    """
    count = np.asarray(count)
    if count.ndim != 1 or count.size == 0:
        raise ValueError(
            f"{where}: a counts vector must be a non-empty 1-D array, got {count.shape}"
        )
    if not (np.issubdtype(count.dtype, np.integer) or np.issubdtype(count.dtype, np.floating)):
        raise ValueError(f"{where}: counts must be numbers, got dtype {count.dtype}")
    if np.issubdtype(count.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(count))
        if bad.size:
            raise ValueError(
                f"{where} holds NaN or infinite counts at {bad.size} ids (first: {bad[0]})"
            )
        frac = np.flatnonzero(count != np.round(count))
        if frac.size:
            raise ValueError(
                f"{where} holds non-integer counts at {frac.size} ids (id {frac[0]}: "
                f"{count[frac[0]]:g}); it looks like relative frequencies: give integer counts"
            )
    negative = np.flatnonzero(count < 0)
    if negative.size:
        raise ValueError(
            f"{where} holds negative counts at {negative.size} ids (first: {negative[0]})"
        )
    if count.size > vocab_size:
        raise ValueError(
            f"{where} has {count.size} counts but {limit} is {vocab_size}; give one count per "
            "id of the models' vocabulary"
        )
    return np.pad(count.astype(np.int64), (0, vocab_size - count.size))


def download_verified(url: str, sha256: str, out_path: str, timeout: float = 60.0) -> None:
    """Download ``url`` to ``out_path`` (atomically) if its sha256 is ``sha256``.

    A download that cannot be made (offline, a refused connection, an HTTP error) names the URL
    and where to put the file by hand; a file with another checksum is refused.
    """
    import hashlib
    import os
    import urllib.error
    import urllib.request
    from pathlib import Path

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as fh:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                fh.write(block)
        if digest.hexdigest() != sha256:
            raise ValueError(
                f"{url} has sha256 {digest.hexdigest()}, not the configured {sha256}; the file "
                "changed upstream: check it, then set frequency.sha256"
            )
        os.replace(tmp, out)
        log.info("downloaded %s to %s (sha256 %s)", url, out, sha256)
    except (urllib.error.URLError, OSError) as err:
        raise OSError(
            f"cannot download {url} ({getattr(err, 'reason', err)}). On a machine with network "
            f"access, download it and put it at {out} (its sha256 must be {sha256})"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
