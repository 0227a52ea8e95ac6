"""The extract stage: per-token measurements of one checkpoint, written as one Zarr store.

One forward pass through the model's body gives the final hidden states h (the input of the
output layer, found through ``get_output_embeddings()``); everything else is the closed-form
algebra of ``pipeline.decomposition``. The store ``results/extract/{model}/step{step}.zarr``
holds one variable per measurement over the ``token`` dimension (with ``target`` and ``bin``
coordinates from the evaluation set) and attrs naming the model, step, revision, weights
sha256, dtype, device and package versions. ``checkpoint_dataset`` (measure, label, conform)
is the one path from a model to that dataset, shared with the notebook API (``pipeline.api``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

import pipeline
from pipeline.checkpoints import load_checkpoint, weights_sha256
from pipeline.config import ExtractConfig
from pipeline.logs import Progress
from pipeline.maths.bottleneck import (
    kept_rank_curve,
    logit_gradient_gram,
    rank_curve,
    rank_sizes,
)
from pipeline.maths.decomposition import bottleneck_projector, decompose_at_h
from pipeline.maths.geometry import (
    Anisotropy,
    common_direction_share,
    head_spectrum,
    kl_to_uniform,
    sigma_ratio,
)
from pipeline.maths.parameters import STATISTICS, BodyRecorder, ParamGradients, output_layer_grads
from pipeline.schema import MEASUREMENTS, PARAM_STATISTICS, conform, param_statistic
from pipeline.store import open_store, with_labels, write_zarr

log = logging.getLogger(__name__)

try:  # GPT-2's linear layers are transformers' Conv1D: y = x W + b with W of shape (in, out)
    from transformers.pytorch_utils import Conv1D

    TRANSPOSED: tuple[type, ...] = (Conv1D,)
except ImportError:  # pragma: no cover
    TRANSPOSED = ()


def output_layer(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output embedding ``U (V, d)`` and bias ``b (V,)`` (None without one) of a causal LM."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(
            f"{type(model).__name__} has no output embedding (get_output_embeddings())"
        )
    if getattr(model.config, "final_logit_softcapping", None):
        raise ValueError(
            f"{type(model).__name__} caps its logits (final_logit_softcapping); the closed forms "
            "assume logits = U h + b"
        )
    return head.weight, getattr(head, "bias", None)


def final_hidden(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states (after the final norm) of shape (B, T, d), without computing logits."""
    return model.base_model(input_ids=input_ids).last_hidden_state


@dataclass
class Measurements:
    """Everything measured on one checkpoint."""

    tokens: dict[str, np.ndarray]  # (token,) float32 each, keyed by MEASUREMENTS
    params: dict[str, np.ndarray] | None  # (param,) each, see ParamGradients.summary
    param_names: list[str]
    rank_sizes: list[int]
    ranks: list[int]
    kept_ranks: list[int]  # of G projected onto U's column space
    hidden_size: int
    vocab_size: int
    output_param: str  # the output embedding's parameter name
    input_param: str  # the input embedding's parameter name
    spectrum: np.ndarray  # U's singular values, largest first
    geometry: dict[str, float]  # per-checkpoint scalars, keyed by GEOMETRY's names


