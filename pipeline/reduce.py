"""The reduce stage: one model's step stores → per (step, bin) curves, saturation, interference.

The per-step stores are opened lazily with dask (``token_chunk`` tokens a chunk) and concatenated
along ``step``; no store is loaded whole. Per model it writes ``results/reduce/{model}.zarr``:

* for every per-token measurement m: ``m (step, bin)``, the mean over each log2-frequency bin's
  tokens, ``m_overall (step)``, the mean over all tokens, and ``m_quantile (step, bin, quantile)``;
  the means are matrix products with a (token, bin) indicator, summed chunk by chunk;
* the saturation rule (``pipeline.saturation``, Gradient Dissent §2): ``improving (step, bin)``,
  ``improving_overall (step)``, ``saturation_step`` (overall) and ``saturation_step_bin (bin)``;
  and ``dissent_onset_step``, the first step whose mean cos(∇h⁺, ∇h⁻) is at or below
  ``dissent_threshold`` (total dissent);
* loss-change interference (ZSL Eq. 2-4) for checkpoint pairs (t, 2t), or (t, next step) where
  2t is missing, indexed by t: ``interference``, ``change_magnitude`` per bin and overall;
* per-block summaries of the parameter decomposition and of D_W (``layer`` dim), and the output
  and input layers' (``head_*``, ``embed_*``); the logit-gradient rank curve per step.

``summarize`` stacks the per-model stores along ``model`` into ``results/summary.zarr``. Model
names are labels of the integer ``model`` coordinate (``pipeline.store``); ``open_summary``
restores them as the coordinate.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import xarray as xr

from pipeline.data import UNSEEN_BIN
from pipeline.logs import Progress
from pipeline.saturation import improving, saturation_step
from pipeline.schema import MEASUREMENTS
from pipeline.store import open_labeled, with_labels, write_zarr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReduceConfig:
    """The ``reduce`` section of the config."""

    saturation_tolerance: float = 0.01
    quantiles: tuple[float, ...] | list[float] = (0.1, 0.5, 0.9)
    dissent_threshold: float = -0.9
    token_chunk: int = 2**18  # tokens per dask chunk: bounds the reduction's memory
    duplicates: str = "warn"  # revisions with identical weights: "warn", "skip" or "fail"
    scheduler: str | None = None  # address of a dask.distributed scheduler; None: local threads


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
            f"{model}: revisions with identical weights ({listing}); see {table_path}. "
            "Set checkpoints.duplicates to warn or skip to go on."
        )
    log.warning("%s: revisions with identical weights: %s (policy %s)", model, listing, policy)
    if policy == "skip":
        drop = {s for s, _, _ in dups}
        return [p for p, s in zip(paths, steps) if s not in drop]
    return paths


def open_steps(paths: list[str], token_chunk: int = 2**18) -> xr.Dataset:
    """Open per-step extraction stores lazily as one dataset over (step, token), sorted by step."""
    if not paths:
        raise ValueError("no extraction stores to reduce: the model has no steps in the config")
    parts = [xr.open_zarr(p, chunks={"token": token_chunk}) for p in paths]
    ds = xr.concat(parts, dim="step", coords="minimal", compat="override", join="exact")
    return ds.sortby("step")


@dataclass(frozen=True)
class Bins:
    """The evaluation tokens' frequency bins, arranged for grouped statistics."""

    present: np.ndarray  # (n_bins,) the bin values that occur
    index: np.ndarray  # (token,) each token's position in ``present``
    order: np.ndarray  # (token,) the tokens sorted by bin
    bounds: np.ndarray  # (n_bins + 1,) each bin's run in ``order``

    @classmethod
    def of(cls, bins: np.ndarray) -> Bins:
        present, index = np.unique(bins, return_inverse=True)
        order = np.argsort(index, kind="stable")
        bounds = np.searchsorted(index[order], np.arange(present.size + 1))
        return cls(present, index, order, bounds)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.bounds)


