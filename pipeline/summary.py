"""The summary stage: every model's reduction and BNSL fit in one dataset,
``results/summary.zarr``, the one input of every figure.

The per-model stores are stacked along ``model`` (outer join on steps and bins); each model's
fit becomes the per-model variables ``bnsl_*`` (``pipeline.schema.FITS``) with its flag in
``attrs["bnsl_flag"]``, and a training-loss curve ``train_loss`` with its fit ``bnsl_train_*``; the attrs carry the run's provenance: the saturation tolerance and
dissent threshold the flags used, the fit settings, each model's weights hashes and the config
digest (``pipeline.config.digest``). Model names are labels of the integer ``model`` coordinate
(``pipeline.store``); ``open_summary`` restores them as the coordinate.
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

import pipeline
from pipeline.fit import read_curve, read_fit
from pipeline.maths.binning import Bins, bin_change
from pipeline.maths.geometry import w_error
from pipeline.maths.interference import from_sums
from pipeline.maths.update import change_summary
from pipeline.schema import FIT_FIELDS, bnsl, conform
from pipeline.store import open_labeled, open_store, with_labels, write_zarr

log = logging.getLogger(__name__)

#: Attrs of the per-model reductions that must agree across models (the run's settings).
SHARED_ATTRS = ("saturation_tolerance", "dissent_threshold", "unseen_bin")


def summarize(
    models: list[str],
    reduce_paths: list[str],
    fit_paths: list[str],
    out_path: str,
    provenance: dict | None = None,
    update_paths: dict[str, list[str]] | None = None,
    frequency_path: str | None = None,
    eval_path: str | None = None,
    corpus_paths: dict[str, str] | None = None,
    train_fits: dict[str, tuple[str, str, str | None]] | None = None,
) -> xr.Dataset:
    """Stack the models' reductions and fits (both in ``models`` order) and write the summary.

    ``update_paths`` maps each model to its update stores (``pipeline.update``), reduced over
    steps by ``summarize_updates`` and stacked likewise; ``attrs["update_direction"]`` names each
    model's direction. ``provenance`` (e.g. the config digest and the fit settings) is added to
    the attrs. ``frequency_path`` and ``eval_path`` add the training counts of every id and
    its occurrences among V's targets (``vocab`` dimension), for the frequency figure.
    ``corpus_paths`` maps toy models to their language's corpus store, whose true
    log-probability spectra give each model's W-error at its width (``language_w_error*``).
    ``train_fits`` maps the models with a training log to (fit JSON, curve, its reader:
    ``pipeline.fit.read_curve``): their curve becomes ``train_loss`` (``train_step``) and their
    fit ``bnsl_train_*``, flags in ``attrs["bnsl_train_flag"]``.
    """
    parts = [open_labeled(p) for p in reduce_paths]
    attrs = _shared_attrs(models, [p.attrs for p in parts])
    attrs["weights_sha256"] = {m: list(p.attrs["weights_sha256"]) for m, p in zip(models, parts)}
    for p in parts:
        p.attrs = {}
    ds = xr.concat(parts, dim="model", join="outer", coords="minimal", compat="override")
    ds = ds.assign_coords(model=np.arange(len(models), dtype=np.int64))
    updates = {m: p for m, p in (update_paths or {}).items() if p}
    if updates:
        per_model = []
        for i, m in enumerate(models):
            if m in updates:
                u = summarize_updates(updates[m])
                attrs.setdefault("update_direction", {})[m] = u.attrs["direction"]
                per_model.append(u.expand_dims(model=[i]).drop_attrs())
        u = xr.concat(per_model, dim="model", join="outer", coords="minimal", compat="override")
        ds = xr.merge([ds, u], join="outer", compat="override", combine_attrs="drop")
    fits = [read_fit(p) for p in fit_paths]
    for field in FIT_FIELDS:
        ds[bnsl(field)] = ("model", np.array([float(f[field]) for f in fits]))
    attrs["bnsl_flag"] = {m: f["flag"] for m, f in zip(models, fits)}
    if train_fits:
        ds = ds.assign(training_curves(models, train_fits))
        attrs["bnsl_train_flag"] = {m: read_fit(f)["flag"] for m, (f, _, _) in train_fits.items()}
    if frequency_path is not None and eval_path is not None:
        count = open_store(frequency_path)["count"].values
        targets = open_store(eval_path)["target"].values
        ds["train_count"] = ("vocab", count.astype(np.int64))
        ds["eval_count"] = ("vocab", np.bincount(targets, minlength=count.size).astype(np.int64))
    if corpus_paths:
        ds = ds.assign(language_w_errors(models, ds["hidden_size"].values, corpus_paths))
    ds.attrs = {**attrs, **(provenance or {}), "pipeline_version": pipeline.__version__}
    ds = with_labels(conform(ds.compute(), "summary"), {"model": models})
    write_zarr(ds, out_path)
    log.info("%d models, %d steps, %d bins", len(models), ds.sizes["step"], ds.sizes["bin"])
    return ds


def training_curves(
    models: list[str], train_fits: dict[str, tuple[str, str, str | None]]
) -> dict[str, tuple]:
    """The training-loss curves (``model``, ``train_step``) and their fits (``model``,) of the
    models in ``train_fits`` (see ``summarize``); NaN for the other models."""
    curves = {m: read_curve(curve, reader) for m, (_, curve, reader) in train_fits.items()}
    steps = np.unique(np.concatenate([s for s, _ in curves.values()]))
    if np.array_equal(steps, np.round(steps)):
        steps = steps.astype(np.int64)
    loss = np.full((len(models), steps.size), np.nan)
    out = {bnsl(f, "train"): np.full(len(models), np.nan) for f in FIT_FIELDS}
    for i, m in enumerate(models):
        if m not in curves:
            continue
        s, v = curves[m]
        loss[i, np.searchsorted(steps, s)] = v
        fit = read_fit(train_fits[m][0])
        for f in FIT_FIELDS:
            out[bnsl(f, "train")][i] = float(fit[f])
    return {
        "train_loss": xr.DataArray(
            loss, dims=("model", "train_step"), coords={"train_step": steps}
        ),
        **{name: ("model", v) for name, v in out.items()},
    }


def language_w_errors(
    models: list[str], widths: np.ndarray, corpus_paths: dict[str, str]
) -> dict[str, tuple]:
    """W-error(d) of each toy model's language at the model's width d, from the spectra in its
    corpus store (``pipeline.data.write_corpus``): of the true log-probability matrix as it is
    and with its rows centred; NaN for the other models."""
    names = {
        "language_w_error": "log_prob_singular_values",
        "language_w_error_centred": "log_prob_centred_singular_values",
    }
    out = {name: np.full(len(models), np.nan) for name in names}
    corpora = {p: open_store(p) for p in sorted(set(corpus_paths.values()))}  # once per language
    for i, m in enumerate(models):
        corpus = corpora.get(corpus_paths.get(m))
        if corpus is None or widths[i] <= 0:
            continue
        for name, var in names.items():
            if var in corpus:  # corpora written before the spectra were stored lack it
                out[name][i] = w_error(corpus[var].values, int(widths[i]))
    return {name: ("model", v) for name, v in out.items()}


def _shared_attrs(models: list[str], attrs: list[dict]) -> dict:
    out = {}
    for key in SHARED_ATTRS:
        values = {m: a.get(key) for m, a in zip(models, attrs)}
        if len({repr(v) for v in values.values()}) > 1:
            raise ValueError(f"the models' reductions disagree on {key}: {values}; re-run reduce")
        out[key] = next(iter(values.values()), None)
    return out


def open_summary(path: str) -> xr.Dataset:
    """Open ``results/summary.zarr`` with the model names as the ``model`` coordinate."""
    return open_labeled(path)


# --- one model's update stores reduced over steps ------------------------------------------

SETS = ("eval", "train")


def summarize_updates(paths: list[str]) -> xr.Dataset:
    """One model's update stores (one per step) reduced to what the figures draw, over ``step``:
    per set (eval, train) and batch D, M, |ΔL|, D(Δ̃ℓ), Pearson and Spearman r, D and M per bin;
    the landscape's mean change over α; for batch 0 the per-token cross-sections of the sample
    and its (Δℓ, Δ̃ℓ) pairs; alignment and App. C.4's sums where gradients were measured."""
    parts = [_summarize_one(open_labeled(p)) for p in paths]
    directions = sorted({p.attrs["direction"] for p in parts})
    ds = xr.concat(parts, dim="step", join="outer", coords="minimal", compat="override")
    ds.attrs = {"direction": directions[0] if len(directions) == 1 else "mixed"}
    return ds


