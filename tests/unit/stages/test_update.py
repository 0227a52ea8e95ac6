"""The update stage against independent references: the restored optimizer against training
itself, the forward-mode first-order prediction against per-token autograd, per-token gradient
norms and App. C.4's sums against brute force, and the saved optimizer state's checks."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, rankdata, spearmanr

from pipeline.checkpoints import load_checkpoint, train_toy, weights_sha256
from pipeline.data import write_corpus
from pipeline.maths.interference import loss_change_interference
from pipeline.maths.update import check_coherence, coherence, correlations, ranks
from pipeline.optimizer import MOMENTS_FILE, STATE_FILE, check_state, one_step, read_state
from pipeline.store import open_store
from pipeline.toy.language import ToyLanguage, update_batches
from pipeline.toy.schedule import ToyModel, TrainConfig
from pipeline.toy.training import build_toy_model, training_batches
from pipeline.update import (
    batch_backward,
    first_order,
    landscape,
    token_gradients,
    token_losses,
    update_norms,
)
from tests.reference import (
    adamw_training,
    coherence_from_products,
    per_token_gradients,
    rel_err,
)

LANGUAGE = ToyLanguage(vocab_size=128, successors=8, context_classes=2)
SHAPE = ToyModel(hidden_size=16, layers=2, heads=2)
TRAIN = TrainConfig(
    steps=6, batch_size=4, sequence_length=16, warmup_steps=2, save_every=1, weight_decay=0.1
)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A toy model trained 6 steps with a checkpoint (and optimizer state) after every step."""
    tmp = tmp_path_factory.mktemp("toy")
    write_corpus(LANGUAGE, 8192, 1024, str(tmp / "corpus.zarr"))
    saved = train_toy(SHAPE, TRAIN, tmp / "corpus.zarr", LANGUAGE.vocab_size, tmp / "ckpt")
    assert saved == list(range(TRAIN.steps + 1))
    stream = open_store(tmp / "corpus.zarr")["train"].values
    return tmp, stream


def test_saved_weights_are_those_of_plain_adamw_training(suite):
    tmp, stream = suite
    net = build_toy_model(SHAPE, LANGUAGE.vocab_size, TRAIN.sequence_length, TRAIN.seed)
    torch.set_num_threads(1)
    reference = adamw_training(
        net,
        training_batches(TRAIN, stream),
        TRAIN.steps,
        TRAIN.learning_rate,
        TRAIN.warmup_steps,
        TRAIN.weight_decay,
    )
    for step, model in reference:
        out = tmp / f"reference/step{step}"
        model.save_pretrained(out, safe_serialization=True)
        saved = (tmp / f"ckpt/step{step}/model.safetensors").read_bytes()
        assert (out / "model.safetensors").read_bytes() == saved, step  # byte-identical


def test_restored_optimizer_reproduces_the_next_checkpoint(suite):
    tmp, stream = suite
    batches = list(itertools.islice(training_batches(TRAIN, stream), TRAIN.steps))
    for t in range(TRAIN.steps):
        model = load_checkpoint(tmp / f"ckpt/step{t}")
        state = read_state(tmp / f"ckpt/step{t}")
        assert state.step == t
        assert state.lr == pytest.approx(TRAIN.learning_rate * TRAIN.lr_factor(t))
        b = batches[t]  # the batch training took its step t + 1 on
        model.train()
        delta = one_step(
            model, state, lambda m=model, b=b: m(input_ids=b, labels=b).loss.backward()
        )
        now = dict(model.named_parameters())
        later = dict(load_checkpoint(tmp / f"ckpt/step{t + 1}").named_parameters())
        for name, d in delta.items():
            expected = later[name].detach() - now[name].detach()
            torch.testing.assert_close(d, expected, rtol=1e-6, atol=1e-9, msg=f"{t} {name}")
        # the model itself is left as it was
        assert all(
            torch.equal(p, q)
            for p, q in zip(now.values(), load_checkpoint(tmp / f"ckpt/step{t}").parameters())
        )


def test_optimizer_state_errors_name_the_file(suite, tmp_path):
    tmp, _ = suite
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tmp / "ckpt/step2", ckpt)
    model = load_checkpoint(ckpt)
    (ckpt / STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=STATE_FILE):
        read_state(ckpt)
    (ckpt / STATE_FILE).write_text(json.dumps({"format": 99, "optimizer": "adamw"}))
    with pytest.raises(ValueError, match="format 99"):
        read_state(ckpt)
    shutil.copy(tmp / f"ckpt/step2/{STATE_FILE}", ckpt / STATE_FILE)
    (ckpt / MOMENTS_FILE).write_bytes((ckpt / MOMENTS_FILE).read_bytes()[:100])
    with pytest.raises(ValueError, match=MOMENTS_FILE):
        read_state(ckpt)
    (ckpt / STATE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="displacement"):
        read_state(ckpt)
    other = build_toy_model(ToyModel(8, 1, 1), LANGUAGE.vocab_size, 16, 0)
    with pytest.raises(ValueError, match="another model"):
        one_step(
            other, read_state(tmp / "ckpt/step2"), lambda: model.lm_head.weight.sum().backward()
        )


