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

from pipeline.bottleneck import logit_gradient_gram, rank_curve, rank_sizes
from pipeline.decomposition import MEASUREMENTS, bottleneck_projector, decompose_at_h
from pipeline.extract import ExtractConfig, final_hidden, measure, output_layer
from pipeline.parameters import Conv1D

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


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def reference_param_grads(model, input_ids, targets):
    """Mean ∇θ⁺ and ∇θ⁻ by autograd through the whole model, the logit gradient masked."""
    ids = torch.from_numpy(input_ids).long()
    tgt = torch.from_numpy(targets).long().reshape(-1)
    params = dict(model.named_parameters())
    logits = model(input_ids=ids).logits.reshape(-1, V)
    loss = nn.functional.cross_entropy(logits, tgt, reduction="sum")
    (g,) = torch.autograd.grad(loss, logits, retain_graph=True)
    true = nn.functional.one_hot(tgt, V).bool()
    out = {}
    for part, mask in (("att", true), ("rep", ~true)):
        grads = torch.autograd.grad(
            logits,
            list(params.values()),
            grad_outputs=g * mask,
            retain_graph=True,
            allow_unused=True,
        )
        out[part] = {
            n: (gr if gr is not None else torch.zeros_like(p)) / tgt.numel()
            for (n, p), gr in zip(params.items(), grads)
        }
    return out


