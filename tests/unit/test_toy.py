"""The toy suite's head-rank option: an output layer trained as two factors U = A·B, saved as the
ordinary causal LM with that product as its output layer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.checkpoints import load_checkpoint, train_toy
from pipeline.data import write_corpus
from pipeline.extract import output_layer
from pipeline.optimizer import read_state
from pipeline.toy.language import ToyLanguage, toy_streams
from pipeline.toy.schedule import ToyModel, TrainConfig
from pipeline.toy.training import FactoredHead, build_toy_model, plain_model, toy_training

LANGUAGE = ToyLanguage(vocab_size=96, successors=8, context_classes=2)
SHAPE = ToyModel(hidden_size=16, layers=1, heads=2, head_rank=3)
TRAIN = TrainConfig(steps=8, batch_size=4, sequence_length=16, warmup_steps=2, save_every=4)


def float32_rank(M: np.ndarray) -> int:
    """The rank of a matrix computed in float32: singular values above float32's rounding."""
    s = np.linalg.svd(M, compute_uv=False)
    return int((s > s.max() * max(M.shape) * np.finfo(np.float32).eps).sum())


def test_the_factored_head_is_the_product_of_its_factors():
    net = build_toy_model(SHAPE, LANGUAGE.vocab_size, 16, seed=0)
    head = net.get_output_embeddings()
    assert isinstance(head, FactoredHead)
    A, B = head.A.detach().double().numpy(), head.B.detach().double().numpy()
    assert A.shape == (96, 3) and B.shape == (3, 16)
    h = torch.randn(5, 16)
    np.testing.assert_allclose(head(h).detach().numpy(), h.double().numpy() @ (A @ B).T, atol=1e-6)
    assert np.linalg.matrix_rank(A @ B) == 3
    # initialised at an ordinary head's scale (entries of standard deviation 0.02)
    plain = build_toy_model(ToyModel(16, 1, 2), LANGUAGE.vocab_size, 16, seed=0)
    ratio = float((A @ B).std()) / float(plain.get_output_embeddings().weight.detach().std())
    assert 0.8 < ratio < 1.25
    assert net.config.head_rank == 3


def test_the_plain_copy_computes_the_same_function():
    net = build_toy_model(SHAPE, LANGUAGE.vocab_size, 16, seed=1)
    x = torch.randint(0, 96, (2, 16))
    state = torch.random.get_rng_state()
    plain = plain_model(net)
    assert torch.equal(state, torch.random.get_rng_state())  # training's randomness untouched
    assert not isinstance(plain.get_output_embeddings(), FactoredHead)
    torch.testing.assert_close(plain(x).logits, net(x).logits, rtol=1e-5, atol=1e-6)
    ordinary = build_toy_model(ToyModel(16, 1, 2), 96, 16, seed=1)
    assert plain_model(ordinary) is ordinary


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("head_rank")
    write_corpus(LANGUAGE, 4096, 512, str(root / "corpus.zarr"))
    steps = train_toy(SHAPE, TRAIN, root / "corpus.zarr", LANGUAGE.vocab_size, root / "model")
    return root, steps


def test_checkpoints_hold_the_product_and_read_like_any_causal_lm(saved):
    root, steps = saved
    assert steps == [0, 1, 2, 4, 8]
    before = None
    for step in steps:
        model = load_checkpoint(root / "model" / f"step{step}")
        U, bias = output_layer(model)
        assert bias is None and U.shape == (96, 16)
        assert float32_rank(U.detach().double().numpy()) <= 3
        assert (
            json.loads((root / "model" / f"step{step}" / "config.json").read_text())["head_rank"]
            == 3
        )
        if before is not None:
            assert not torch.equal(U, before)  # the factors were trained
        before = U.clone()
    # the optimizer files hold the factors' moments
    state = read_state(root / "model" / "step8")
    names = [n for n in state.moments if "A" in n.split(".") or "B" in n.split(".")]
    assert len(names) == 2 and state.step == 8


def test_saving_does_not_change_the_training(saved):
    """The losses of the saved run are those of the same training without any saving."""
    root, _ = saved
    lines = (root / "model" / "train_loss.tsv").read_text().splitlines()
    recorded = np.array([float(line.split("\t")[1]) for line in lines[1:]])
    stream = toy_streams(LANGUAGE, 4096, 512)["train"]
    losses = []
    for _ in toy_training(SHAPE, TRAIN, stream, LANGUAGE.vocab_size, losses):
        pass
    np.testing.assert_array_equal(recorded, np.array([v for _, v in losses]))