def bin_statistics(values: np.ndarray, bins: Bins, q: list[float]) -> np.ndarray:
    """NaN-skipping mean, then quantiles ``q``, of each bin's values (pure numpy).

    values : (..., token). Returns (..., n_bins + 1, 1 + len(q)); the last row is over all tokens.
    The means are one ``bincount`` pass; each quantile is a linear-time selection.
    """
    nb = bins.present.size
    out = np.full((*values.shape[:-1], nb + 1, 1 + len(q)), np.nan)
    for idx in np.ndindex(values.shape[:-1]):
        x = values[idx].astype(np.float64)
        finite = ~np.isnan(x)
        sums = np.bincount(bins.index, weights=np.where(finite, x, 0.0), minlength=nb)
        n = np.bincount(bins.index, weights=finite, minlength=nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[idx][:nb, 0] = sums / n
            out[idx][nb, 0] = sums.sum() / n.sum()
        if not q:
            continue
        grouped = x[bins.order]
        for i, (lo, hi) in enumerate(zip(bins.bounds[:-1], bins.bounds[1:])):
            seg = grouped[lo:hi]
            seg = seg[~np.isnan(seg)]
            if seg.size:
                out[idx][i, 1:] = np.quantile(seg, q)
        if finite.any():
            out[idx][nb, 1:] = np.quantile(x[finite], q)
    return out


def bin_change(loss: np.ndarray, later: np.ndarray, bins: Bins) -> np.ndarray:
    """Per bin and overall (last row): ``Σ Δℓ``, ``Σ |Δℓ|`` and the token count, for the per-token
    loss changes ``Δℓ = later − loss`` along the last axis. Returns (..., n_bins + 1, 3)."""
    nb = bins.present.size
    delta = later.astype(np.float64) - loss
    out = np.empty((*delta.shape[:-1], nb + 1, 3))
    for idx in np.ndindex(delta.shape[:-1]):
        d = delta[idx]
        out[idx][:nb, 0] = np.bincount(bins.index, weights=d, minlength=nb)
        out[idx][:nb, 1] = np.bincount(bins.index, weights=np.abs(d), minlength=nb)
        out[idx][:nb, 2] = bins.counts
        out[idx][nb] = out[idx][:nb].sum(axis=0)
    return out


def _per_bin(func, args: list, bins: Bins, width: int, **kwargs):
    """Apply a (..., token) → (..., n_bins + 1, width) kernel lazily, one whole step a block."""
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
    """``m (step, bin)``, ``m_overall (step)``, and with quantiles ``m_quantile (step, bin,
    quantile)`` and ``m_quantile_overall (step, quantile)`` for every variable m."""
    out = {}
    nb = bins.present.size
    for name, da in data.data_vars.items():
        stats = _per_bin(bin_statistics, [da], bins, 1 + len(q), q=list(q))
        out[name] = stats.isel(group=slice(0, nb), stat=0).rename(group="bin")
        out[f"{name}_overall"] = stats.isel(group=nb, stat=0)
        if q:
            quant = stats.isel(stat=slice(1, None)).rename(stat="quantile")
            out[f"{name}_quantile"] = quant.isel(group=slice(0, nb)).rename(group="bin")
            out[f"{name}_quantile_overall"] = quant.isel(group=nb)
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
    losses, per bin and overall (lazy; ``check_loss_change`` verifies the result)."""
    sums = _per_bin(bin_change, [loss, later], bins, 3)
    net, total, n = (sums.isel(stat=k) for k in range(3))
    nb = bins.present.size
    D, M = 1 - abs(net) / total, total / n

    def per_bin(x):
        return x.isel(group=slice(0, nb)).rename(group="bin").assign_coords(bin=bins.present)

    return xr.Dataset(
        {
            "interference": per_bin(D),
            "change_magnitude": per_bin(M),
            "interference_overall": D.isel(group=nb),
            "change_magnitude_overall": M.isel(group=nb),
            "loss_change_overall": (net / n).isel(group=nb),
        }
    )


def check_loss_change(red: xr.Dataset) -> None:
    """``|ΔL| = M (1 − D)`` must hold exactly (up to float rounding) at every pair."""
    check = red["change_magnitude_overall"] * (1 - red["interference_overall"])
    ok = np.isclose(check, abs(red["loss_change_overall"]), rtol=1e-4, atol=1e-7)
    if not (ok | np.isnan(check)).all():
        raise AssertionError("loss-change interference: |ΔL| = M (1 − D) does not hold")


def layer_summaries(ds: xr.Dataset) -> xr.Dataset:
    """Per-block and output/input-layer summaries of the parameter decomposition and of D_W.

    Within a block, cos(∇θ⁺, ∇θ⁻) of the concatenated parameters is exact from per-tensor norms
    and cosines: ``Σ cos_p ‖a_p‖ ‖r_p‖ / sqrt(Σ ‖a_p‖² · Σ ‖r_p‖²)``; D_W is the size-weighted
    mean over the block's linear weights.
    """
    if "param_norm_attractive" not in ds:
        return xr.Dataset()
    p = ds[[v for v in ds.data_vars if v.startswith("param_")]].compute()
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
            "layer_interference": g(weighted.fillna(0)) / g(size.where(dw.notnull()).fillna(0)),
        }
    )
    out = out.assign_coords(layer=out["layer"].astype(np.int64))
    labels = list(ds.attrs.get("labels", {}).get("param", []))
    for prefix, key in (("head", "output_param"), ("embed", "input_param")):
        name = ds.attrs.get(key)
        if name in labels:
            i = labels.index(name)
            out[f"{prefix}_interference"] = dw.isel(param=i, drop=True)
            if prefix == "head":
                out["head_cos_attractive_repulsive"] = p["param_cos_attractive_repulsive"].isel(
                    param=i, drop=True
                )
    return out


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
    if duplicates_path:
        paths = check_duplicates(paths, cfg.duplicates, duplicates_path, model_name)
    with dask_scheduler(cfg.scheduler):
        red = _reduce(paths, model_name, cfg)
    write_zarr(red, out_path)
    sat = red["saturation_step"].item()
    log.info(
        "%s: final loss %.4f, saturation step %s",
        model_name,
        red["loss_overall"].values[-1],
        "none" if np.isnan(sat) else int(sat),
    )
    return red


def _reduce(paths: list[str], model_name: str, cfg: ReduceConfig) -> xr.Dataset:
    ds = open_steps(paths, cfg.token_chunk)
    steps = ds["step"].values
    log.info("%s: %d steps x %d tokens", model_name, steps.size, ds.sizes["token"])
    bins = Bins.of(ds["bin"].values)  # (token,) one int per evaluation token: small
    data = ds[list(MEASUREMENTS)].drop_vars(["target", "bin"], errors="ignore")
    partner = loss_change_pairs(steps)
    progress = Progress(log, steps.size, "steps")
    per_step = []
    for i, step in enumerate(steps):
        # one step at a time: memory is bounded by one step's tokens, however many steps
        parts = [grouped_statistics(data.isel(step=[i]), bins, list(cfg.quantiles))]
        if partner[i] >= 0:
            later = data["loss"].sel(step=partner[i])
            change = loss_change(data["loss"].isel(step=i), later, bins)
            parts.append(change.assign(pair_step=partner[i]).expand_dims(step=[step]))
        per_step.append(xr.merge(parts, join="outer").compute())
        progress.update(i + 1)
    red = xr.concat(per_step, dim="step", join="outer")
    if steps.size > 1:
        check_loss_change(red)
    log.info("%s: binned means, quantiles and interference done", model_name)
    red["n_tokens"] = ("bin", bins.counts.astype(np.int64))
    red = red.merge(layer_summaries(ds))
    if "logit_grad_rank" in ds:
        red["logit_grad_rank"] = ds["logit_grad_rank"].compute()
    red = red.transpose("step", "bin", ...)
    tol = cfg.saturation_tolerance
    red["improving"] = (("step", "bin"), improving(red["loss"].values, axis=0, tolerance=tol))
    red["improving_overall"] = ("step", improving(red["loss_overall"].values, 0, tol))
    red["saturation_step"] = saturation_step(red["loss_overall"].values, steps, tol)
    red["saturation_step_bin"] = ("bin", saturation_step(red["loss"].values, steps, tol, axis=0))
    red["dissent_onset_step"] = first_step_at_or_below(
        red["cos_attractive_repulsive_overall"].values, steps, cfg.dissent_threshold
    )
    hidden = ds.attrs.get("hidden_size", -1)
    red["hidden_size"] = hidden
    red["rank_ceiling"] = 2 * hidden if hidden > 0 else -1
    red["n_params"] = int(ds["param_size"].sum()) if "param_size" in ds.coords else -1
    red.attrs = {
        "model": model_name,
        "saturation_tolerance": tol,
        "dissent_threshold": cfg.dissent_threshold,
        "unseen_bin": UNSEEN_BIN,
        "weights_sha256": [xr.open_zarr(p).attrs["weights_sha256"] for p in paths],
    }
    red["step"] = red["step"].astype(np.int64)
    return red


def summarize(paths: dict[str, str], out_path: str) -> xr.Dataset:
    """Stack the per-model reductions along ``model`` (outer join on steps and bins)."""
    names = list(paths)
    parts = [xr.open_zarr(paths[n]).drop_attrs() for n in names]
    ds = xr.concat(parts, dim="model", join="outer", coords="minimal", compat="override")
    ds = ds.assign_coords(model=np.arange(len(names), dtype=np.int64))
    ds = with_labels(ds.compute(), {"model": names})
    write_zarr(ds, out_path)
    return ds


def open_summary(path: str) -> xr.Dataset:
    """Open ``results/summary.zarr`` with the model names as the ``model`` coordinate."""
    return open_labeled(path)
