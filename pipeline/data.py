"""The data stage: the toy language, token-frequency bins and the evaluation set V.

* ``ToyLanguage`` is the embedded default's synthetic language: Zipfian unigram frequencies and a
  sparse second-order Markov chain whose conditional distributions have far more rank than the
  small models' hidden size, so small models hit the softmax bottleneck while large ones keep
  learning (DESIGN.md, "Embedded default").
* ``frequency_bins`` implements Gradient Dissent §2: ``f_j = count_j / Σ count``,
  ``bin_j = floor(log2 f_j)``; ids never seen form their own bin, ``UNSEEN_BIN``.
* ``eval_set`` cuts a held-out stream into (context, target) windows.

The functions here are pure (numpy in, numpy out); ``write_*`` functions add the labels and write
the Zarr stores of ``results/data/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import xarray as xr

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


# --- the Zarr layer -------------------------------------------------------------------------


def write_corpus(language: ToyLanguage, train_tokens: int, heldout_tokens: int, path: str) -> None:
    """Sample the toy corpus (a training and a held-out stream) and write it as a Zarr store."""
    chain_length = 1024
    streams = {}
    for name, n, seed_offset in (("train", train_tokens, 1), ("heldout", heldout_tokens, 2)):
        n_chains = -(-n // chain_length)
        log.info("sampling %s stream: %d chains x %d ids", name, n_chains, chain_length)
        ids = language.sample(n_chains, chain_length, seed=language.seed + seed_offset)
        streams[name] = ids.reshape(-1)[:n].astype(np.int32)
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
