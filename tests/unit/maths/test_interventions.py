"""The training interventions (``pipeline.maths.interventions``, ``pipeline.toy.training``)
against their definitions written out here in numpy, in float64: each optimizer's update rule
over several steps of given gradients, Muon's Newton–Schulz step, the loss terms and
μ-centering on a tiny toy model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import yaml

from pipeline.checkpoints import load_checkpoint, train_toy
from pipeline.config.load import SCHEMA
from pipeline.data import write_corpus
from pipeline.maths.interventions import (
    AdEMAMix,
    CautiousAdamW,
    CoupledAdamW,
    ademamix_beta3,
    embedding_parameters,
    muon_groups,
)
from pipeline.optimizer import one_step, read_state
from pipeline.store import open_store
from pipeline.toy.language import ToyLanguage, toy_streams
from pipeline.toy.schedule import OPTIMIZERS, ToyModel, TrainConfig
from pipeline.toy.training import (
    build_optimizers,
    build_toy_model,
    loss_terms,
    toy_training,
    training_batches,
    training_loss,
)
from pipeline.update import batch_backward

LR, WD, EPS, B1, B2 = 0.01, 0.1, 1e-8, 0.9, 0.999
STEPS = 5


def _gradients(shape, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) * rng.uniform(0.1, 3, size=shape[-1]) for _ in range(steps)]


def _run(opt_class, theta0, grads, **kw):
    """``opt_class`` over one float64 tensor stepped on ``grads``: the parameter after each."""
    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = opt_class([{"params": [p], **kw.pop("group", {})}], lr=LR, weight_decay=WD, **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        out.append(p.detach().numpy().copy())
    return out


def _adam_moments(m, v, g, t):
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    return m, v, m / (1 - B1**t), v / (1 - B2**t)


@pytest.mark.parametrize("coupled", [True, False])
def test_coupled_adam_divides_by_the_second_moment_averaged_over_the_rows(coupled):
    theta = np.random.default_rng(1).normal(size=(7, 3))
    grads = _gradients((7, 3))
    ours = _run(CoupledAdamW, theta, grads, group={"coupled": coupled})
    m = v = np.zeros_like(theta)
    for t, (g, got) in enumerate(zip(grads, ours), start=1):
        m, v, m_hat, v_hat = _adam_moments(m, v, g, t)
        if coupled:  # one second moment per column, the mean over the vocabulary's rows
            v_hat = np.tile(v_hat.mean(axis=0), (7, 1))
        theta = theta * (1 - LR * WD) - LR * m_hat / (np.sqrt(v_hat) + EPS)
        np.testing.assert_allclose(got, theta, rtol=1e-12, atol=1e-14)


def test_uncoupled_adam_is_torchs_adamw():
    theta = np.random.default_rng(2).normal(size=(4, 5))
    grads = _gradients((4, 5))
    ours = _run(CoupledAdamW, theta, grads, group={"coupled": False})
    torchs = _run(torch.optim.AdamW, theta, grads, eps=EPS)
    for a, b in zip(ours, torchs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_cautious_adamw_masks_where_momentum_and_gradient_disagree():
    theta = np.random.default_rng(3).normal(size=(6, 4))
    grads = _gradients((6, 4), seed=3)
    grads = [g if t % 2 == 0 else -g for t, g in enumerate(grads)]  # signs that disagree
    ours = _run(CautiousAdamW, theta, grads)
    m = v = np.zeros_like(theta)
    kept = []
    for t, (g, got) in enumerate(zip(grads, ours), start=1):
        m, v, m_hat, v_hat = _adam_moments(m, v, g, t)
        phi = (m * g > 0).astype(float)
        kept.append(phi.mean())
        scale = phi.size / (phi.sum() + 1)
        theta = theta * (1 - LR * WD) - LR * scale * phi * m_hat / (np.sqrt(v_hat) + EPS)
        np.testing.assert_allclose(got, theta, rtol=1e-12, atol=1e-14)
    assert min(kept) < 1  # the mask did act


@pytest.mark.parametrize("warmup", [None, 3])
def test_ademamix_adds_alpha_times_a_slow_moment(warmup):
    theta = np.random.default_rng(4).normal(size=(5, 3))
    grads = _gradients((5, 3), seed=4)
    alpha, beta3 = 5.0, 0.99
    ours = _run(AdEMAMix, theta, grads, betas=(B1, B2, beta3), alpha=alpha, warmup=warmup)
    m = v = slow = np.zeros_like(theta)
    for t, (g, got) in enumerate(zip(grads, ours), start=1):
        m, v, m_hat, v_hat = _adam_moments(m, v, g, t)
        if warmup is None or t >= warmup:
            a_t, b3_t = alpha, beta3
        else:  # α linear; the slow moment's half-life -log 2 / log β₃ linear from β₁'s to β₃'s
            f = t / warmup
            a_t = alpha * f
            b3_t = math.exp(1 / ((1 - f) / math.log(B1) + f / math.log(beta3)))
        slow = b3_t * slow + (1 - b3_t) * g
        theta = theta * (1 - LR * WD) - LR * (m_hat + a_t * slow) / (np.sqrt(v_hat) + EPS)
        np.testing.assert_allclose(got, theta, rtol=1e-12, atol=1e-14)


def test_ademamix_beta3_schedule_runs_from_beta1_to_beta3():
    group = {"betas": (0.9, 0.999, 0.9999), "warmup": 100}
    assert ademamix_beta3(group, 0) == pytest.approx(0.9)
    assert ademamix_beta3(group, 100) == 0.9999
    half_lives = [-math.log(2) / math.log(ademamix_beta3(group, t)) for t in range(0, 101, 10)]
    np.testing.assert_allclose(np.diff(half_lives), np.diff(half_lives)[0], rtol=1e-9)


# --- on a tiny toy model -----------------------------------------------------------------------

LANGUAGE = ToyLanguage(vocab_size=64, successors=4, context_classes=2, seed=1)
SHAPE = ToyModel(hidden_size=8, layers=1, heads=2)


def _tiny(train: TrainConfig):
    torch.manual_seed(0)
    net = build_toy_model(SHAPE, LANGUAGE.vocab_size, train.sequence_length, train.seed).double()
    stream = toy_streams(LANGUAGE, 4096, 256)["train"]
    return net, next(training_batches(train, stream))


def test_muon_takes_the_body_s_matrices_and_adamw_the_rest():
    net, _ = _tiny(TrainConfig())
    body, rest = muon_groups(net)
    shapes = dict((n, p.shape) for n, p in net.named_parameters())
    assert body and all(len(shapes[n]) == 2 and "embed" not in n for n in body)
    assert "gpt_neox.embed_in.weight" in rest and "lm_head.weight" in rest
    assert set(body) | set(rest) == set(shapes) and not set(body) & set(rest)
    assert embedding_parameters(net) == ["gpt_neox.embed_in.weight", "lm_head.weight"]


def _newton_schulz(G: torch.Tensor, steps=5, a=3.4445, b=-4.7750, c=2.0315) -> torch.Tensor:
    """Muon's quintic Newton–Schulz orthogonalisation X ← aX + (bA + cA²)X, A = XXᵀ, from
    X = G/‖G‖ (the wide orientation). In float64 it maps G's singular values into about
    (0.5, 1.5); in bfloat16, as torch's Muon runs it, the iteration amplifies rounding, so two
    orders of the same operations differ by about 5% (measured): this one is torch's order
    (``addmm``: bA + cA·A, then aX + B·X)."""
    X = G.T if G.shape[0] > G.shape[1] else G
    X = X / X.norm().clamp(min=1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = torch.addmm(X, torch.addmm(A, A, A, beta=b, alpha=c), X, beta=a)
    return X.T if G.shape[0] > G.shape[1] else X


def test_newton_schulz_orthogonalises():
    G = torch.randn(24, 8, dtype=torch.float64) * torch.linspace(0.01, 3, 8, dtype=torch.float64)
    sigma = torch.linalg.svdvals(_newton_schulz(G))
    assert 0.5 < sigma.min() and sigma.max() < 1.5
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    cos = (_newton_schulz(G) * (U @ Vh)).sum() / (_newton_schulz(G).norm() * (U @ Vh).norm())
    assert cos > 0.95  # close to the orthogonal factor UVᵀ of G


def test_a_muon_step_is_newton_schulz_of_the_nesterov_momentum():
    """Two steps: B_t = μB + (1 − μ)g, update NS(μB_t + (1 − μ)g), scaled by 0.2·√max(rows,
    cols) (AdamW's RMS), decoupled weight decay; Newton–Schulz in bfloat16, as torch's Muon."""
    train = TrainConfig(optimizer="muon", learning_rate=LR, weight_decay=WD, sequence_length=8)
    net, batch = _tiny(train)
    optimizers = build_optimizers(net, train)
    assert [type(o) for o in optimizers] == [torch.optim.Muon, torch.optim.AdamW]
    body, _ = muon_groups(net)
    params = dict(net.named_parameters())
    buf = {n: np.zeros(params[n].shape) for n in body}
    mu = 0.95
    for _ in range(2):
        net.zero_grad()
        net(input_ids=batch, labels=batch).loss.backward()
        before = {n: params[n].detach().numpy().copy() for n in body}
        grads = {n: params[n].grad.numpy().copy() for n in body}
        for opt in optimizers:
            opt.step()
        for n in body:
            buf[n] = mu * buf[n] + (1 - mu) * grads[n]
            nesterov = torch.tensor((1 - mu) * grads[n] + mu * buf[n])
            update = _newton_schulz(nesterov.bfloat16()).double().numpy()
            scale = 0.2 * math.sqrt(max(before[n].shape))
            expected = before[n] * (1 - LR * WD) - LR * scale * update
            step = params[n].detach().numpy() - before[n]
            error = np.linalg.norm(step - (expected - before[n])) / np.linalg.norm(step)
            assert error < 1e-6, (n, error)


def test_loss_terms_are_their_definitions():
    """z-loss γ·mean over predicting positions of (log Σ_j exp ℓ_j)², μ-loss γ·‖mean row of
    U‖², added to the cross-entropy, by an explicit loop over positions."""
    train = TrainConfig(z_loss=1e-2, mu_loss=0.5, sequence_length=8)
    net, batch = _tiny(train)
    out = net(input_ids=batch, labels=batch)
    logits = out.logits.detach().numpy()[:, :-1]
    ids = batch.numpy()
    ce, z = [], []
    for s in range(ids.shape[0]):
        for i in range(ids.shape[1] - 1):
            row = logits[s, i]
            log_z = math.log(sum(math.exp(x) for x in row))
            ce.append(log_z - row[ids[s, i + 1]])
            z.append(log_z**2)
    U = net.get_output_embeddings().weight.detach().numpy()
    mu = U.sum(axis=0) / U.shape[0]
    terms = training_loss(net, out, train).item() - out.loss.item()
    assert terms == pytest.approx(1e-2 * np.mean(z) + 0.5 * float(mu @ mu), rel=1e-12)
    assert out.loss.item() == pytest.approx(np.mean(ce), rel=1e-6)  # transformers: float32


def test_mu_centering_leaves_the_output_layer_with_a_zero_mean_row():
    """One training step with μ-centering is AdamW's step followed by U − mean_j U_j."""
    train = TrainConfig(mu_centering=True, steps=1, batch_size=2, sequence_length=8)
    stream = toy_streams(LANGUAGE, 4096, 256)["train"]
    plain = build_toy_model(SHAPE, LANGUAGE.vocab_size, 8, train.seed)
    opt = torch.optim.AdamW(
        plain.parameters(),
        lr=train.learning_rate * train.lr_factor(0),
        weight_decay=train.weight_decay,
    )
    batch = next(training_batches(train, stream))
    plain(input_ids=batch, labels=batch).loss.backward()
    opt.step()
    U = plain.get_output_embeddings().weight.detach().double().numpy()
    expected = U - U.mean(axis=0)
    for step, net, _ in toy_training(SHAPE, train, stream, LANGUAGE.vocab_size):
        if step == 1:
            got = net.get_output_embeddings().weight.detach().double().numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
            assert np.abs(got.mean(axis=0)).max() < 1e-7


#: each optimizer, and AdamW with each loss term and with μ-centering
TRAININGS = [
    *({"optimizer": o} for o in OPTIMIZERS),
    {"z_loss": 0.05},
    {"mu_loss": 0.5},
    {"mu_centering": True},
    {"optimizer": "cautious_adamw", "z_loss": 0.05, "mu_centering": True},
]


@pytest.mark.parametrize("settings", TRAININGS, ids=lambda s: "-".join(map(str, s.values())))
def test_one_step_from_the_saved_state_is_the_next_checkpoint(tmp_path, settings):
    """Trained with a checkpoint after every step: the update stage's step from the state
    saved at step t, on training's batch t + 1, is checkpoint(t + 1) − checkpoint(t)."""
    train = TrainConfig(
        steps=4, batch_size=2, sequence_length=8, save_every=1, warmup_steps=2, **settings
    )
    write_corpus(LANGUAGE, 4096, 256, str(tmp_path / "corpus.zarr"))
    saved = train_toy(SHAPE, train, tmp_path / "corpus.zarr", LANGUAGE.vocab_size, tmp_path / "m")
    assert saved == [0, 1, 2, 3, 4]
    stream = open_store(tmp_path / "corpus.zarr")["train"].values
    batches = list(itertools.islice(training_batches(train, stream), train.steps))
    kind = settings.get("optimizer", "adamw")
    for t in range(train.steps):
        state = read_state(tmp_path / f"m/step{t}")
        assert (state.kind, state.step) == (kind, t)
        assert state.lr == pytest.approx(train.lr_after(t))
        assert state.terms == loss_terms(train)
        model = load_checkpoint(tmp_path / f"m/step{t}")
        model.train()
        b = batches[t]
        n = train.batch_size  # one pass, as training took it

        def backward(model=model, b=b, terms=state.terms, n=n):
            batch_backward(model, b, n, terms=terms)

        delta = one_step(model, state, backward)
        now = dict(model.named_parameters())
        later = dict(load_checkpoint(tmp_path / f"m/step{t + 1}").named_parameters())
        for name, d in delta.items():
            expected = later[name].detach() - now[name].detach()
            torch.testing.assert_close(d, expected, rtol=1e-5, atol=1e-8, msg=f"{t} {name}")
    if settings.get("mu_centering"):
        assert later["lm_head.weight"].mean(dim=0).abs().max() < 1e-6


def test_the_schema_lists_the_optimizers_training_knows():
    schema = yaml.safe_load(SCHEMA.read_text())
    toy_train = schema["properties"]["toy"]["properties"]["train"]["properties"]
    assert tuple(toy_train["optimizer"]["enum"]) == OPTIMIZERS
    text = SCHEMA.read_text()
    assert text.count(f"optimizer: {{enum: [{', '.join(OPTIMIZERS)}]}}") == 2  # and models'