def _state_copy(tmp, tmp_path, step, source=None):
    """A copy of checkpoint ``step`` whose optimizer files come from ``source`` (default: its own)."""
    import shutil

    ckpt = tmp_path / f"step{step}"
    shutil.copytree(tmp / f"ckpt/step{step}", ckpt)
    for name in (STATE_FILE, MOMENTS_FILE):
        shutil.copy(tmp / f"ckpt/step{source if source is not None else step}/{name}", ckpt)
    return ckpt


def _edit(ckpt, **changes):
    settings = json.loads((ckpt / STATE_FILE).read_text())
    for key, value in changes.items():
        if value is None:
            del settings[key]
        else:
            settings[key] = value
    (ckpt / STATE_FILE).write_text(json.dumps(settings))


def _check(ckpt, step):
    check_state(
        read_state(ckpt),
        str(ckpt / STATE_FILE),
        step,
        lr=TRAIN.lr_after(step),
        weights_sha256=weights_sha256(ckpt),
    )


def test_every_saved_state_belongs_to_its_checkpoint(suite):
    tmp, _ = suite
    for t in range(TRAIN.steps + 1):
        assert read_state(tmp / f"ckpt/step{t}").weights_sha256 == weights_sha256(
            tmp / f"ckpt/step{t}"
        )
        _check(tmp / f"ckpt/step{t}", t)


@pytest.mark.parametrize(
    "fault, message",
    [
        (
            lambda c: _edit(c, step=999),
            "has taken 999 steps, but it lies beside the checkpoint of step 3",
        ),
        (lambda c: _edit(c, lr=10 * TRAIN.lr_after(3)), "but the training schedule gives"),
        (lambda c: _edit(c, eps=None), "lacks eps"),
    ],
    ids=["step", "lr", "missing-key"],
)
def test_a_state_that_is_not_its_checkpoints_is_refused(suite, tmp_path, fault, message):
    tmp, _ = suite
    ckpt = _state_copy(tmp, tmp_path, 3)
    fault(ckpt)
    with pytest.raises(ValueError, match=message) as err:
        _check(ckpt, 3)
    assert str(ckpt / STATE_FILE) in str(err.value)


def test_copied_optimizer_files_are_refused(suite, tmp_path):
    tmp, _ = suite
    ckpt = _state_copy(tmp, tmp_path, 5, source=2)  # step 2's files copied into step 5
    with pytest.raises(ValueError, match="has taken 2 steps, but .* step 5"):
        _check(ckpt, 5)
    # and with its step and rate edited to fit, the weights' hash still tells
    _edit(ckpt, step=5, lr=TRAIN.lr_after(5))
    with pytest.raises(ValueError, match="belongs to other weights"):
        _check(ckpt, 5)


@pytest.mark.parametrize("moment, value", [("exp_avg", float("nan")), ("exp_avg_sq", -1.0)])
def test_a_damaged_moment_is_refused(suite, tmp_path, moment, value):
    from safetensors.torch import load_file, save_file

    tmp, _ = suite
    ckpt = _state_copy(tmp, tmp_path, 3)
    tensors = load_file(ckpt / MOMENTS_FILE)
    name = sorted(tensors)[0].rsplit(".", 1)[0]
    tensors[f"{name}.{moment}"].view(-1)[0] = value
    save_file(tensors, ckpt / MOMENTS_FILE)
    with pytest.raises(ValueError, match=f"{name}.{moment}"):
        _check(ckpt, 3)


def test_a_non_finite_update_is_an_error_and_a_zero_one_is_said(caplog):
    ok = {"w": torch.ones(3), "b": torch.zeros(2)}
    bad = {"w": torch.tensor([1.0, float("nan"), 0.0]), "b": torch.zeros(2)}
    with pytest.raises(ValueError, match="the update of w is not finite .* for batch 1"):
        update_norms([ok, bad], "m step 4", "one step")
    zero = {"w": torch.zeros(3), "b": torch.zeros(2)}
    norms, norm = update_norms([ok, zero], "m step 4", "one step")
    np.testing.assert_allclose(norm, [np.sqrt(3), 0])
    assert "exactly zero for batch(es) [1]" in caplog.text


