"""Frequency bins, the toy language and the evaluation windows."""

import numpy as np
import pytest

from pipeline.maths.frequency import UNSEEN_BIN, frequency_bins, rank_frequency, zipf_fit
from pipeline.toy.language import ToyLanguage, eval_windows, toy_streams
from pipeline.toy.schedule import pythia_schedule
from tests.reference import UNSEEN, frequency_bins_by_id


def test_frequency_bins_match_a_per_id_loop():
    count = np.array([0, 1, 2, 3, 1000, 7, 0, 64, 2**20, 5])
    frequency, bins = frequency_bins(count)
    ref_frequency, ref_bins = frequency_bins_by_id(count)
    assert UNSEEN_BIN == UNSEEN
    assert bins.tolist() == ref_bins
    np.testing.assert_array_equal(frequency, ref_frequency)
    assert bins.dtype == np.int64


def test_frequency_bins_reject_bad_counts():
    with pytest.raises(ValueError, match="all zero"):
        frequency_bins(np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="non-negative"):
        frequency_bins(np.array([1, -1]))


def test_toy_language_is_zipfian_and_deterministic():
    lang = ToyLanguage(vocab_size=2048, seed=3)
    a = lang.sample(64, 512, seed=1)
    np.testing.assert_array_equal(a, lang.sample(64, 512, seed=1))
    assert a.min() >= 0 and a.max() < 2048
    count = np.bincount(a.reshape(-1), minlength=2048)
    _, bins = frequency_bins(count)
    assert np.unique(bins[bins != UNSEEN_BIN]).size >= 10
    # the frequency of the id of unigram rank r falls like a power of r: fit its exponent
    unigram = lang.tables()["unigram"]
    order = np.argsort(-unigram)[:256]
    ranks = np.arange(1, 257)
    slope = np.polyfit(np.log(ranks), np.log(count[order] + 1), 1)[0]
    assert -1.4 < slope < -0.6


def test_toy_language_has_sequential_structure():
    # the conditional entropy given the previous id is far below the unigram entropy
    lang = ToyLanguage(vocab_size=256, successors=8, noise=0.0, seed=0)
    x = lang.sample(256, 256, seed=0)
    prev, nxt = x[:, 1:-1].reshape(-1), x[:, 2:].reshape(-1)
    pairs = np.unique(np.stack([prev, nxt]), axis=1)
    # without noise, each id is followed only by its successors
    assert pairs.shape[1] <= 256 * 8


def test_spamlang_repeats_one_uniformly_drawn_id_per_chain():
    from scipy.stats import chisquare

    lang = ToyLanguage(vocab_size=64, zipf_exponent=0.0, kind="spam", chain_length=9)
    x = lang.sample(6400, 9, seed=5)
    assert (x == x[:, :1]).all()  # every chain is one id
    np.testing.assert_array_equal(x, lang.sample(6400, 9, seed=5))
    # drawn uniformly: a chi-square test of the chains' ids against equal counts
    assert chisquare(np.bincount(x[:, 0], minlength=64)).pvalue > 1e-3
    # the streams are cut into chains of chain_length, so eval windows of that length are whole
    streams = toy_streams(lang, 9 * 100, 9 * 20)
    w = eval_windows(streams["heldout"], 20, 8)
    assert (w == w[:, :1]).all()
    # zipf_exponent > 0: the chains' ids follow the unigram distribution
    zipf = ToyLanguage(vocab_size=64, kind="spam", zipf_exponent=1.0)
    ids = zipf.sample(20000, 2, seed=0)[:, 0]
    p = np.bincount(ids, minlength=64) / ids.size
    np.testing.assert_allclose(p, zipf.unigram(), atol=0.01)


def test_the_markov_language_ignores_the_new_keys_defaults():
    """The chain's kind and length default to the language the embedded default always had: the
    same chains as the unigram and successor tables say, 1,024 ids each."""
    lang = ToyLanguage(vocab_size=128, successors=8, seed=2)
    assert lang.kind == "markov" and lang.chain_length == 1024
    np.testing.assert_allclose(lang.tables()["unigram"], lang.unigram())
    with pytest.raises(ValueError, match="kind 'other'"):
        ToyLanguage(kind="other")


def test_eval_windows_shape_and_errors():
    stream = np.arange(100)
    w = eval_windows(stream, 3, 9)
    assert w.shape == (3, 10)
    np.testing.assert_array_equal(w[1], np.arange(10, 20))
    with pytest.raises(ValueError, match="needs 1010"):
        eval_windows(stream, 10, 100)
    with pytest.raises(ValueError, match="empty"):
        eval_windows(stream, 0, 4)


def test_pythia_schedule():
    assert pythia_schedule(2048, 256) == [
        0,
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        512,
        768,
        1024,
        1280,
        1536,
        1792,
        2048,
    ]
    s = pythia_schedule(143000, 1000)
    assert len(s) == 154 and s[:11] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def test_rank_frequency_and_a_zipf_fit_recover_a_known_law():
    """Counts from an exact Zipf law (exponent 1.3) whose rarest 5% fall away: the fit without
    them recovers the exponent; ranks sort the ids that occur, frequencies sum to 1."""
    law = 1e9 / np.arange(1, 1001) ** 1.3
    law[950:] *= np.logspace(0, -3, 50)  # the "non-Zipfian" tail
    counts = np.concatenate([np.zeros(7), np.round(law)[::-1]])  # unsorted, with unseen ids
    rank, freq = rank_frequency(counts)
    assert rank.size == 1000 and freq.sum() == pytest.approx(1.0)
    assert (np.diff(freq) <= 0).all()
    s, C = zipf_fit(rank, freq)
    assert s == pytest.approx(1.3, rel=1e-3)
    s_all, _ = zipf_fit(rank, freq, head=0.0, tail=0.0)
    assert s_all > 1.35  # with the tail the fit is pulled away: the tail is what it leaves out
