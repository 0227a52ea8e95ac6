"""A plain transformers model directory (``save_pretrained``): ``config.json`` and safetensors
weights (one file, or shards with ``model.safetensors.index.json``), ``.bin`` pickles only with
the ``allow_pickle`` opt-in; a tokenizer beside them where the suite ships one.

Its optimizer state, where there is one, is this project's own (``optimizer.json`` +
``optimizer.safetensors``, written by the toy suite's training; ``pipeline.optimizer``). It has
no training-loss log of its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

NAME = "transformers"
DESCRIPTION = "a transformers model directory: config.json and safetensors weights"

CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
]
SAFETENSORS_FILES = ["*.safetensors", "*.safetensors.index.json"]
PICKLE_FILES = ["*.bin", "*.bin.index.json"]  # only with an explicit opt-in (allow_pickle)
#: whether its checkpoints are expected to carry an optimizer state, and whether that state is
#: a pickle (read only with allow_pickle)
OPTIMIZER_FILE = "optimizer.json"  # pipeline.optimizer.STATE_FILE (beside optimizer.safetensors)
OPTIMIZER_EXPECTED = False
OPTIMIZER_PICKLED = False
#: whether every file it reads is a pickle (read only with allow_pickle)
PICKLES_ONLY = False
TRAIN_LOG = None


def patterns(allow_pickle: bool = False) -> list[str]:
    """Config, tokenizer and weights (safetensors; pickles only with the opt-in)."""
    return (
        CONFIG_FILES + TOKENIZER_FILES + SAFETENSORS_FILES + (PICKLE_FILES if allow_pickle else [])
    )


def matches(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").exists()


#: this project's optimizer moments (``pipeline.optimizer.MOMENTS_FILE``): safetensors, not weights
MOMENTS_FILE = "optimizer.safetensors"


def _safetensors(path: Path) -> list[Path]:
    return sorted(f for f in path.glob("*.safetensors") if f.name != MOMENTS_FILE)


def weight_files(path: str | os.PathLike) -> list[Path]:
    """The weight files: safetensors (every shard; not the optimizer's moments), else pickle
    (.bin) files."""
    path = Path(path)
    files = _safetensors(path) or sorted(path.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"no weights (.safetensors or .bin) in {path}")
    return files


def problem(path: str | os.PathLike, allow_pickle: bool = False) -> str | None:
    """Why ``path`` is not a complete model directory (no config, no weights, a shard that its
    index names but that is missing), or None."""
    path = Path(path)
    if not (path / "config.json").exists():
        return "no config.json"
    weights = _safetensors(path) or (list(path.glob("*.bin")) if allow_pickle else [])
    if not weights:
        return "no .safetensors weights" + ("" if allow_pickle else " (.bin needs allow_pickle)")
    for index in path.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, OSError):
            return f"{index.name} is not a valid shard index (still being written?)"
        missing = sorted(s for s in shards if not (path / s).exists())
        if missing:
            return f"{index.name} names shards that are missing: {', '.join(missing[:3])}"
    return None


def linked_files(src: Path) -> list[Path]:
    """Everything but config.json, which is written (copied) beside the links."""
    return [f for f in sorted(src.iterdir()) if f.is_file() and f.name != "config.json"]


def write_config(src: Path, dst: Path) -> None:
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())


def load_model(path: str | os.PathLike, dtype, allow_pickle: bool = False):
    """``AutoModelForCausalLM.from_pretrained``: safetensors (sharded or not), ``.bin`` only with
    ``allow_pickle`` and then with ``weights_only`` loading; no remote code."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        use_safetensors=None if allow_pickle else True,
        trust_remote_code=False,
        weights_only=True,
    )


def has_optimizer(path: str | os.PathLike) -> bool:
    from pipeline.optimizer import STATE_FILE

    return (Path(path) / STATE_FILE).exists()


def read_optimizer(path: str | os.PathLike, model=None, allow_pickle: bool = False, **_):
    """This project's own optimizer files (``pipeline.optimizer.read_state``)."""
    from pipeline.optimizer import read_state

    return read_state(path)


def read_train_log(path: str | os.PathLike):
    raise ValueError(f"{path}: a transformers directory has no training-loss log")
