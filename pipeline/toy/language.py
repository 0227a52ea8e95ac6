"""The toy languages: seeded synthetic languages with Zipfian (or uniform) unigrams.

* ``markov`` (the default): a sparse second-order Markov chain whose conditional distributions
  have far more rank than the small models' hidden size, so that small models hit the softmax
  bottleneck while large ones keep learning.
* ``spam``: Godey & Artzi's SpamLang, in which every chain repeats one id drawn from the
  unigram distribution: trivial to predict after the first id, yet the output layer must map
  each of the V ids back to itself through the model's d dimensions.

``toy_streams`` samples the corpus (a training and a held-out stream); ``eval_windows`` cuts the
evaluation set V from the held-out stream; ``update_batches`` draws the fixed batches the update
stage takes its single optimizer steps on. Pure numpy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.declare import setting

log = logging.getLogger(__name__)


#: The kinds of toy language.
KINDS = ("markov", "spam")


@dataclass(frozen=True)
class ToyLanguage:
    """A seeded synthetic language: Zipfian unigrams and, for ``kind="markov"``, a sparse
    second-order Markov chain; for ``kind="spam"`` every chain is one id repeated.

    A corpus is sampled as independent chains of ``chain_length`` ids. In the Markov language
    the next id depends on the previous id (which of ``successors`` ids may follow) and on a
    class of the id two back (``context_classes`` different weightings of those successors);
    with probability ``noise`` it is instead drawn from the unigram distribution, so that every id
    occurs. Successor weights are proportional to the unigram probability times log-normal noise
    of width ``weight_sigma``, which keeps the marginal frequencies Zipfian. In SpamLang the
    chain's id is drawn from the unigram distribution (``zipf_exponent=0``: uniform) and the
    Markov keys are unused; a chain as long as the evaluation window (context + 1) makes every
    evaluation sequence one id, with nothing left to chance after its first position.
    ``dead_ids`` gives either kind a dead tail, as a BPE vocabulary has: its rarest ids almost
    never occur (in the Markov chain as successors too, whose weights follow the unigram).
    """

    vocab_size: int = setting(2048, "number of token ids (the models' vocabulary)")
    zipf_exponent: float = setting(
        1.0, "the unigram frequency of the id of rank r ∝ r^-zipf_exponent"
    )
    successors: int = setting(32, "markov: ids that may follow a given id")
    context_classes: int = setting(8, "markov: classes of the id two back, each reweighting them")
    weight_sigma: float = setting(1.5, "markov: width of the log-normal noise on successor weights")
    noise: float = setting(0.05, "markov: probability that the next id is a unigram draw")
    seed: int = setting(0, "seed of the language's tables and of its streams")
    kind: str = setting("markov", "markov, or spam (every chain one unigram-drawn id, repeated)")
    chain_length: int = setting(1024, "ids per independently sampled chain of the corpus")
    dead_ids: int = setting(0, "a dead tail: the rarest ids' unigram weight times dead_weight")
    dead_weight: float = setting(1e-4, "the dead tail's weight factor (with dead_ids)")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"toy language kind {self.kind!r} is not one of {', '.join(KINDS)}")

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
        rng.permutation(V)  # id -> frequency rank (``unigram``), so ids carry no order
        unigram = self.unigram()
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
        if self.kind == "spam":
            return np.repeat(self._unigram_draws(n_chains, seed)[:, None], length, axis=1)
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

    def log_prob_matrix(self) -> np.ndarray:
        """The true next-id log-probabilities, one row per context the generator conditions on
        (float64): for the Markov language, (previous id, class of the id two back), V·C rows;
        for SpamLang, the previous id, V rows, a chain ending after an id with probability
        1/chain_length (when the next id is a fresh draw from the unigram distribution)."""
        V = self.vocab_size
        unigram = self.unigram()
        if self.kind == "spam":
            switch = 1.0 / self.chain_length
            p = np.tile(switch * unigram, (V, 1))
            p[np.arange(V), np.arange(V)] += 1.0 - switch
            return np.log(p)
        t = self.tables()
        C = self.context_classes
        weights = np.diff(t["cdf"], axis=-1, prepend=0.0)  # (V, C, K) successor probabilities
        p = np.tile(self.noise * unigram, (V, C, 1))
        rows = np.arange(V)[:, None, None]
        cls = np.arange(C)[None, :, None]
        np.add.at(p, (rows, cls, t["successor"][:, None, :]), (1 - self.noise) * weights)
        return np.log(p.reshape(V * C, V))

    def unigram(self) -> np.ndarray:
        """The unigram distribution: id of frequency rank r ∝ r^-zipf_exponent, ids permuted;
        the ``dead_ids`` rarest ids' weights multiplied by ``dead_weight``."""
        rank = np.random.default_rng(self.seed).permutation(self.vocab_size)
        p = (rank + 1.0) ** -self.zipf_exponent
        p[rank >= self.vocab_size - self.dead_ids] *= self.dead_weight
        return p / p.sum()

    def _unigram_draws(self, n: int, seed: int) -> np.ndarray:
        cdf = np.cumsum(self.unigram())
        cdf[-1] = 1.0
        return np.searchsorted(cdf, np.random.default_rng(seed).random(n), side="right")


def toy_streams(language: ToyLanguage, train_tokens: int, heldout_tokens: int) -> dict:
    """The toy corpus: ``train`` and ``heldout`` id streams (int32), sampled as chains of
    ``language.chain_length`` ids from the language's seed (the held-out chains from a
    different seed)."""
    chain_length = language.chain_length
    streams = {}
    for name, n, seed_offset in (("train", train_tokens, 1), ("heldout", heldout_tokens, 2)):
        n_chains = -(-n // chain_length)
        log.info("sampling %s stream: %d chains x %d ids", name, n_chains, chain_length)
        ids = language.sample(n_chains, chain_length, seed=language.seed + seed_offset)
        streams[name] = ids.reshape(-1)[:n].astype(np.int32)
    return streams


def update_batches(
    language: ToyLanguage, n_batches: int, batch_size: int, window: int
) -> np.ndarray:
    """``n_batches`` fixed batches of ``batch_size`` windows of ``window`` ids, shape
    (n_batches, batch_size, window): drawn like training windows (a random offset into a chain
    of the language's) but from chains of their own seed, so outside the training stream."""
    chain_length = language.chain_length
    if window > chain_length:
        raise ValueError(f"update batches of {window}-id windows exceed the chains' {chain_length}")
    n = n_batches * batch_size
    chains = language.sample(n, chain_length, seed=language.seed + 3)
    offsets = np.random.default_rng(language.seed + 3).integers(0, chain_length - window + 1, n)
    windows = np.stack([c[o : o + window] for c, o in zip(chains, offsets)])
    return windows.reshape(n_batches, batch_size, window).astype(np.int32)


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
