"""The output layer's spectrum, common direction and the hidden states' anisotropy
(``pipeline.maths.geometry``) against direct numpy computations; the same numbers in the
extraction store of a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from pipeline.config import ExtractConfig
from pipeline.extract import final_hidden, measure, output_layer
from pipeline.maths.geometry import (
    Anisotropy,
    common_direction_share,
    head_spectrum,
    kl_to_uniform,
    log_prob_spectra,
    sigma_ratio,
    w_error,
)
from tests.unit.stages.test_extract import FAMILIES, build, data


@pytest.mark.parametrize("shape", [(300, 16), (12, 40)])
def test_head_spectrum_is_numpys_svd(shape):
    U = torch.randn(*shape) * torch.linspace(0.1, 3, shape[1])
    ours = head_spectrum(U)
    ref = np.linalg.svd(U.double().numpy(), compute_uv=False)
    assert ours.shape == (min(shape),)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref[0])


def test_kl_to_uniform_is_scipys_relative_entropy():
    s = np.array([5.0, 3.0, 1.0, 0.5, 0.0])
    p = s / s.sum()
    assert kl_to_uniform(s) == pytest.approx(entropy(p, np.full(5, 0.2)), rel=1e-12)
    assert kl_to_uniform(np.ones(7)) == pytest.approx(0.0, abs=1e-15)  # flat
    assert kl_to_uniform(np.array([2.0, 0, 0, 0])) == pytest.approx(np.log(4))  # one spike
    assert sigma_ratio(s) == pytest.approx(5 / 3)


def test_common_direction_share_is_the_direct_ratio():
    g = np.random.default_rng(0)
    U = g.standard_normal((500, 8)) + 0.3  # a shared offset in every row
    ref = np.linalg.norm(U.mean(0)) / np.linalg.norm(U, axis=1).mean()
    assert common_direction_share(torch.from_numpy(U).float()) == pytest.approx(ref, rel=1e-6)
    same = np.tile(g.standard_normal(8), (20, 1)) * g.uniform(1, 2, (20, 1))
    assert common_direction_share(torch.from_numpy(same)) == pytest.approx(1.0)


def test_anisotropy_is_the_mean_off_diagonal_cosine():
    g = np.random.default_rng(1)
    h = g.standard_normal((90, 6)) + np.array([1.5, 0, 0, 0, 0, 0])
    unit = h / np.linalg.norm(h, axis=1, keepdims=True)
    C = unit @ unit.T
    ref = (C.sum() - np.trace(C)) / (90 * 89)
    acc = Anisotropy()
    for part in np.array_split(h, 3):  # accumulated batch by batch
        acc.add(torch.from_numpy(part).float())
    acc.add(torch.zeros(2, 6))  # rows without a direction are skipped
    assert acc.n == 90
    assert acc.value() == pytest.approx(ref, rel=1e-5)
    assert np.isnan(Anisotropy().value())


def test_w_error_is_the_best_low_rank_approximations_error():
    g = np.random.default_rng(2)
    W = g.standard_normal((40, 25)) @ np.diag(np.geomspace(10, 0.01, 25))
    u, s, vt = np.linalg.svd(W, full_matrices=False)
    for d in (0, 1, 5, 24, 25):
        approx = (u[:, :d] * s[:d]) @ vt[:d]
        ref = np.linalg.norm(W - approx) / np.linalg.norm(W)
        assert w_error(s, d) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_extraction_measures_the_geometry_of_its_model(family):
    model = build(family)
    ids, tgt = data(n_seq=5, seq_len=9)
    meas = measure(model, ids, tgt, ExtractConfig(device="cpu"), torch.device("cpu"))
    U = output_layer(model)[0].detach().double().numpy()
    s = np.linalg.svd(U, compute_uv=False)
    np.testing.assert_allclose(meas.spectrum, s, rtol=1e-6)
    p = s / s.sum()
    g = meas.geometry
    assert g["head_spectrum_kl"] == pytest.approx(entropy(p, np.full(s.size, 1 / s.size)), rel=1e-6)
    assert g["head_sigma_ratio"] == pytest.approx(s[0] / s[1], rel=1e-6)
    share = np.linalg.norm(U.mean(0)) / np.linalg.norm(U, axis=1).mean()
    assert g["head_common_direction"] == pytest.approx(share, rel=1e-6)
    with torch.no_grad():
        h = (
            final_hidden(model, torch.from_numpy(ids).long())
            .double()
            .numpy()
            .reshape(-1, U.shape[1])
        )
    unit = h / np.linalg.norm(h, axis=1, keepdims=True)
    C = unit @ unit.T
    n = C.shape[0]
    assert g["anisotropy"] == pytest.approx((C.sum() - n) / (n * (n - 1)), rel=1e-5, abs=1e-7)


def test_log_prob_spectra_are_numpys_svd_of_w_and_of_w_centred():
    g = np.random.default_rng(3)
    W = np.log(g.dirichlet(np.ones(30), size=70))  # 70 contexts × 30 ids
    s = log_prob_spectra(W)
    np.testing.assert_allclose(s["uncentred"], np.linalg.svd(W, compute_uv=False), rtol=1e-8)
    centred = W - W.mean(1, keepdims=True)
    ref = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(s["centred"][:29], ref[:29], rtol=1e-7)
    assert s["centred"][-1] < 1e-6 * ref[0]  # centred rows sum to 0: one direction is lost


def test_the_toy_languages_log_probabilities_are_its_sampling_distribution():
    """exp(W) of a context is the frequency with which sampled chains continue it."""
    from pipeline.toy.language import ToyLanguage

    lang = ToyLanguage(vocab_size=64, successors=4, context_classes=2, noise=0.1, seed=4)
    W = lang.log_prob_matrix()
    assert W.shape == (128, 64)
    np.testing.assert_allclose(np.exp(W).sum(1), 1.0, rtol=1e-12)
    x = lang.sample(4000, 64, seed=9)
    t = lang.tables()
    prev, prev2, nxt = x[:, 1:-1].ravel(), x[:, :-2].ravel(), x[:, 2:].ravel()
    row = prev * 2 + t["token_class"][prev2]  # the context's row: (previous id, class)
    top = np.bincount(row).argmax()
    freq = np.bincount(nxt[row == top], minlength=64) / (row == top).sum()
    assert np.abs(freq - np.exp(W[top])).max() < 0.03
    spam = ToyLanguage(vocab_size=16, kind="spam", zipf_exponent=0.0, chain_length=8)
    P = np.exp(spam.log_prob_matrix())
    np.testing.assert_allclose(np.diag(P), 1 - 1 / 8 + 1 / (8 * 16))
    np.testing.assert_allclose(P.sum(1), 1.0)