@pytest.fixture(scope="module")
def step_and_tokens(suite):
    """A checkpoint, its update on a fixed batch, and a few evaluation sequences."""
    tmp, _ = suite
    model = load_checkpoint(tmp / "ckpt/step3")
    batch = torch.from_numpy(update_batches(LANGUAGE, 1, 4, 17)[0].astype(np.int64))
    model.train()
    delta = one_step(model, read_state(tmp / "ckpt/step3"), lambda: batch_backward(model, batch, 2))
    model.eval()
    ids = torch.from_numpy(update_batches(LANGUAGE, 2, 3, 17)[1].astype(np.int64))
    return model, delta, ids[:, :-1], ids[:, 1:]


def test_forward_mode_prediction_matches_per_token_autograd(step_and_tokens):
    model, delta, x, y = step_and_tokens
    loss, pred = first_order(model, x, y, delta, per_pass=2)
    grads = per_token_gradients(model, x, y)
    u = torch.cat([delta[n].reshape(-1).double() for n, _ in model.named_parameters()])
    assert rel_err(pred, grads @ u) <= 1e-5
    assert rel_err(loss, token_losses(model, x, y, per_pass=3)) <= 1e-6


def test_forward_mode_prediction_with_tied_embeddings(tiny_neox):
    """A tied output layer is one parameter used twice: the closed-form head and the body's
    forward-mode pass must both see its tangent."""
    from transformers import GPTNeoXForCausalLM

    cfg = tiny_neox.config
    cfg.tie_word_embeddings = True
    torch.manual_seed(3)
    model = GPTNeoXForCausalLM(cfg).eval()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    delta = {n: 1e-2 * torch.randn_like(p) for n, p in model.named_parameters()}
    ids = torch.randint(0, cfg.vocab_size, (3, 9))
    _, pred = first_order(model, ids[:, :-1], ids[:, 1:], delta, per_pass=2)
    grads = per_token_gradients(model, ids[:, :-1], ids[:, 1:])
    u = torch.cat([delta[n].reshape(-1).double() for n, _ in model.named_parameters()])
    assert rel_err(pred, grads @ u) <= 1e-5


def test_landscape_passes_through_the_checkpoint_and_the_step(step_and_tokens):
    model, delta, x, y = step_and_tokens
    rows = landscape(model, x, y, delta, [0.0, 1.0, -2.0], per_pass=2)
    torch.testing.assert_close(rows[0], token_losses(model, x, y, per_pass=3))
    moved = {n: p.detach() + delta[n] for n, p in model.named_parameters()}
    torch.testing.assert_close(rows[1], token_losses(model, x, y, 3, moved))
    # and it is a real second evaluation, not the first one again
    assert not torch.allclose(rows[2], rows[0])


def test_token_gradients_and_coherence_match_brute_force(step_and_tokens):
    model, delta, x, y = step_and_tokens
    T = x.shape[1]
    tokens = np.array([0, 5, T - 1, T + 3, 2 * T + 7])
    other = {n: torch.randn_like(d) * d.std() for n, d in delta.items()}
    got = token_gradients(model, x, y, tokens, [delta, other])
    G = per_token_gradients(model, x, y)[tokens]  # (token, coordinate)
    np.testing.assert_allclose(got["grad_norm"], G.norm(dim=1).numpy(), rtol=1e-5)
    for k, d in enumerate([delta, other]):
        u = torch.cat([d[n].reshape(-1).double() for n, _ in model.named_parameters()])
        p = (G * u).numpy()
        np.testing.assert_allclose(got["dot"][k], p.sum(1), rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(got["abs_dot"][k], np.abs(p).sum(1), rtol=1e-5)
        c = coherence(got["abs_dot"][k], got["dot"][k], tuple(got["uG"][k]))
        ref = coherence_from_products(p)
        np.testing.assert_allclose([c.C_g, c.C_ug, c.C_uG], ref, rtol=1e-4)
        check_coherence(c, p.sum(1))


def test_coherence_identity_and_its_check():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(40, 300)) * rng.random(300)
    c = coherence(np.abs(p).sum(1), p.sum(1), p.sum(0))
    D, _ = loss_change_interference(p.sum(1))
    assert c.C_g * c.C_uG / c.C_ug == pytest.approx(1 - D, rel=1e-12)
    assert np.allclose([c.C_g, c.C_ug, c.C_uG], coherence_from_products(p))
    with pytest.raises(AssertionError, match="C.4"):
        check_coherence(c, p.sum(1) + rng.normal(size=40))  # predictions from elsewhere


def test_correlations_match_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=500)
    b = a + rng.normal(size=500) * 0.5
    b[::7] = b[::7] ** 3
    r, rho = correlations(a, b)
    assert r == pytest.approx(pearsonr(a, b).statistic, abs=1e-12)
    assert rho == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(correlations(a, np.ones_like(a))[0])
    ties = np.round(b, 1)  # many ties: their ranks are the mean of the ranks they share
    assert correlations(a, ties)[1] == pytest.approx(spearmanr(a, ties).statistic, abs=1e-12)
    np.testing.assert_array_equal(ranks(ties), rankdata(ties))
