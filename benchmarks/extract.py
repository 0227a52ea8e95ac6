"""Benchmark of the extraction engine against a plain forward pass and the straightforward method.

On one random model and one set of tokens, in one run, it times:

  (a) a plain forward pass (``model(input_ids).logits``);
  (b) the h-level extraction (all per-token measurements, no parameter gradients);
  (c) the full extraction (with parameter gradients and D_W), against one forward+backward
      of the summed loss (``model(input_ids, labels=…).loss.backward()``);
  (d) the straightforward method: full logits, autograd with masked logit gradients, two
      backward passes to h;

and prints tokens/s, peak memory (CUDA: allocator peak; CPU: peak RSS growth, sampled) and the
ratios b/a, c/(forward+backward), d/b. It also measures the h-level extraction's peak memory
with the vocabulary in chunks and in one block. Shapes come from Pythia's configs, weights are
random. Examples (see docs/performance.md)::

    .venv/bin/python benchmarks/extract.py --shape pythia-14m --tokens 8192
    python benchmarks/extract.py --shape pythia-1b --tokens 262144 --dtype bfloat16  # a GPU
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import psutil
import torch

from pipeline.config import ExtractConfig
from pipeline.extract import final_hidden, measure, output_layer
from pipeline.schema import PARAM_STATISTICS

SHAPES = {  # (hidden, layers, heads, intermediate); vocabulary 50,304 rows
    # Pythia's configs (GPT-NeoX)
    "pythia-14m": (128, 6, 4, 512),
    "pythia-70m": (512, 6, 8, 2048),
    "pythia-160m": (768, 12, 12, 3072),
    "pythia-1b": (2048, 16, 8, 8192),
    # the Zero-sum learning suite's OLMo configs (mlp_ratio 1: SwiGLU width d/2; tied), loaded as
    # pipeline.formats.olmo loads them
    "zsl-14m": (256, 4, 4, None),
    "zsl-144m": (1024, 16, 16, None),
    "zsl-472m": (2048, 16, 16, None),
}


def build(shape: str, dtype: torch.dtype, device: torch.device):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    d, layers, heads, inter = SHAPES[shape]
    if shape.startswith("zsl"):
        from pipeline.formats.olmo import build_model, hf_config

        olmo = {"d_model": d, "n_layers": layers, "n_heads": heads, "mlp_ratio": 1}
        olmo.update(layer_norm_type="rms", layer_norm_with_affine=False, include_bias=False)
        olmo.update(vocab_size=50280, embedding_size=50304, weight_tying=True)
        olmo.update(max_sequence_length=2048)
        torch.manual_seed(0)
        model = build_model(hf_config({"model": olmo}, shape), torch.float32)
        return model.to(device=device, dtype=dtype).eval()
    cfg = GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=d,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(cfg).to(device=device, dtype=dtype).eval()


class Peak:
    """Peak memory of a block: the CUDA allocator's, or sampled RSS growth on a CPU."""

    def __init__(self, device: torch.device):
        self.device, self.value = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.proc, self.base, self.stop = (
                psutil.Process(),
                psutil.Process().memory_info().rss,
                False,
            )
            self.top = self.base
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop:
            self.top = max(self.top, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.value = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop = True
            self.thread.join()
            self.value = self.top - self.base


def timed(fn, device, repeats: int):
    fn()  # warm-up
    times, peak = [], 0
    for _ in range(repeats):
        with Peak(device) as p:
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        peak = max(peak, p.value)
    return min(times), peak


def agreement(model, inputs, targets, cfg: ExtractConfig, device) -> None:
    """The full extraction of one batch with TF32 float32 products (the default for a bfloat16
    model) against IEEE products: relative difference ‖a − b‖ / ‖b‖ over tokens or parameters."""
    a = measure(model, inputs, targets, cfg, device, tf32=True)
    b = measure(model, inputs, targets, cfg, device, tf32=False)

    def rel(x, y):
        ok = np.isfinite(x) & np.isfinite(y)
        return float(np.linalg.norm(x[ok] - y[ok]) / max(np.linalg.norm(y[ok]), 1e-30))

    worst = {k: rel(a.tokens[k], b.tokens[k]) for k in a.tokens}
    worst.update({k: rel(a.params[k], b.params[k]) for k in PARAM_STATISTICS})
    print(f"TF32 against IEEE float32 products, {targets.size} tokens, relative difference:")
    for k, v in worst.items():
        print(f"  {k:32s} {v:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", choices=SHAPES, default="pythia-14m")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=None, help="sequences per batch (default: all)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vocab-chunk", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = build(args.shape, dtype, device)
    n_seq = args.tokens // args.seq_len
    batch = args.batch or n_seq
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50277, (n_seq, args.seq_len + 1), generator=g)
    inputs, targets = ids[:, :-1].numpy(), ids[:, 1:].numpy()
    n = n_seq * args.seq_len
    print(
        f"{args.shape} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
        f"{n} tokens in batches of {batch}x{args.seq_len}, {args.dtype} on {device}"
    )

    def batches():
        for lo in range(0, n_seq, batch):
            yield (
                torch.from_numpy(inputs[lo : lo + batch]).to(device),
                torch.from_numpy(targets[lo : lo + batch]).to(device),
            )

    def forward():
        with torch.no_grad():
            for x, _ in batches():
                model(input_ids=x)  # logits over the whole vocabulary

    def forward_backward():
        for x, y in batches():
            logits = model(input_ids=x).logits.float()
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            ).backward()
        model.zero_grad(set_to_none=True)

    def config(parameters: bool, chunk: int) -> ExtractConfig:
        return ExtractConfig(
            sequences_per_pass=batch,
            vocab_chunk=chunk,
            dtype=args.dtype,
            parameters=parameters,
            rank_tokens=0,
        )

    def extract(parameters: bool, chunk: int):
        return lambda: measure(model, inputs, targets, config(parameters, chunk), device)

    U, b = output_layer(model)

    def straightforward():
        for x, y in batches():
            with torch.no_grad():
                h = final_hidden(model, x).float().reshape(-1, U.shape[1])
            h.requires_grad_(True)
            logits = h @ U.float().T
            t = y.reshape(-1)
            loss = torch.nn.functional.cross_entropy(logits, t, reduction="none")
            (gl,) = torch.autograd.grad(loss.sum(), logits, retain_graph=True)
            true = torch.zeros_like(gl, dtype=torch.bool)
            true[torch.arange(t.numel()), t] = True
            (att,) = torch.autograd.grad(logits, h, gl * true, retain_graph=True)
            (rep,) = torch.autograd.grad(logits, h, gl * ~true)
            full = att + rep
            cos = torch.nn.functional.cosine_similarity
            for v in (cos(h, att), cos(h, rep), cos(full, att), cos(full, rep), cos(att, rep)):
                v.cpu()

    rows = {}
    for name, fn in (
        ("a forward", forward),
        ("b extraction at h", extract(False, args.vocab_chunk)),
        ("  (one vocabulary block)", extract(False, 50304)),
        ("forward+backward", forward_backward),
        ("c full extraction", extract(True, args.vocab_chunk)),
        ("d masked autograd", straightforward),
    ):
        rows[name] = timed(fn, device, args.repeats)
        s, peak = rows[name]
        print(
            f"{name:26s} {s:8.3f} s {n / s:12,.0f} tokens/s  peak {peak / 2**20:9.1f} MiB",
            flush=True,
        )
    if device.type == "cuda" and dtype != torch.float32:
        agreement(model, inputs[:batch], targets[:batch], config(True, args.vocab_chunk), device)
    t = {k: v[0] for k, v in rows.items()}
    print(f"b/a = {t['b extraction at h'] / t['a forward']:.2f}   (goal <= 1.3)")
    print(
        f"c/(forward+backward) = {t['c full extraction'] / t['forward+backward']:.2f}   (goal <= 2.5)"
    )
    print(f"d/b = {t['d masked autograd'] / t['b extraction at h']:.2f}   (goal >= 2)")


if __name__ == "__main__":
    main()
