"""A local Hugging Face hub cache, laid out exactly as ``huggingface_hub`` lays it out, for tests
that must not reach the network (``HF_HUB_OFFLINE=1``)::

    {cache}/models--{org}--{name}/
        blobs/{sha256 of the file}           the files' contents, shared across revisions
        snapshots/{commit}/{file}            relative symlinks into blobs/
        refs/{revision}                      the commit a branch points to

Revisions hold tiny GPT-NeoX checkpoints with Pythia's tensor names (``gpt_neox.*``,
``embed_out``), a padded vocabulary, and a byte-level BPE tokenizer trained here.

``write_megatron`` writes the other input of a real suite, a Megatron training shard pair (the
frequency source of Pythia's preset), in its on-disk format.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

TEXT = (
    "the model learns the frequent tokens first and the rare tokens late. "
    "loss curves decelerate when per token changes cancel out. "
    "a small model saturates on the long tail of the vocabulary. "
) * 20


def make_tokenizer(out_dir: Path, vocab_size: int = 120):
    """Train a byte-level BPE tokenizer on ``TEXT`` and save it in the transformers format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(out_dir)
    return fast


def make_model_files(out_dir: Path, seed: int, vocab_size: int = 320) -> None:
    """A tiny random GPT-NeoX (Pythia's architecture), saved with ``save_pretrained``."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab_size,  # padded beyond the tokenizer, as Pythia's 50,304 rows are
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        rotary_pct=0.25,
        tie_word_embeddings=False,
    )
    GPTNeoXForCausalLM(cfg).save_pretrained(out_dir, safe_serialization=True)


def add_revision(cache: Path, repo_id: str, revision: str, files: dict[str, bytes]) -> str:
    """Store ``files`` as ``revision`` of ``repo_id`` in ``cache``; returns the commit hash."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(revision.encode() + b"".join(sorted(files.values()))).hexdigest()
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for name, content in files.items():
        etag = hashlib.sha256(content).hexdigest()
        blob = storage / "blobs" / etag
        if not blob.exists():
            blob.write_bytes(content)
        link = snapshot / name  # a name may have folders (a Trainer run's checkpoint-N/…)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    return commit


def build_suite(cache: Path, repo_id: str, steps: list[int], same_as: dict[int, int] | None = None):
    """Revisions ``step{N}`` of a tiny suite; ``same_as`` maps a step to an earlier step whose
    weights it repeats (as several Pythia branches do). Returns the tokenizer."""
    same_as = same_as or {}
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        tokenizer = make_tokenizer(tok_dir)
        tok_files = {f.name: f.read_bytes() for f in tok_dir.iterdir()}
        for step in steps:
            model_dir = Path(tmp) / f"step{step}"
            make_model_files(model_dir, seed=same_as.get(step, step))
            files = {f.name: f.read_bytes() for f in model_dir.iterdir()}
            add_revision(cache, repo_id, f"step{step}", {**files, **tok_files})
    return tokenizer


def write_megatron(prefix: str | os.PathLike, docs: list[np.ndarray]) -> None:
    """A Megatron MMapIndexedDataset shard pair in the real on-disk format (uint16 tokens)."""
    sizes = np.array([d.size for d in docs], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1]) * 2]).astype(np.int64)
    with open(f"{prefix}.idx", "wb") as fh:
        fh.write(b"MMIDIDX\x00\x00")
        fh.write(struct.pack("<Q", 1))
        fh.write(struct.pack("<B", 8))  # uint16
        fh.write(struct.pack("<Q", len(docs)))
        fh.write(struct.pack("<Q", len(docs) + 1))
        fh.write(sizes.tobytes())
        fh.write(pointers.tobytes())
        fh.write(np.arange(len(docs) + 1, dtype=np.int64).tobytes())
    np.concatenate(docs).astype(np.uint16).tofile(f"{prefix}.bin")
