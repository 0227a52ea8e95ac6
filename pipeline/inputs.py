"""The run's own input files, checked when the DAG is built, before any job deletes the store it
would replace: frequency counts (a vector of integer counts), Megatron shards (their index, their
size and their id range), token arrays (integer ids, 1-D or 2-D, none negative) and text files
(UTF-8, valid JSON lines with the text field).

Each file is read in full once: what passed is remembered in ``results/.input-checks.json`` by
path, size and modification time, so a re-run with unchanged inputs reads none of them again.
A bad file is a ``ConfigError`` that names the config key, the file, what is wrong and the fix.
Files a rule makes (counts fetched from a URL) are checked by that rule.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pipeline import sources
from pipeline.config import ConfigError

CACHE = "results/.input-checks.json"


def _stamp(path: str) -> list:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _check_counts(path: str, spec: dict) -> None:
    sources.load_counts(path, spec.get("vocab_size") or np.iinfo(np.int64).max // 2)


def _check_tokens(path: str, spec: dict) -> None:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{path}: expected a 1-D or 2-D integer array of token ids, got {arr.dtype} {arr.shape}"
        )
    flat = arr.reshape(-1)
    for lo in range(0, flat.size, 1 << 26):
        block = np.asarray(flat[lo : lo + (1 << 26)])
        if block.size and int(block.min()) < 0:
            raise ValueError(f"{path} holds a negative token id ({int(block.min())})")


def _check_text(path: str, spec: dict) -> None:
    for _ in sources.read_texts([path], spec.get("text_field", "text")):
        pass


def _check_shard(prefix: str, spec: dict) -> None:
    dtype, sizes = sources.read_megatron_index(f"{prefix}.idx")
    total = int(sizes.sum(dtype=np.int64))
    data = np.memmap(f"{prefix}.bin", dtype=dtype, mode="r")
    if data.size < total:
        raise ValueError(
            f"{prefix}.bin holds {data.size} tokens but its .idx lists {total}: truncated"
        )
    vocab = spec.get("vocab_size")
    for lo in range(0, total, 1 << 26):
        block = np.asarray(data[lo : min(lo + (1 << 26), total)])
        if block.size and vocab is not None and int(block.max()) >= vocab:
            raise ValueError(f"{prefix}.bin holds id {int(block.max())} ≥ vocab_size {vocab}")


def files(config: dict) -> list[tuple[str, str, object, dict]]:
    """(config key, file, check, section) of every local input file the config names."""
    out = []
    freq = config["frequency"]
    if freq["source"] == "counts" and not freq.get("url"):
        out.append(("frequency.path", freq["path"], _check_counts, freq))
    if freq["source"] == "megatron":
        out += [("frequency.paths", p, _check_shard, freq) for p in freq["paths"]]
    for key, spec in (
        ("eval", config["eval"]),
        ("update.data", (config.get("update") or {}).get("data")),
    ):
        if not spec:
            continue
        if spec["source"] == "tokens":
            out.append((f"{key}.path", spec["path"], _check_tokens, spec))
        if spec["source"] == "text":
            out += [(f"{key}.paths", p, _check_text, spec) for p in spec["paths"]]
    return out


def check(config: dict, cache: str | os.PathLike = CACHE) -> None:
    """Check every input file of ``config`` not already checked as it is now."""
    cache = Path(cache)
    try:
        done = json.loads(cache.read_text())
    except (OSError, ValueError):
        done = {}
    changed = False
    for key, path, check_file, spec in files(config):
        shard = check_file is _check_shard
        present = [f"{path}.bin", f"{path}.idx"] if shard else [path]
        missing = [p for p in present if not Path(p).exists()]
        if missing:
            raise ConfigError(f"{key}: {missing[0]} does not exist; fix the path")
        stamp = [_stamp(p) for p in present]
        if done.get(path) == stamp:
            continue
        try:
            check_file(path, spec)
        except (ValueError, OSError) as err:
            raise ConfigError(
                f"{key}: {err}. Fix or replace the file; no job has run, and the stores made "
                "from the previous input are untouched"
            ) from None
        done[path] = stamp
        changed = True
    if changed:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(done, indent=1))
        os.replace(tmp, cache)
