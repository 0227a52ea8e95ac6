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


def test_sgd_training_takes_the_textbook_step_and_saves_its_state(
    tmp_path,
):
    """Step 1 of SGD with momentum and weight decay: θ₁ = θ₀ − lr (∇L(θ₀) + λθ₀) (the momentum
    buffer starts as the gradient), computed here by autograd on the first training batch."""
    from pipeline.toy.training import training_batches

    train = TrainConfig(
        steps=4,
        batch_size=4,
        sequence_length=16,
        warmup_steps=2,
        save_every=4,
        optimizer="sgd",
        learning_rate=0.1,
        weight_decay=0.01,
    )
    shape = ToyModel(hidden_size=16, layers=1, heads=2)
    stream = toy_streams(LANGUAGE, 4096, 512)["train"]
    start = build_toy_model(shape, LANGUAGE.vocab_size, 16, seed=train.seed)
    batch = next(training_batches(train, stream))
    start(input_ids=batch, labels=batch).loss.backward()
    lr = train.learning_rate * train.lr_factor(0)
    expected = {
        n: p.detach() - lr * (p.grad + 0.01 * p.detach()) for n, p in start.named_parameters()
    }
    for step, net, (opt,) in toy_training(shape, train, stream, LANGUAGE.vocab_size):
        if step == 1:
            assert isinstance(opt, torch.optim.SGD)
            for n, p in net.named_parameters():
                torch.testing.assert_close(p.detach(), expected[n], rtol=1e-5, atol=1e-7)
            break
    write_corpus(LANGUAGE, 4096, 512, str(tmp_path / "corpus.zarr"))
    train_toy(shape, train, tmp_path / "corpus.zarr", LANGUAGE.vocab_size, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "step4" / "optimizer.json").read_text())
    assert saved["optimizer"] == "sgd" and saved["step"] == 4
    assert [o["class"] for o in saved["optimizers"]] == ["SGD"]
    assert saved["optimizers"][0]["groups"][0]["momentum"] == 0.9
    assert read_state(tmp_path / "m" / "step4").kind == "sgd"  # stepped by the update stage


def test_a_finite_corpus_is_drawn_from_its_first_ids_only():
    from pipeline.toy.training import training_batches

    train = TrainConfig(batch_size=8, sequence_length=16, corpus_tokens=100)
    batches = training_batches(train, np.arange(10_000))
    seen = np.concatenate([next(batches).numpy().ravel() for _ in range(50)])
    assert seen.max() < 100 and np.unique(seen).size == 100  # every id of the corpus, no other


def test_the_dead_tail_almost_never_occurs():
    live = ToyLanguage(vocab_size=256, successors=8, seed=1)
    dead = ToyLanguage(vocab_size=256, successors=8, seed=1, dead_ids=32, dead_weight=1e-4)
    rank = np.argsort(np.argsort(-live.unigram()))  # 0 = most frequent
    tail = rank >= 256 - 32
    np.testing.assert_allclose(
        dead.unigram()[tail] / dead.unigram()[~tail].sum(),
        1e-4 * live.unigram()[tail] / live.unigram()[~tail].sum(),
        rtol=1e-9,
    )
    x = dead.sample(200, 256, seed=0).ravel()
    share = np.isin(x, np.flatnonzero(tail)).mean()
    assert share < 0.002  # a dead id appears only through the unigram noise, rarely
    assert np.isin(live.sample(200, 256, seed=0).ravel(), np.flatnonzero(tail)).mean() > 0.01