def auto_sequences_per_pass(model, seq_len: int, cfg: ExtractConfig, device: torch.device) -> int:
    """Sequences per pass: half the free GPU memory over an estimate of one sequence's needs
    (logit blocks, activations kept for the backward passes); 16k tokens a pass on a CPU."""
    if device.type != "cuda":
        return max(1, 16384 // seq_len)
    free, _ = torch.cuda.mem_get_info(device)
    d = model.config.hidden_size
    layers = getattr(model.config, "num_hidden_layers", 12)
    width = torch.finfo(getattr(torch, cfg.dtype)).bits // 8
    per_token = 4 * (3 * cfg.vocab_chunk + 8 * d)  # float32 logit blocks and sums
    per_token += width * layers * d * (40 if cfg.parameters else 4)  # activations (+ recorded)
    return max(1, int(0.5 * free // (per_token * seq_len)))


@contextmanager
def float32_matmul(tf32: bool) -> Iterator[None]:
    """Let CUDA's float32 matrix products use TF32 inside the block (``tf32``), else IEEE.

    With a bfloat16 model the float32 products of the closed forms (logits ``h Uᵀ``, ``Uᵀp``,
    the output layer's and the recorded |δ||x| sums) take operands that are either bfloat16
    values, exact in TF32's 10-bit mantissa, or float32 exponentials and sums whose TF32
    rounding (2⁻¹¹) is below bfloat16's own (2⁻⁸); the accumulation stays float32. On an H100
    that makes them ~8× faster. A float32 model keeps IEEE products. No effect on a CPU.
    """
    flags = torch.backends.cuda.matmul
    before = flags.fp32_precision
    flags.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        yield
    finally:
        flags.fp32_precision = before


def measure(
    model,
    input_ids: np.ndarray,
    targets: np.ndarray,
    cfg: ExtractConfig,
    device: torch.device,
    tf32: bool | None = None,
) -> Measurements:
    """All measurements of one checkpoint on (sequence, position) inputs and targets.

    ``tf32`` (default: when the model is not float32) lets CUDA's float32 products use TF32,
    see ``float32_matmul``.
    """
    U, _ = output_layer(model)
    if tf32 is None:
        tf32 = U.dtype != torch.float32
    if tf32 and device.type == "cuda":
        log.info("float32 products of the closed forms in TF32 (the model is %s)", U.dtype)
    with float32_matmul(tf32):
        return _measure(model, input_ids, targets, cfg, device)


def _measure(
    model, input_ids: np.ndarray, targets: np.ndarray, cfg: ExtractConfig, device: torch.device
) -> Measurements:
    U, b = output_layer(model)
    V, d = U.shape
    if targets.max() >= V or targets.min() < 0:
        raise ValueError(
            f"target ids span {targets.min()}..{targets.max()} but the model's output has "
            f"{V} rows; the evaluation set was built for another vocabulary"
        )
    if input_ids.max() >= model.get_input_embeddings().weight.shape[0] or input_ids.min() < 0:
        raise ValueError("input ids fall outside the model's input vocabulary")
    U32, b32 = U.detach().float(), (b.detach().float() if b is not None else None)
    R = bottleneck_projector(U32)  # once per checkpoint
    params = ParamGradients.for_model(model, TRANSPOSED) if cfg.parameters else None
    head = model.get_output_embeddings()
    recorder = BodyRecorder(model, head, TRANSPOSED) if cfg.parameters else None
    names = dict(model.named_parameters())
    name_of = {id(p): n for n, p in names.items()}
    anisotropy = Anisotropy()
    tokens: dict[str, list[np.ndarray]] = {k: [] for k in MEASUREMENTS}
    rank_rows: list[tuple[torch.Tensor, ...]] = []
    n_rank = 0
    n_seq, seq_len = input_ids.shape
    batch = cfg.sequences_per_pass or auto_sequences_per_pass(model, seq_len, cfg, device)
    log.info("batches of %d sequences x %d positions", batch, seq_len)
    progress = Progress(log, n_seq * seq_len, "tokens")
    try:
        for lo in range(0, n_seq, batch):
            ids = torch.from_numpy(input_ids[lo : lo + batch].astype(np.int64)).to(device)
            tgt = torch.from_numpy(targets[lo : lo + batch].astype(np.int64)).to(device).reshape(-1)
            if recorder is not None:
                recorder.batch_size = ids.shape[0]
            with torch.set_grad_enabled(cfg.parameters):
                h_body = final_hidden(model, ids)  # (B, T, d) in the model's dtype
            h = h_body.detach().float().reshape(-1, d)  # (B·T, d)
            anisotropy.add(h)
            dec = decompose_at_h(h, U32, b32, R, tgt, cfg.vocab_chunk)
            for k in MEASUREMENTS:
                tokens[k].append(dec.measurements[k].cpu().numpy())
            if cfg.parameters:
                _backprop(h_body, dec, names, params, recorder)
                head = output_layer_grads(h, U32, b32, tgt, dec.lse, dec.log_pt, cfg.vocab_chunk)
                _add_head(params, head, name_of[id(U)], name_of[id(b)] if b is not None else None)
                params.n_tokens += h.shape[0]
            if n_rank < cfg.rank_tokens:
                take = min(cfg.rank_tokens - n_rank, h.shape[0])
                grad_h = dec.grad_att[:take] + dec.grad_rep[:take]  # ∇h = Uᵀg
                rank_rows.append((h[:take], tgt[:take], dec.lse[:take], grad_h))
                n_rank += take
            progress.update(min(lo + batch, n_seq) * seq_len)
    finally:
        if recorder is not None:
            recorder.remove()
    sizes, ranks, kept_ranks = [], [], []
    if rank_rows:
        hr, tr, lr, gr = (torch.cat(x) for x in zip(*rank_rows))
        sizes = rank_sizes(hr.shape[0])
        ranks = rank_curve(logit_gradient_gram(hr, U32, b32, tr, lr, cfg.vocab_chunk), sizes, V)
        kept_ranks = kept_rank_curve(gr, R, sizes)
        log.info(
            "logit-gradient rank %s, after the head %s, at %s tokens (d = %d)",
            ranks,
            kept_ranks,
            sizes,
            d,
        )
    spectrum = head_spectrum(U32)
    geometry = {
        "head_spectrum_kl": kl_to_uniform(spectrum),
        "head_sigma_ratio": sigma_ratio(spectrum),
        "head_common_direction": common_direction_share(U32),
        "anisotropy": anisotropy.value(),
    }
    log.info("geometry: %s", ", ".join(f"{k} {v:.4g}" for k, v in geometry.items()))
    return Measurements(
        tokens={k: np.concatenate(v).astype(np.float32) for k, v in tokens.items()},
        params=_store_names(params.summary()) if params is not None else None,
        param_names=list(names),
        rank_sizes=sizes,
        ranks=ranks,
        kept_ranks=kept_ranks,
        hidden_size=d,
        vocab_size=V,
        output_param=name_of[id(U)],
        input_param=name_of[id(model.get_input_embeddings().weight)],
        spectrum=spectrum,
        geometry=geometry,
    )


def _add_head(params: ParamGradients, head: dict, weight: str, bias: str | None) -> None:
    """Add the output layer's closed-form sums (``output_layer_grads``) to ``params``."""
    params.att[weight] += head["att_U"]
    params.rep[weight] += head["rep_U"]
    params.absolute[weight] += head["abs_U"]
    if bias is not None:
        params.att[bias] += head["att_b"]
        params.rep[bias] += head["rep_b"]


def _backprop(h_body, dec, names, params, recorder) -> None:
    """Back-propagate ∇h⁺ then ∇h⁻ from h into every parameter of the body; add the results to
    ``params`` and the recorded |δ||x| products to its A sums."""
    plist = [p for p in names.values() if p.requires_grad]
    pnames = [n for n, p in names.items() if p.requires_grad]
    for grad, acc, last in ((dec.grad_att, params.att, False), (dec.grad_rep, params.rep, True)):
        grads = torch.autograd.grad(
            h_body,
            plist,
            grad_outputs=grad.reshape(h_body.shape).to(h_body.dtype),
            retain_graph=not last,
            allow_unused=True,
        )
        for n, g in zip(pnames, grads):
            if g is not None:
                acc[n] += g.float()
    recorder.accumulate_absolute(params.absolute)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def extract_checkpoint(
    checkpoint: str,
    eval_path: str,
    out_path: str,
    model_name: str,
    step: int,
    cfg: ExtractConfig,
    allow_pickle: bool = False,
    revision: str | None = None,
) -> None:
    """Measure checkpoint ``checkpoint`` on the evaluation set and write ``out_path``."""
    device = resolve_device(cfg.device)
    ev = open_store(eval_path)
    if ev.sizes["token"] == 0:
        raise ValueError(f"the evaluation set {eval_path} is empty")
    sha = weights_sha256(checkpoint)
    log.info(
        "%s step %d: %d tokens on %s in %s", model_name, step, ev.sizes["token"], device, cfg.dtype
    )
    model = load_checkpoint(checkpoint, dtype=getattr(torch, cfg.dtype), allow_pickle=allow_pickle)
    attrs = {
        "model": model_name,
        "step": int(step),
        "revision": revision or f"step{step}",
        "weights_sha256": sha,
    }
    where = f"{model_name} step {step} ({checkpoint})"
    ds = checkpoint_dataset(model.to(device), ev, cfg, device, attrs, where)
    write_zarr(ds, out_path)
    log.info("mean loss %.4f, wrote %s", float(ds["loss"].mean()), out_path)


def checkpoint_dataset(
    model, ev: xr.Dataset, cfg: ExtractConfig, device: torch.device, attrs: dict, where: str
) -> xr.Dataset:
    """Measure ``model`` (on ``device``) on the evaluation set ``ev`` and label the result as
    the extract store holds it: over a ``step`` dimension of one (``attrs["step"]`` its
    coordinate, when given; ``pipeline.api`` drops it), the run's dtype, device and versions
    added to ``attrs``, conformed to the extract store's declaration. ``where`` names the
    checkpoint in errors."""
    import transformers

    meas = measure(model, ev["input_ids"].values, ev["targets"].values, cfg, device)
    empty = [k for k, v in meas.tokens.items() if not np.isfinite(v).any()]
    if empty:
        raise ValueError(
            f"{where}: {', '.join(empty)} came out NaN for every token; the checkpoint or the "
            "evaluation set is broken, nothing was written"
        )
    attrs = {
        **attrs,
        "dtype": cfg.dtype,
        "device": str(device),
        "pipeline_version": pipeline.__version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }
    ds = to_dataset(meas, ev, attrs)
    if "step" in attrs:
        ds = ds.expand_dims(step=np.array([attrs["step"]], dtype=np.int64))
    else:
        ds = ds.expand_dims("step")
    return conform(ds, "extract")


def _store_names(summary: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``ParamGradients.summary`` keyed by the stores' names (``param_size``, ``layer`` kept)."""
    return {param_statistic(k) if k in STATISTICS else k: v for k, v in summary.items()}


def to_dataset(meas: Measurements, ev: xr.Dataset, attrs: dict) -> xr.Dataset:
    """Label one checkpoint's measurements: ``token``, ``param`` and ``rank_tokens`` dims."""
    data = {k: ("token", v) for k, v in meas.tokens.items()}
    coords = {"token": ev["token"].values, "target": ev["target"]}
    if "bin" in ev:  # an evaluation set without frequency counts has no bins (pipeline.api)
        coords["bin"] = ev["bin"]
    labels = {}
    if meas.params is not None:
        p = meas.params
        data.update({k: ("param", p[k]) for k in PARAM_STATISTICS})
        coords.update(
            param=np.arange(len(meas.param_names)),
            param_size=("param", p["param_size"]),
            layer=("param", p["layer"]),
        )
        labels["param"] = meas.param_names
    if meas.ranks:
        data["logit_grad_rank"] = ("rank_tokens", np.asarray(meas.ranks, dtype=np.int64))
        data["logit_grad_rank_kept"] = (
            "rank_tokens",
            np.asarray(meas.kept_ranks, dtype=np.int64),
        )
        coords["rank_tokens"] = np.asarray(meas.rank_sizes, dtype=np.int64)
    data["head_singular_values"] = ("singular", meas.spectrum / meas.spectrum[0])
    # the index i of σ_i: models of other widths stack along it (outer join) in the summary
    coords["singular"] = np.arange(1, meas.spectrum.size + 1, dtype=np.int64)
    data.update({k: ((), v) for k, v in meas.geometry.items()})
    attrs = {
        **attrs,
        "hidden_size": meas.hidden_size,
        "vocab_size": meas.vocab_size,
        "update_rank_bound": 2 * meas.hidden_size,
        "output_param": meas.output_param,
        "input_param": meas.input_param,
    }
    return with_labels(xr.Dataset(data, coords=coords, attrs=attrs), labels)
