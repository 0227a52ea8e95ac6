"""Benchmark of the update stage's per-token passes against a plain forward pass and the
authors' method.

On one random model, one random update direction and one set of tokens, in one run, it times:

  (a) a plain forward pass with per-token losses (``pipeline.update.token_losses``);
  (b) the first-order prediction Δ̃ℓ_i = ∇θℓ_i·Δθ of every token in one forward-mode pass
      (``pipeline.update.first_order``, a Jacobian-vector product);
  (c) the authors' method: one backward pass per position (here with the graph of each
      sequence kept, ``retain_graph``), then the dot product with Δθ, timed on the first
      ``--backward-sequences`` sequences and scaled to all tokens;
  (d) one landscape point ℓ_i(θ + m·Δθ) (``pipeline.update.landscape`` over 3 points / 3);

and prints tokens/s and the ratios b/a, c/b and d/a, and checks that (b) and (c) agree.
Shapes come from Pythia's configs (``benchmarks/extract.py``), weights are random. Examples
(see docs/performance.md)::

    .venv/bin/python benchmarks/update.py --shape pythia-14m --sequences 32
    python benchmarks/update.py --shape pythia-1b --sequences 64 --device cuda  # a GPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from extract import SHAPES, build  # benchmarks/extract.py, beside this script

from pipeline.update import first_order, landscape, token_losses


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeat: int) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls (after one warm-up call) and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def per_position_backward(model, x, y, delta, n_seq: int) -> torch.Tensor:
    """∇θℓ_i·Δθ for every position of the first ``n_seq`` sequences, one backward pass each."""
    params = [p for _, p in model.named_parameters()]
    u = [delta[n] for n, _ in model.named_parameters()]
    out = []
    for s in range(n_seq):
        logits = model(input_ids=x[s : s + 1]).logits[0].float()
        losses = torch.nn.functional.cross_entropy(logits, y[s], reduction="none")
        for t in range(x.shape[1]):
            grads = torch.autograd.grad(losses[t], params, retain_graph=t < x.shape[1] - 1)
            out.append(sum((g.float() * d).sum() for g, d in zip(grads, u)))
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=SHAPES, default="pythia-14m")
    ap.add_argument("--sequences", type=int, default=32, help="evaluation sequences")
    ap.add_argument("--positions", type=int, default=64, help="positions per sequence")
    ap.add_argument("--batch", type=int, default=16, help="sequences per pass")
    ap.add_argument("--backward-sequences", type=int, default=2, help="sequences timed in (c)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.shape, torch.float32, device)
    torch.manual_seed(1)
    V = model.config.vocab_size
    ids = torch.randint(0, V, (args.sequences, args.positions + 1), device=device)
    x, y = ids[:, :-1], ids[:, 1:]
    delta = {n: 1e-3 * torch.randn_like(p) for n, p in model.named_parameters()}
    n_tok = x.numel()
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.shape}: {n_params / 1e6:.1f}M parameters, {n_tok} tokens "
        f"({args.sequences} x {args.positions}), {device}, float32, "
        f"{torch.get_num_threads()} threads"
    )
    t_fwd, _ = timed(lambda: token_losses(model, x, y, args.batch), device, args.repeat)
    t_jvp, (_, pred) = timed(
        lambda: first_order(model, x, y, delta, args.batch), device, args.repeat
    )
    m = args.backward_sequences
    t0 = time.perf_counter()
    ref = per_position_backward(model, x, y, delta, m)
    sync(device)
    t_bwd = (time.perf_counter() - t0) * args.sequences / m
    t_land, _ = timed(
        lambda: landscape(model, x, y, delta, [-1.0, 0.5, 2.0], args.batch), device, 1
    )
    t_land /= 3
    err = float((pred[: ref.numel()] - ref).norm() / ref.norm())
    rows = [
        ("(a) forward pass, per-token losses", t_fwd),
        ("(b) forward-mode Δ̃ℓ for every token", t_jvp),
        (f"(c) one backward per position (scaled from {m} seq.)", t_bwd),
        ("(d) one landscape point", t_land),
    ]
    for name, t in rows:
        print(f"  {name:<52} {t:9.3f} s  {n_tok / t:12,.0f} tokens/s")
    print(f"  b/a = {t_jvp / t_fwd:.2f}x   (goal <= 3x)")
    print(f"  c/b = {t_bwd / t_jvp:.1f}x   (goal >= 20x at {args.positions} positions a sequence)")
    print(f"  d/a = {t_land / t_fwd:.2f}x")
    print(f"  relative difference of (b) and (c): {err:.1e}")
    assert np.isfinite(err) and err < 1e-3, "the forward-mode pass and the backward passes disagree"


if __name__ == "__main__":
    main()
