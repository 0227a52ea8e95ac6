"""The cross-seed KL divergence (``pipeline.maths.divergence``) against an explicit loop over
pairs and positions in numpy, float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.maths.divergence import seed_kl


@pytest.mark.parametrize("n", [2, 3])
def test_seed_kl_is_the_mean_kl_to_the_other_seeds(n):
    rng = np.random.default_rng(n)
    logits = rng.normal(size=(n, 5, 11)) * 3
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ours = seed_kl(torch.tensor(logp)).numpy()
    for a in range(n):
        for t in range(5):
            kls = [
                sum(np.exp(logp[a, t, j]) * (logp[a, t, j] - logp[b, t, j]) for j in range(11))
                for b in range(n)
                if b != a
            ]
            assert ours[a, t] == pytest.approx(np.mean(kls), rel=1e-12)


def test_identical_seeds_diverge_by_nothing_and_one_seed_is_refused():
    logp = torch.log_softmax(torch.randn(1, 4, 7, dtype=torch.float64), -1)
    assert seed_kl(logp.expand(3, 4, 7)).abs().max() < 1e-12
    with pytest.raises(ValueError, match="two or more"):
        seed_kl(logp)