def _summarize_one(u: xr.Dataset) -> xr.Dataset:
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
            out[f"{s}_{key}"] = ("batch", np.array([r[key] for r in rows]))
        bins = u["bin"].values if s == "eval" else u["train_bin"].values
        D, M, present = _per_bin(change, bins)
        per_bin.append(
            xr.Dataset(
                {f"{s}_D_bin": (("batch", "bin"), D), f"{s}_M_bin": (("batch", "bin"), M)},
                coords={"bin": present},
            )
        )
    land = u["landscape_mean"].values
    zero = int(np.flatnonzero(u["alpha"].values == 0)[0])
    one = int(np.flatnonzero(u["alpha"].values == 1)[0])
    out["update_norm"] = ("batch", u["update_norm"].values)
    out["landscape_change"] = (("batch", "alpha"), land - land[:, zero : zero + 1])
    tok = u["landscape"].values[0]
    out["landscape_token"] = (("alpha", "sample"), tok)
    out["sample_improved"] = ("sample", tok[one] < tok[zero])
    idx = u["sample_token"].values
    out["sample_loss_change"] = ("sample", u["loss_change"].values[0][idx])
    out["sample_loss_change_pred"] = ("sample", u["loss_change_pred"].values[0][idx])
    coords = {
        "batch": u["batch"].values,
        "alpha": u["alpha"].values,
        "sample": np.arange(idx.size),
        "sample_token": ("sample", idx),
    }
    if "coherence_g" in u:
        out["coherence_g"] = ("batch", u["coherence_g"].values)
        out["coherence_u"] = ("batch", u["coherence_uG"].values / u["coherence_ug"].values)
        out["update_grad_cos"] = ("gradient_token", u["update_grad_cos"].values[0])
        out["grad_norm"] = ("gradient_token", u["grad_norm"].values)
        coords["gradient_token"] = u["gradient_token"].values
    # the two sets' bins differ: an outer join puts both on their union
    ds = xr.merge([xr.Dataset(out, coords=coords), *per_bin], join="outer")
    ds.attrs = {"direction": u.attrs["direction"]}
    return ds.expand_dims(step=[int(u["step"])])


def _per_bin(change: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        D[k, cols], M[k, cols] = from_sums(sums[:, 0], sums[:, 1], sums[:, 2])
    return D, M, present
