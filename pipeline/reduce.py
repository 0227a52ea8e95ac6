"""The reduce stage: one model's step stores → per (step, bin) curves, saturation, interference.

The per-step stores are opened lazily with dask and concatenated along ``step``; the reduction
then works one step at a time, each numpy kernel (``pipeline.maths.binning``) seeing that step's
tokens as one block, so memory is bounded by one checkpoint's tokens however many steps there
are. Per model it writes ``results/reduce/{model}.zarr`` (every variable declared in
``pipeline.schema.REDUCE``):

* for every per-token measurement m: ``m (step, bin)``, the mean over each log2-frequency bin's
  tokens, ``overall(m) (step)``, the mean over all tokens, and with quantiles ``quantile(m)``
  and ``quantile_overall(m)``;
* the saturation rule (``pipeline.maths.saturation``, Gradient Dissent §2): ``improving``,
  ``improving_overall``, ``saturation_step`` and ``saturation_step_bin``; and
  ``dissent_onset_step``, the first step whose mean cos(∇h⁺, ∇h⁻) is at or below
  ``dissent_threshold`` (total dissent);
* loss-change interference (ZSL Eq. 2-4, ``pipeline.maths.interference``) for checkpoint pairs
  (t, 2t), or (t, next step) where 2t is missing, indexed by t;
* per-block summaries of the parameter decomposition and of D_W (``layer`` dim), and the output
  and input layers' (``head_*``, ``embed_*``); the logit-gradient rank curve per step.

The update stage's stores of a model are reduced apart (``reduce_updates``, rule
``reduce_update``) into ``results/reduce/{model}_update.zarr``: per step and update batch,
D, M, |ΔL|, D(Δ̃ℓ) and the correlations on V and on the update batch, D and M per bin, the
landscape's mean change, the sampled tokens' cross-sections, and the alignment sums.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline.config import ReduceConfig
from pipeline.logs import Progress, console_warning
from pipeline.maths import interference
from pipeline.maths.binning import Bins, bin_change, bin_statistics
from pipeline.maths.bottleneck import suppressed_forms
from pipeline.maths.frequency import UNSEEN_BIN
from pipeline.maths.saturation import improving, saturation_step
from pipeline.maths.update import change_summary
from pipeline.schema import (
    GEOMETRY,
    MEASUREMENTS,
    PARAM_STATISTICS,
    conform,
    overall,
    quantile,
    quantile_overall,
    update_summary,
)
from pipeline.store import labeled, open_store, remove_dead_writers_in, verify_store, write_zarr

log = logging.getLogger(__name__)


@contextmanager
def dask_scheduler(address: str | None):
    """Run the enclosed dask computations on the ``dask.distributed`` scheduler at ``address``
    (e.g. ``tcp://host:8786``), or on the local threaded scheduler when it is None."""
    if not address:
        yield
        return
    from dask.distributed import Client

    with Client(address, timeout="60s") as client:
        log.info("dask scheduler %s, %d workers", address, len(client.scheduler_info()["workers"]))
        yield


def find_duplicates(steps: list[int], shas: list[str]) -> list[tuple[int, int, str]]:
    """(step, earlier step with the same weights, sha256) for every revision whose weights
    repeat an earlier one's (several Pythia branches serve identical weights)."""
    first: dict[str, int] = {}
    dups = []
    for step, sha in sorted(zip(steps, shas)):
        if sha in first:
            dups.append((step, first[sha], sha))
        else:
            first[sha] = step
    return dups


def check_duplicates(paths: list[str], policy: str, table_path: str, model: str) -> list[str]:
    """Detect revisions with identical weights from the stores' ``weights_sha256``, write the
    table (step, duplicate_of, weights_sha256) and apply the policy: ``warn`` logs them,
    ``skip`` leaves the later copies out of the reduction, ``fail`` stops with an error.
    Returns the paths to reduce."""
    attrs = [xr.open_zarr(p).attrs for p in paths]
    steps = [int(a["step"]) for a in attrs]
    dups = find_duplicates(steps, [a["weights_sha256"] for a in attrs])
    with open(table_path, "w") as fh:
        fh.write("model\tstep\tduplicate_of\tweights_sha256\n")
        for step, of, sha in dups:
            fh.write(f"{model}\t{step}\t{of}\t{sha}\n")
    if not dups:
        return paths
    listing = ", ".join(f"step {s} = step {o}" for s, o, _ in dups)
    if policy == "fail":
        raise ValueError(
            f"{model}: revisions with identical weights: {listing} (weights sha256 "
            f"{', '.join(sorted({sha[:12] for _, _, sha in dups}))}…). Set checkpoints.duplicates "
            "to warn or skip to go on."
        )
    console_warning(log, f"{model}: revisions with identical weights: {listing} (policy {policy})")
    if policy == "skip":
        drop = {s for s, _, _ in dups}
        return [p for p, s in zip(paths, steps) if s not in drop]
    return paths


def open_steps(paths: list[str]) -> xr.Dataset:
    """Open per-step extraction stores lazily (their own chunks) as one dataset over
    (step, token), sorted by step."""
    if not paths:
        raise ValueError("no extraction stores to reduce: the model has no steps in the config")
    parts = [labeled(xr.open_zarr(p)) for p in paths]  # (older stores: names from attrs)
    common = set.intersection(*(set(p.data_vars) for p in parts))
    partial = sorted(set.union(*(set(p.data_vars) for p in parts)) - common)
    if partial:  # optional measurements that older extractions did not write
        log.warning(
            "left out %s: only some step stores hold them (extracted by an older version); "
            "delete the older stores and re-run to measure them at every step",
            ", ".join(partial),
        )
        parts = [p.drop_vars([v for v in partial if v in p]) for p in parts]
    check_sizes(paths, parts)
    ds = xr.concat(parts, dim="step", coords="minimal", compat="override", join="exact")
    return ds.sortby("step")


def check_sizes(paths: list[str], parts: list[xr.Dataset]) -> None:
    """Raise ``ValueError`` naming the step stores whose sizes differ from the model's other
    stores' (the most common size of each dimension): a store extracted from another model's
    checkpoint, or on another evaluation set."""
    from collections import Counter

    odd = []
    for dim in sorted(set().union(*(p.sizes for p in parts)) - {"step"}):
        sizes = [p.sizes.get(dim) for p in parts]
        usual, count = Counter(sizes).most_common(1)[0]
        for path, size in zip(paths, sizes):
            if size != usual:
                odd.append(f"{path} has {dim} {size}, the model's other {count} have {usual}")
    if odd:
        raise ValueError(
            "step stores of one model disagree in their sizes: "
            + "; ".join(odd)
            + ". The odd store was measured on another model's checkpoint or another "
            "evaluation set: check its checkpoint (results/checkpoints/…), delete the store and "
            "re-run"
        )


def _per_bin(func, args: list, bins: Bins, width: int, **kwargs):
    """Apply a (..., token) → (..., n_bins + 1, width) kernel lazily to ``args`` (one step's
    tokens each), all tokens in one block: per-bin quantiles need every token of a bin."""
    return xr.apply_ufunc(
        func,
        *[a.chunk({"token": -1}) for a in args],
        kwargs={"bins": bins, **kwargs},
        input_core_dims=[["token"]] * len(args),
        output_core_dims=[["group", "stat"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"group": bins.present.size + 1, "stat": width}},
    )


def grouped_statistics(data: xr.Dataset, bins: Bins, q: list[float]) -> xr.Dataset:
    """``m (step, bin)``, ``overall(m) (step)``, and with quantiles ``quantile(m) (step, bin,
    quantile)`` and ``quantile_overall(m) (step, quantile)`` for every variable m."""
    out = {}
    nb = bins.present.size
    for name, da in data.data_vars.items():
        stats = _per_bin(bin_statistics, [da], bins, 1 + len(q), q=list(q))
        out[name] = stats.isel(group=slice(0, nb), stat=0).rename(group="bin")
        out[overall(name)] = stats.isel(group=nb, stat=0)
        if q:
            quant = stats.isel(stat=slice(1, None)).rename(stat="quantile")
            out[quantile(name)] = quant.isel(group=slice(0, nb)).rename(group="bin")
            out[quantile_overall(name)] = quant.isel(group=nb)
    ds = xr.Dataset(out).assign_coords(bin=bins.present)
    return ds.assign_coords(quantile=list(q)) if q else ds


def loss_change_pairs(steps: np.ndarray) -> np.ndarray:
    """The partner t′ of each step t (ZSL): 2t where the suite has it, else the next step;
    -1 for the last step."""
    steps = np.sort(steps)
    have = set(steps.tolist())
    partner = np.full(steps.shape, -1, dtype=np.int64)
    for i, t in enumerate(steps[:-1]):
        partner[i] = 2 * t if (t > 0 and 2 * t in have) else steps[i + 1]
    return partner


def loss_change(loss: xr.DataArray, later: xr.DataArray, bins: Bins) -> xr.Dataset:
    """Loss-change interference D and magnitude M (ZSL Eq. 2-4) between two checkpoints' per-token
    losses (``token``,), per bin and overall, from the per-bin sums of ``bin_change``."""
    sums = _per_bin(bin_change, [loss, later], bins, 3).compute()
    net, total, n = (sums.isel(stat=k) for k in range(3))
    D, M = interference.from_sums(net.values, total.values, n.values)
    nb = bins.present.size

    def per_bin(x: np.ndarray) -> xr.DataArray:
        return xr.DataArray(x[:nb], dims=("bin",), coords={"bin": bins.present})

    return xr.Dataset(
        {
            "interference": per_bin(D),
            "change_magnitude": per_bin(M),
            overall("interference"): D[nb],
            overall("change_magnitude"): M[nb],
            overall("loss_change"): net.values[nb] / n.values[nb],
        }
    )


def check_loss_change(red: xr.Dataset) -> None:
    """``|ΔL| = M (1 − D)`` must hold exactly (up to float rounding) at every pair."""
    interference.check_net_change(
        red[overall("interference")].values,
        red[overall("change_magnitude")].values,
        red[overall("loss_change")].values,
    )


def layer_summaries(ds: xr.Dataset) -> xr.Dataset:
    """Per-block and output/input-layer summaries of the parameter decomposition and of D_W.

    Within a block, cos(∇θ⁺, ∇θ⁻) of the concatenated parameters is exact from per-tensor norms
    and cosines: ``Σ cos_p ‖a_p‖ ‖r_p‖ / sqrt(Σ ‖a_p‖² · Σ ‖r_p‖²)``; D_W is the size-weighted
    mean over the block's linear weights.
    """
    if not set(PARAM_STATISTICS) <= set(ds.data_vars):
        return xr.Dataset()
    p = ds[list(PARAM_STATISTICS)].compute()
    na, nr = p["param_norm_attractive"], p["param_norm_repulsive"]
    dot = p["param_cos_attractive_repulsive"] * na * nr
    size = ds["param_size"].astype(np.float64)
    dw = p["param_interference"]
    weighted = (dw * size).where(dw.notnull())
    layer = ds["layer"].compute()
    in_block = layer >= 0
    g = lambda x: x.where(in_block, drop=True).groupby(layer.where(in_block, drop=True)).sum()  # noqa: E731
    out = xr.Dataset(
        {
            "layer_cos_attractive_repulsive": g(dot) / np.sqrt(g(na**2) * g(nr**2)),
            "layer_norm_grad": np.sqrt(g(p["param_norm_grad"] ** 2)),
            "layer_norm_ratio_attractive": np.sqrt(g(na**2) / g(p["param_norm_grad"] ** 2)),
            "layer_norm_ratio_repulsive": np.sqrt(g(nr**2) / g(p["param_norm_grad"] ** 2)),
            "layer_interference": g(weighted.fillna(0)) / g(size.where(dw.notnull()).fillna(0)),
        }
    )
    out = out.assign_coords(layer=out["layer"].astype(np.int64))
    labels = [str(n) for n in ds["param"].values] if "param" in ds.coords else []
    head, embed = ds.attrs.get("output_param"), ds.attrs.get("input_param")
    if head in labels:
        i = labels.index(head)
        out["head_interference"] = dw.isel(param=i, drop=True)
        cos = p["param_cos_attractive_repulsive"].isel(param=i, drop=True)
        out["head_cos_attractive_repulsive"] = cos
    if embed in labels:
        out["embed_interference"] = dw.isel(param=labels.index(embed), drop=True)
    return out


def suppressed_by_step(ds: xr.Dataset) -> xr.Dataset:
    """The suppressed-fraction forms (``pipeline.maths.bottleneck.suppressed_forms``) per step,
    one step's tokens at a time."""
    rows = []
    for i in range(ds.sizes["step"]):
        one = ds[["kept_fraction", "logit_grad_sq"]].isel(step=i).compute()
        rows.append(suppressed_forms(one["kept_fraction"].values, one["logit_grad_sq"].values))
    data = {k: ("step", np.array([r[k] for r in rows])) for k in rows[0]}
    return xr.Dataset(data, coords={"step": ds["step"].values})


def first_step_at_or_below(curve: np.ndarray, steps: np.ndarray, threshold: float) -> float:
    """The first step where ``curve ≤ threshold``; NaN if none."""
    hit = np.flatnonzero(curve <= threshold)
    return float(steps[hit[0]]) if hit.size else float("nan")


def reduce_model(
    paths: list[str],
    out_path: str,
    model_name: str,
    cfg: ReduceConfig,
    duplicates_path: str | None = None,
) -> xr.Dataset:
    """Reduce one model's step stores and write ``results/reduce/{model}.zarr`` (and the table
    of revisions with identical weights, ``duplicates_path``)."""
    for p in paths:
        verify_store(p)
    for directory in sorted({Path(p).parent for p in paths}):
        for leftover in remove_dead_writers_in(directory):
            log.info("removed %s, left by a writer that died", leftover)
    if duplicates_path:
        paths = check_duplicates(paths, cfg.duplicates, duplicates_path, model_name)
    with dask_scheduler(cfg.scheduler):
        red = _reduce(paths, model_name, cfg)
    write_zarr(red, out_path)
    sat = red["saturation_step"].item()
    log.info(
        "%s: final loss %.4f, saturation step %s",
        model_name,
        red[overall("loss")].values[-1],
        "none" if np.isnan(sat) else int(sat),
    )
    return red


def _reduce(paths: list[str], model_name: str, cfg: ReduceConfig) -> xr.Dataset:
    ds = open_steps(paths)
    steps = ds["step"].values
    log.info("%s: %d steps x %d tokens", model_name, steps.size, ds.sizes["token"])
    bins = Bins.of(ds["bin"].values)  # (token,) one int per evaluation token: small
    red = _binned(ds, bins, list(cfg.quantiles))
    empty = [m for m in MEASUREMENTS if not np.isfinite(red[overall(m)].values).any()]
    if empty:
        raise ValueError(
            f"{model_name}: the mean of {', '.join(empty)} is NaN at every step; "
            "the extraction stores hold no finite values for it"
        )
    log.info("%s: binned means, quantiles and interference done", model_name)
    red["n_tokens"] = ("bin", bins.counts.astype(np.int64))
    red = red.merge(layer_summaries(ds))
    for name in ("logit_grad_rank", "logit_grad_rank_kept", *(v.name for v in GEOMETRY)):
        if name in ds:
            red[name] = ds[name].compute()
    red = red.merge(suppressed_by_step(ds))
    red = _saturation_and_dissent(red.transpose("step", "bin", ...), cfg)
    hidden = ds.attrs.get("hidden_size", -1)
    red["hidden_size"] = hidden
    red["update_rank_bound"] = 2 * hidden if hidden > 0 else -1
    red["vocab_size"] = ds.attrs.get("vocab_size", -1)
    red["n_params"] = int(ds["param_size"].sum()) if "param_size" in ds.coords else -1
    red.attrs = {
        "model": model_name,
        "saturation_tolerance": cfg.saturation_tolerance,
        "dissent_threshold": cfg.dissent_threshold,
        "unseen_bin": UNSEEN_BIN,
        "weights_sha256": [xr.open_zarr(p).attrs["weights_sha256"] for p in paths],
    }
    red["step"] = red["step"].astype(np.int64)
    return conform(red, "reduce")


def _binned(ds: xr.Dataset, bins: Bins, quantiles: list[float]) -> xr.Dataset:
    """Per-bin statistics of every measurement and the loss-change interference of every
    checkpoint pair, one step at a time: memory is bounded by one step's tokens."""
    data = ds[list(MEASUREMENTS)].drop_vars(["target", "bin"], errors="ignore")
    steps = ds["step"].values
    partner = loss_change_pairs(steps)
    progress = Progress(log, steps.size, "steps")
    per_step = []
    for i, step in enumerate(steps):
        parts = [grouped_statistics(data.isel(step=[i]), bins, quantiles)]
        if partner[i] >= 0:
            later = data["loss"].sel(step=partner[i], drop=True)
            change = loss_change(data["loss"].isel(step=i, drop=True), later, bins)
            parts.append(change.assign(pair_step=partner[i]).expand_dims(step=[step]))
        per_step.append(xr.merge(parts, join="outer").compute())
        progress.update(i + 1)
    red = xr.concat(per_step, dim="step", join="outer")
    if steps.size > 1:
        check_loss_change(red)
    return red


def _saturation_and_dissent(red: xr.Dataset, cfg: ReduceConfig) -> xr.Dataset:
    """The saturation rule per bin and overall (Gradient Dissent §2), and the dissent onset."""
    steps, tol = red["step"].values, cfg.saturation_tolerance
    loss, loss_overall = red["loss"].values, red[overall("loss")].values  # (step, bin), (step,)
    red["improving"] = (("step", "bin"), improving(loss, axis=0, tolerance=tol))
    red["improving_overall"] = ("step", improving(loss_overall, 0, tol))
    red["saturation_step"] = saturation_step(loss_overall, steps, tol)
    red["saturation_step_bin"] = ("bin", saturation_step(loss, steps, tol, axis=0))
    red["dissent_onset_step"] = first_step_at_or_below(
        red[overall("cos_attractive_repulsive")].values, steps, cfg.dissent_threshold
    )
    return red


# -- the update stage's stores: one model's reduced over steps -----------------------------------

#: The update stage's two sets of tokens: V (``eval``) and the update batch (``train``).
SETS = ("eval", "train")


def reduce_updates(paths: list[str], out_path: str | None = None) -> xr.Dataset:
    """One model's update stores (one per step) reduced to what the figures draw, over ``step``
    (``results/reduce/{model}_update.zarr``, declared by ``pipeline.schema.UPDATE_REDUCE``):
    per set (eval, train) and batch D, M, |ΔL|, D(Δ̃ℓ), Pearson and Spearman r, D and M per bin;
    the landscape's mean change over α; for batch 0 the per-token cross-sections of the sample
    and its (Δℓ, Δ̃ℓ) pairs; alignment and App. C.4's sums where gradients were measured."""
    parts = [_reduce_update(labeled(open_store(p))) for p in paths]
    directions = sorted({p.attrs["direction"] for p in parts})
    ds = xr.concat(parts, dim="step", join="outer", coords="minimal", compat="override")
    ds = conform(ds, "reduce_update")
    ds.attrs = {"direction": directions[0] if len(directions) == 1 else "mixed"}
    if out_path is not None:
        write_zarr(ds, out_path)
        log.info("%d update stores over steps %s → %s", len(paths), ds["step"].values, out_path)
    return ds


def _reduce_update(u: xr.Dataset) -> xr.Dataset:
    u = u.isel(step=0).load()
    out, per_bin = {}, []
    for s in SETS:
        prefix = "" if s == "eval" else "train_"
        if f"{prefix}loss_change" not in u:
            continue
        change = u[f"{prefix}loss_change"].values
        pred = u[f"{prefix}loss_change_pred"].values
        rows = [change_summary(change[k], pred[k]) for k in range(change.shape[0])]
        for key in rows[0]:
            out[update_summary(s, key)] = ("update_batch", np.array([r[key] for r in rows]))
        bins = u["bin"].values if s == "eval" else u["train_bin"].values
        D, M, present = _changes_per_bin(change, bins)
        per_bin.append(
            xr.Dataset(
                {
                    update_summary(s, "D_bin"): (("update_batch", "bin"), D),
                    update_summary(s, "M_bin"): (("update_batch", "bin"), M),
                },
                coords={"bin": present},
            )
        )
    land = u["landscape_mean"].values
    zero = int(np.flatnonzero(u["alpha"].values == 0)[0])
    one = int(np.flatnonzero(u["alpha"].values == 1)[0])
    out["update_norm"] = ("update_batch", u["update_norm"].values)
    out["landscape_change"] = (("update_batch", "alpha"), land - land[:, zero : zero + 1])
    tok = u["landscape"].values[0]
    out["landscape_token"] = (("alpha", "sample"), tok)
    out["sample_improved"] = ("sample", tok[one] < tok[zero])
    idx = u["sample_token"].values
    out["sample_loss_change"] = ("sample", u["loss_change"].values[0][idx])
    out["sample_loss_change_pred"] = ("sample", u["loss_change_pred"].values[0][idx])
    coords = {
        "update_batch": u["update_batch"].values,
        "alpha": u["alpha"].values,
        "sample": np.arange(idx.size),
        "sample_token": ("sample", idx),
    }
    if "coherence_g" in u:
        out["coherence_g"] = ("update_batch", u["coherence_g"].values)
        out["coherence_u"] = ("update_batch", u["coherence_uG"].values / u["coherence_ug"].values)
        out["update_grad_cos"] = ("gradient_token", u["update_grad_cos"].values[0])
        out["grad_norm"] = ("gradient_token", u["grad_norm"].values)
        coords["gradient_token"] = u["gradient_token"].values
    # the two sets' bins differ: an outer join puts both on their union
    ds = xr.merge([xr.Dataset(out, coords=coords), *per_bin], join="outer")
    ds.attrs = {"direction": u.attrs["direction"]}
    return ds.expand_dims(step=[int(u["step"])])


def _changes_per_bin(
    change: np.ndarray, bins: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """D and M per (batch, bin) of per-token changes (batch, token) with per-token bins (the
    same bins for every batch, or (batch, token))."""
    bins = np.broadcast_to(bins, change.shape)
    present = np.unique(bins)
    D = np.full((change.shape[0], present.size), np.nan)
    M = np.full_like(D, np.nan)
    for k in range(change.shape[0]):
        b = Bins.of(bins[k])
        sums = bin_change(np.zeros_like(change[k]), change[k], b)[:-1]  # (bin, 3)
        cols = np.searchsorted(present, b.present)
        D[k, cols], M[k, cols] = interference.from_sums(sums[:, 0], sums[:, 1], sums[:, 2])
    return D, M, present