def reference_interference(model, input_ids, targets):
    """D_W per linear/embedding weight from an explicit loop over sequences and positions of the
    plain loss gradient (one sequence at a time; layer outputs' gradients kept by hooks)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    head = model.get_output_embeddings()
    recs = []

    def hook(mod, inputs, output):
        rec = {"mod": mod, "x": inputs[0].detach(), "out": output}
        output.retain_grad()
        recs.append(rec)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Embedding, Conv1D))
    ]
    for seq in range(input_ids.shape[0]):
        ids = torch.from_numpy(input_ids[seq : seq + 1]).long()
        tgt = torch.from_numpy(targets[seq]).long()
        logits = model(input_ids=ids).logits
        nn.functional.cross_entropy(logits.reshape(-1, V), tgt, reduction="sum").backward()
    for h in handles:
        h.remove()
    S, A = {}, {}
    for rec in recs:
        mod, x, delta = rec["mod"], rec["x"], rec["out"].grad
        name = name_of[id(mod.weight)]
        x = x.reshape(-1, *x.shape[2:]) if x.ndim > 1 else x
        delta = delta.reshape(-1, delta.shape[-1])
        S.setdefault(name, torch.zeros_like(mod.weight, dtype=torch.float64))
        A.setdefault(name, torch.zeros_like(mod.weight, dtype=torch.float64))
        for i in range(delta.shape[0]):  # the explicit loop over positions
            di = delta[i].double()
            if isinstance(mod, nn.Embedding):
                xi = nn.functional.one_hot(x.reshape(-1)[i], mod.weight.shape[0]).double()
                outer, absouter = torch.outer(xi, di), torch.outer(xi, di.abs())
            else:
                xi = x.reshape(-1, x.shape[-1])[i].double()
                if isinstance(mod, nn.Linear):
                    outer, absouter = torch.outer(di, xi), torch.outer(di.abs(), xi.abs())
                else:  # Conv1D: (in, out)
                    outer, absouter = torch.outer(xi, di), torch.outer(xi.abs(), di.abs())
            S[name] += outer
            A[name] += absouter
    model.zero_grad(set_to_none=True)
    out = {}
    for name in S:
        used = A[name] > 0
        out[name] = float((1 - S[name][used].abs() / A[name][used]).mean())
    assert name_of[id(head.weight)] in out
    return out


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
    cfg = ExtractConfig(batch_size=3, vocab_chunk=7, device="cpu", rank_tokens=0)
    meas = measure(model, ids, tgt, cfg, torch.device("cpu"))
    ref = reference_param_grads(model, ids, tgt)
    names = meas.param_names
    assert names == list(dict(model.named_parameters()))
    ref_att = np.array([ref["att"][n].norm().item() for n in names])
    ref_rep = np.array([ref["rep"][n].norm().item() for n in names])
    ref_all = np.array([(ref["att"][n] + ref["rep"][n]).norm().item() for n in names])
    ref_cos = np.array(
        [
            nn.functional.cosine_similarity(
                ref["att"][n].flatten(), ref["rep"][n].flatten(), dim=0
            ).item()
            if ref["att"][n].norm() * ref["rep"][n].norm() > 0
            else 0.0
            for n in names
        ]
    )
    assert rel_err(meas.params["norm_att"], ref_att) <= 1e-5
    assert rel_err(meas.params["norm_rep"], ref_rep) <= 1e-5
    assert rel_err(meas.params["norm"], ref_all) <= 1e-5
    assert rel_err(meas.params["cos"], ref_cos) <= 1e-5
    # the output layer is present and dissent there is not trivially zero
    assert np.abs(meas.params["cos"]).max() > 0.01


@pytest.mark.parametrize("family", FAMILIES)
def test_interference_matches_a_loop_over_positions(family):
    model = build(family)
    ids, tgt = data(n_seq=3, seq_len=8)
    cfg = ExtractConfig(batch_size=2, vocab_chunk=16, device="cpu", rank_tokens=0)
    meas = measure(model, ids, tgt, cfg, torch.device("cpu"))
    ref = reference_interference(model, ids, tgt)
    ours = dict(zip(meas.param_names, meas.params["dw"]))
    assert set(ref) == {n for n, v in ours.items() if not np.isnan(v)}
    names = sorted(ref)
    assert rel_err([ours[n] for n in names], [ref[n] for n in names]) <= 1e-5
    assert all(0 <= ref[n] <= 1 for n in names)


@pytest.mark.parametrize("family", FAMILIES)
def test_token_measurements_match_autograd_and_chunking(family):
    from tests.unit.test_decomposition import autograd_reference

    model = build(family)
    ids, tgt = data()
    base = measure(
        model,
        ids,
        tgt,
        ExtractConfig(batch_size=4, vocab_chunk=V, device="cpu", parameters=False, rank_tokens=0),
        torch.device("cpu"),
    )
    chunked = measure(
        model,
        ids,
        tgt,
        ExtractConfig(batch_size=3, vocab_chunk=5, device="cpu", rank_tokens=0),
        torch.device("cpu"),
    )
    with torch.no_grad():
        h = final_hidden(model, torch.from_numpy(ids).long()).reshape(-1, D)
    ref = autograd_reference(
        h, model.get_output_embeddings(), torch.from_numpy(tgt).reshape(-1).long()
    )
    for name in MEASUREMENTS:
        assert rel_err(base.tokens[name], ref[name].numpy()) <= 1e-5, name
    for name in MEASUREMENTS:
        assert rel_err(chunked.tokens[name], base.tokens[name]) <= 1e-5, name


def test_kept_fraction_matches_explicit_projection():
    torch.manual_seed(4)
    N, Vs, d = 40, 50, 6
    h, U, b = torch.randn(N, d) * 2, torch.randn(Vs, d), torch.randn(Vs)
    t = torch.randint(0, Vs, (N,))
    dec = decompose_at_h(h, U, b, bottleneck_projector(U), t, vocab_chunk=9)
    G = torch.softmax(h.double() @ U.double().T + b.double(), 1)
    G[torch.arange(N), t] -= 1
    Qref, _ = torch.linalg.qr(U.double())  # a different basis of the same column space
    ref = (G @ Qref).pow(2).sum(1) / G.pow(2).sum(1)
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
    G = torch.softmax(h @ U.T, 1)
    G[torch.arange(N), t] -= 1
    eps = torch.finfo(torch.float32).eps
    ref = [int(torch.linalg.matrix_rank(G[:n].double(), rtol=max(n, vocab) * eps)) for n in sizes]
    assert ranks == ref
    assert ranks[-1] <= vocab - 1  # rows of G sum to zero


def test_rejects_out_of_vocabulary_targets():
    model = build("gpt_neox")
    ids, tgt = data()
    tgt = tgt.copy()
    tgt[0, 0] = V + 5
    with pytest.raises(ValueError, match="another vocabulary"):
        measure(model, ids, tgt, ExtractConfig(device="cpu"), torch.device("cpu"))


def test_bfloat16_stays_close_to_float32():
    model = build("gpt_neox")
    ids, tgt = data(n_seq=8)
    cpu = torch.device("cpu")
    f32 = measure(model, ids, tgt, ExtractConfig(device="cpu", rank_tokens=0), cpu)
    b16 = measure(
        model.to(torch.bfloat16),
        ids,
        tgt,
        ExtractConfig(device="cpu", dtype="bfloat16", rank_tokens=0),
        cpu,
    )
    for name in MEASUREMENTS:
        # bfloat16 has 8 bits of mantissa: a few percent is its precision, not a bug
        assert rel_err(b16.tokens[name], f32.tokens[name]) < 0.1, name
