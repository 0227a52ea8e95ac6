"""Every extraction measurement against an independent reference, on tiny random models of four
families (GPT-NeoX, GPT-2 with tied embeddings and Conv1D, Llama, Phi with an output bias).

References: autograd through the loss with the logit gradient masked to the true / false
entries (the papers' method) for the parameter decomposition; an explicit loop over positions
for D_W; ``torch.linalg.matrix_rank`` for the logit-gradient rank.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import ExtractConfig
from pipeline.extract import final_hidden, float32_matmul, measure, output_layer
from pipeline.maths.bottleneck import (
    kept_rank_curve,
    logit_gradient_gram,
    rank_curve,
    rank_sizes,
    suppressed_forms,
)
from pipeline.maths.decomposition import bottleneck_projector, decompose_at_h
from pipeline.schema import MEASUREMENTS, PARAM_STATISTICS
from tests.reference import (
    interference_by_positions,
    kept_fraction_by_projection,
    masked_autograd_at_h,
    masked_autograd_param_grads,
    matrix_rank_curve,
    param_statistics,
    rel_err,
    suppressed_by_projection,
)

V, D = 61, 16


def build(family: str) -> nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=V, num_hidden_layers=2, num_attention_heads=2)
    if family == "gpt_neox":
        cfg = tf.GPTNeoXConfig(
            hidden_size=D,
            intermediate_size=32,
            max_position_embeddings=32,
            rotary_pct=0.25,
            tie_word_embeddings=False,
            **common,
        )
        model = tf.GPTNeoXForCausalLM(cfg)
    elif family == "gpt2":
        cfg = tf.GPT2Config(
            vocab_size=V,
            n_embd=D,
            n_layer=2,
            n_head=2,
            n_positions=32,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = tf.GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=D,
            intermediate_size=32,
            max_position_embeddings=32,
            num_key_value_heads=1,
            tie_word_embeddings=False,
            **common,
        )
        model = tf.LlamaForCausalLM(cfg)
    elif family == "phi":
        cfg = tf.PhiConfig(
            hidden_size=D, intermediate_size=32, max_position_embeddings=32, **common
        )
        model = tf.PhiForCausalLM(cfg)
    else:
        raise ValueError(family)
    # larger weights than the default init, so the softmax is far from uniform
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(8.0)
    return model.eval()


FAMILIES = ["gpt_neox", "gpt2", "llama", "phi"]


def data(n_seq=4, seq_len=12, seed=1, vocab=V - 3):
    # ids below V − 3: the last rows of the output act as padded, never-targeted vocabulary
    g = np.random.default_rng(seed)
    windows = g.integers(0, vocab, size=(n_seq, seq_len + 1))
    return windows[:, :-1], windows[:, 1:]


@pytest.mark.parametrize("family", FAMILIES)
def test_final_hidden_feeds_the_output_layer(family):
    model = build(family)
    ids = torch.from_numpy(data()[0]).long()
    with torch.no_grad():
        h = final_hidden(model, ids)
        logits = model(input_ids=ids).logits
    U, b = output_layer(model)
    ours = h @ U.T + (b if b is not None else 0)
    torch.testing.assert_close(ours, logits, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_decomposition_matches_masked_autograd(family):
    model = build(family)
    ids, tgt = data()
    cfg = ExtractConfig(sequences_per_pass=3, vocab_chunk=7, device="cpu", rank_tokens=0)
    meas = measure(model, ids, tgt, cfg, torch.device("cpu"))
    names = meas.param_names
    assert names == list(dict(model.named_parameters()))
    ref = param_statistics(masked_autograd_param_grads(model, ids, tgt), names)
    assert set(ref) | {"param_interference"} == set(PARAM_STATISTICS)
    for key, want in ref.items():
        assert rel_err(meas.params[key], want) <= 1e-5, key
    # the output layer is present and dissent there is not trivially zero
    assert np.abs(meas.params["param_cos_attractive_repulsive"]).max() > 0.01
    assert meas.params["param_size"].tolist() == [p.numel() for p in model.parameters()]


@pytest.mark.parametrize("family", FAMILIES)
def test_interference_matches_a_loop_over_positions(family):
    model = build(family)
    ids, tgt = data(n_seq=3, seq_len=8)
    cfg = ExtractConfig(sequences_per_pass=2, vocab_chunk=16, device="cpu", rank_tokens=0)
    meas = measure(model, ids, tgt, cfg, torch.device("cpu"))
    ref = interference_by_positions(model, ids, tgt)
    ours = dict(zip(meas.param_names, meas.params["param_interference"]))
    assert set(ref) == {n for n, v in ours.items() if not np.isnan(v)}
    names = sorted(ref)
    assert rel_err([ours[n] for n in names], [ref[n] for n in names]) <= 1e-5
    assert all(0 <= ref[n] <= 1 for n in names)


@pytest.mark.parametrize("family", FAMILIES)
def test_token_measurements_match_autograd_and_chunking(family):
    model = build(family)
    ids, tgt = data()
    base = measure(
        model,
        ids,
        tgt,
        ExtractConfig(
            sequences_per_pass=4, vocab_chunk=V, device="cpu", parameters=False, rank_tokens=0
        ),
        torch.device("cpu"),
    )
    chunked = measure(
        model,
        ids,
        tgt,
        ExtractConfig(sequences_per_pass=3, vocab_chunk=5, device="cpu", rank_tokens=0),
        torch.device("cpu"),
    )
    with torch.no_grad():
        h = final_hidden(model, torch.from_numpy(ids).long()).reshape(-1, D)
    ref = masked_autograd_at_h(
        h, model.get_output_embeddings(), torch.from_numpy(tgt).reshape(-1).long()
    )
    for name in MEASUREMENTS:
        assert rel_err(base.tokens[name], ref[name]) <= 1e-5, name
    for name in MEASUREMENTS:
        assert rel_err(chunked.tokens[name], base.tokens[name]) <= 1e-5, name


def test_kept_fraction_matches_explicit_projection():
    torch.manual_seed(4)
    N, Vs, d = 40, 50, 6
    h, U, b = torch.randn(N, d) * 2, torch.randn(Vs, d), torch.randn(Vs)
    t = torch.randint(0, Vs, (N,))
    dec = decompose_at_h(h, U, b, bottleneck_projector(U), t, vocab_chunk=9)
    ref = kept_fraction_by_projection(h, U, b, t)
    assert rel_err(dec.measurements["kept_fraction"], ref) <= 1e-5
    assert (ref < 1).all() and (ref > 0).all()


@pytest.mark.parametrize("vocab,d", [(50, 4), (30, 40)])
def test_rank_matches_matrix_rank(vocab, d):
    torch.manual_seed(5)
    N = 64
    h, U = torch.randn(N, d) * 3, torch.randn(vocab, d)
    t = torch.randint(0, vocab, (N,))
    lse = torch.logsumexp(h @ U.T, 1)
    sizes = rank_sizes(N)
    assert sizes == [1, 2, 4, 8, 16, 32, 64]
    ranks = rank_curve(logit_gradient_gram(h, U, None, t, lse, vocab_chunk=7), sizes, vocab)
    assert ranks == matrix_rank_curve(h, U, t, sizes)
    assert ranks[-1] <= vocab - 1  # rows of G sum to zero


@pytest.mark.parametrize("vocab,d", [(50, 4), (30, 40)])
def test_suppressed_forms_and_kept_rank_match_an_explicit_projection(vocab, d):
    """The four suppressed-share forms and rank(GQ) against dense G projected onto a QR basis of
    U's column space (a different basis than the pipeline's); d ≥ V: the head keeps all."""
    torch.manual_seed(6)
    N = 48
    h, U, b = torch.randn(N, d) * 2, torch.randn(vocab, d), torch.randn(vocab)
    t = torch.randint(0, vocab, (N,))
    R = bottleneck_projector(U)
    dec = decompose_at_h(h, U, b, R, t, vocab_chunk=7)
    ref, GQ = suppressed_by_projection(h, U, b, t)
    m = {k: v.numpy() for k, v in dec.measurements.items()}
    forms = suppressed_forms(m["kept_fraction"], m["logit_grad_sq"])
    for name, want in ref.items():
        # √(1 − κ) near κ = 1 magnifies float32's error of κ (δ) to √δ
        tol = 1e-3 if name == "suppressed_norm" else 1e-6
        assert forms[name] == pytest.approx(want, rel=1e-5, abs=tol), name
    logits = h.double() @ U.double().T + b.double()
    G = torch.softmax(logits, 1)
    G[torch.arange(N), t] -= 1
    assert rel_err(m["logit_grad_sq"], G.pow(2).sum(1)) <= 1e-5
    sizes = rank_sizes(N)
    ranks = kept_rank_curve(dec.grad_att + dec.grad_rep, R, sizes)
    eps = torch.finfo(torch.float32).eps
    want = [int(torch.linalg.matrix_rank(GQ[:n], rtol=max(n, GQ.shape[1]) * eps)) for n in sizes]
    assert ranks == want
    assert ranks[-1] == min(d, vocab - 1, N)
    if d >= vocab:  # U's columns span everything: nothing is lost
        assert forms["suppressed_batch"] == pytest.approx(0.0, abs=1e-5)
    else:
        assert forms["suppressed_batch"] > 0.5


def test_rejects_out_of_vocabulary_targets():
    model = build("gpt_neox")
    ids, tgt = data()
    tgt = tgt.copy()
    tgt[0, 0] = V + 5
    with pytest.raises(ValueError, match="another vocabulary"):
        measure(model, ids, tgt, ExtractConfig(device="cpu"), torch.device("cpu"))


#: Bounds on ‖bf16 − f32‖ / ‖f32‖ over tokens, about three times what this test's model gives
#: (measured: loss 1.1e-3, p_t 4.7e-3, norms ≤ 2.4e-3, cosines ≤ 8e-3, κ 1.3e-3). The docs
#: ("Performance" → bfloat16) (docs/performance.md) claims, on the trained toy-d128: loss ~1.7e-3, p_t ~4e-3, norms
#: ~2e-3, cosines ~5e-3, κ ~9e-4, "everything at h good to about 1e-3". A regression to bfloat16
#: softmax or sums (errors of 1e-2 and more) fails here; the old bound of 0.1 let it through.
BF16_BOUND = {
    "loss": 4e-3,
    "p_target": 1.5e-2,
    "norm_attractive": 8e-3,
    "norm_repulsive": 8e-3,
    "norm_grad": 8e-3,
    "cos_h_attractive": 2e-2,
    "cos_h_repulsive": 2e-2,
    "cos_grad_attractive": 2e-2,
    "cos_grad_repulsive": 2e-2,
    "cos_attractive_repulsive": 2e-2,
    "kept_fraction": 4e-3,
    "logit_grad_sq": 1e-2,
}


def test_bfloat16_stays_close_to_float32():
    assert set(BF16_BOUND) == set(MEASUREMENTS)
    model = build("gpt_neox")
    ids, tgt = data(n_seq=16)
    cpu = torch.device("cpu")
    f32 = measure(model, ids, tgt, ExtractConfig(device="cpu", rank_tokens=0), cpu)
    b16 = measure(
        model.to(torch.bfloat16),
        ids,
        tgt,
        ExtractConfig(device="cpu", dtype="bfloat16", rank_tokens=0),
        cpu,
    )
    errors = {name: rel_err(b16.tokens[name], f32.tokens[name]) for name in MEASUREMENTS}
    over = {n: f"{e:.1e} > {BF16_BOUND[n]:.0e}" for n, e in errors.items() if e > BF16_BOUND[n]}
    assert not over, over
    # the model does run in bfloat16: the measurements are not float32's to the last bit
    assert min(errors.values()) > 1e-6


def test_tf32_is_scoped_to_the_block_and_restored_after_an_error():
    flags = torch.backends.cuda.matmul
    before = flags.fp32_precision
    with pytest.raises(RuntimeError):
        with float32_matmul(True):
            assert flags.fp32_precision == "tf32"
            raise RuntimeError("inside")
    assert flags.fp32_precision == before
    with float32_matmul(False):
        assert flags.fp32_precision == "ieee"
    assert flags.fp32_precision == before
