"""The closed-form decomposition at h against autograd with masked logit gradients.

The papers' own method: back-propagate the cross-entropy loss to the logits, keep only the true
entry (attractive) or only the false entries (repulsive) of the logit gradient, and
back-propagate that through the output layer to h.
"""

import pytest
import torch
from torch import nn

from pipeline.extract import final_hidden, output_layer
from pipeline.maths.decomposition import bottleneck_projector, decompose_at_h, vocab_pass
from pipeline.schema import MEASUREMENTS
from tests.reference import masked_autograd_at_h, rel_err


def test_matches_autograd_on_gpt_neox(tiny_neox):
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (3, 16))
    targets = torch.randint(0, 97, (3 * 16,))
    with torch.no_grad():
        h = final_hidden(tiny_neox, ids).reshape(-1, 24)
    U, b = output_layer(tiny_neox)
    U = U.detach()
    ours = decompose_at_h(h, U, b, bottleneck_projector(U), targets, vocab_chunk=10).measurements
    ref = masked_autograd_at_h(h, tiny_neox.get_output_embeddings(), targets)
    for name in MEASUREMENTS:
        assert rel_err(ours[name], ref[name]) <= 1e-5, name


def test_final_hidden_is_the_output_layer_input(tiny_neox):
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        h = final_hidden(tiny_neox, ids)
        logits = tiny_neox(input_ids=ids).logits
    U, _ = output_layer(tiny_neox)
    torch.testing.assert_close(h @ U.T, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 50, 1000])
def test_vocab_chunks_agree_with_one_chunk_and_bias(chunk):
    torch.manual_seed(2)
    N, V, d = 33, 50, 8
    h, U, b = torch.randn(N, d), torch.randn(V, d), torch.randn(V)
    targets = torch.randint(0, V, (N,))
    R = bottleneck_projector(U)
    whole = decompose_at_h(h, U, b, R, targets, vocab_chunk=V).measurements
    chunked = decompose_at_h(h, U, b, R, targets, vocab_chunk=chunk).measurements
    for name in MEASUREMENTS:
        assert rel_err(chunked[name], whole[name]) <= 1e-5, name
    head = torch.nn.Linear(d, V)
    with torch.no_grad():
        head.weight.copy_(U)
        head.bias.copy_(b)
    ref = masked_autograd_at_h(h, head, targets)
    for name in MEASUREMENTS:
        assert rel_err(chunked[name], ref[name]) <= 1e-5, name


def test_expected_embedding_is_stable_for_large_logits():
    # logits of ±1e4 overflow a naive exp; the running max keeps them finite
    h = torch.tensor([[100.0, -100.0]])
    U = torch.tensor([[100.0, 0.0], [0.0, 100.0], [-100.0, 0.0]])
    sums = vocab_pass(h, U, None, torch.tensor([1]), vocab_chunk=1)
    ref = torch.logsumexp(h @ U.T, dim=1)
    torch.testing.assert_close(sums.lse, ref)
    p = torch.softmax(h.double() @ U.double().T, 1)
    p[0, 1] = 0.0  # the repulsive sum leaves the target out
    torch.testing.assert_close(sums.rep, (p @ U.double()).float())
    torch.testing.assert_close(sums.logit_t, (h @ U.T)[0, 1:2])


def test_decomposition_identities():
    torch.manual_seed(3)
    h, U = torch.randn(20, 6), torch.randn(30, 6)
    targets = torch.randint(0, 30, (20,))
    r = decompose_at_h(h, U, None, bottleneck_projector(U), targets, vocab_chunk=8).measurements
    assert (r["loss"] > 0).all()
    # ∇h⁺ is anti-parallel to U_t: its norm is (1 − p_t)‖U_t‖
    torch.testing.assert_close(r["norm_attractive"], (1 - r["p_target"]) * U[targets].norm(dim=-1))
    for name in MEASUREMENTS:
        if name.startswith("cos"):
            assert (r[name].abs() <= 1 + 1e-6).all()


def test_confident_tokens_keep_float32_precision():
    """Where p_t is close to 1, ∇h⁻ = Uᵀp − p_t U_t and 1 − p_t cancel almost entirely if formed
    by subtraction; the vocabulary pass sums them without the target's term instead. Against a
    float64 reference on tokens with 1 − p_t from 1 down to 1e-10 (the float64 reference itself
    is exact to about 1e-6 there), every measurement keeps float32 precision. The subtraction
    this replaced was off by a factor of 10^4 on ‖∇h⁻‖ here."""
    torch.manual_seed(0)
    N, d, V = 1024, 32, 4000
    U = torch.randn(V, d)
    t = torch.randint(0, V, (N,))
    confidence = torch.linspace(1.0, 2.3, N)[:, None]  # p_t from 0.03 to 1 − 4e-11
    h = 3 * confidence * U[t] / U[t].norm(dim=1, keepdim=True) + 0.3 * torch.randn(N, d)
    head = nn.Linear(d, V, bias=False).double()
    head.weight.data = U.double()
    ref = masked_autograd_at_h(h.double(), head, t)
    assert (1 - ref["p_target"]).min() < 1e-9
    got = decompose_at_h(h, U, None, bottleneck_projector(U), t, vocab_chunk=512).measurements
    for name in MEASUREMENTS:
        err = (got[name].double() - ref[name]).abs()
        if name.startswith("cos"):
            assert err.max() <= 1e-5, (name, err.max().item())
        else:
            rel = err / ref[name].abs()
            assert rel.max() <= 1e-4, (name, rel.max().item())


def test_a_shift_of_every_output_row_moves_the_parts_but_not_the_gradient():
    """U → U + 1μᵀ leaves the model's probabilities and ∇h unchanged, but moves ∇h⁺ by
    −(1 − p_t)μ and ∇h⁻ by +(1 − p_t)μ: dissent depends on the output layer's mean row, which
    no loss gradient reaches (what μ-centering removes). Checked in float64 against the shift
    written out."""
    torch.manual_seed(4)
    h, U = torch.randn(20, 6, dtype=torch.float64), torch.randn(30, 6, dtype=torch.float64)
    mu = 3 * torch.randn(6, dtype=torch.float64)
    targets = torch.randint(0, 30, (20,))
    plain = decompose_at_h(h, U, None, bottleneck_projector(U), targets, vocab_chunk=8)
    moved = decompose_at_h(h, U + mu, None, bottleneck_projector(U + mu), targets, vocab_chunk=8)
    torch.testing.assert_close(moved.log_pt, plain.log_pt, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        moved.grad_att + moved.grad_rep, plain.grad_att + plain.grad_rep, rtol=1e-12, atol=1e-12
    )
    shift = (1 - plain.log_pt.exp())[:, None] * mu
    torch.testing.assert_close(moved.grad_att, plain.grad_att - shift, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(moved.grad_rep, plain.grad_rep + shift, rtol=1e-12, atol=1e-12)
    cos = moved.measurements["cos_attractive_repulsive"]
    assert not torch.allclose(cos, plain.measurements["cos_attractive_repulsive"], atol=1e-3)
