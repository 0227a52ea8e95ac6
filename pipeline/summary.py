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
from pipeline.maths.binning import Bins, bin_statistics
from pipeline.maths.geometry import w_error
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
    update_paths: dict[str, str] | None = None,
    frequency_path: str | None = None,
    eval_path: str | None = None,
    corpus_paths: dict[str, str] | None = None,
    train_fits: dict[str, tuple[str, str, str | None]] | None = None,
    groups: dict[str, tuple[str, int | None]] | None = None,
    seeds_paths: list[str] | None = None,
) -> xr.Dataset:
    """Stack the models' reductions and fits (both in ``models`` order) and write the summary.

    ``groups`` maps every model to its group (the entry its seeds came from, or its own name)
    and its seed (None where the workflow did not train it): ``group`` and ``seed`` along
    ``model``, so that ``summary.groupby("group")`` gives each setting's seeds.
    ``seeds_paths`` are the seeds stores (``pipeline.seeds``): each model's cross-seed KL
    divergence, its mean per (``step``, ``bin``) as ``seed_kl`` and over all tokens as
    ``seed_kl_overall`` (NaN for models without seeds).

    ``update_paths`` maps each model with update stores to their reduction over steps
    (``results/reduce/{model}_update.zarr``, ``pipeline.reduce.reduce_updates``), stacked
    likewise; ``attrs["update_direction"]`` names each model's direction. ``provenance`` (e.g. the config digest and the fit settings) is added to
    the attrs. ``frequency_path`` and ``eval_path`` add the training counts of every id and
    its occurrences among V's targets (``vocab`` dimension), for the frequency figure.
    ``corpus_paths`` maps toy models to their language's corpus store, whose true
    log-probability spectra give each model's W-error at its width (``language_w_error*``).
    ``train_fits`` maps the models with a training log to (fit JSON, curve, its reader:
    ``pipeline.fit.read_curve``): their curve becomes ``train_loss`` (``train_step``) and their
    fit ``bnsl_train_*``, flags in ``attrs["bnsl_train_flag"]``.
    """
    # the stores' encodings go: a value the stacking fills in (NaN where a model lacks a step)
    # must not be cast back to a stored dtype (a bool's NaN written as True)
    parts = [open_labeled(p).drop_encoding() for p in reduce_paths]
    attrs = _shared_attrs(models, [p.attrs for p in parts])
    attrs["weights_sha256"] = {m: list(p.attrs["weights_sha256"]) for m, p in zip(models, parts)}
    for p in parts:
        p.attrs = {}
    ds = xr.concat(parts, dim="model", join="outer", coords="minimal", compat="override")
    ds = ds.assign_coords(model=np.arange(len(models), dtype=np.int64))
    if update_paths:
        per_model = []
        for i, m in enumerate(models):
            if m in update_paths:
                u = open_labeled(update_paths[m]).drop_encoding().load()
                attrs.setdefault("update_direction", {})[m] = u.attrs["direction"]
                per_model.append(u.expand_dims(model=[i]).drop_attrs())
        u = xr.concat(per_model, dim="model", join="outer", coords="minimal", compat="override")
        ds = xr.merge([ds, u], join="outer", compat="override", combine_attrs="drop")
    fits = [read_fit(p) for p in fit_paths]
    for field in FIT_FIELDS:
        ds[bnsl(field)] = ("model", np.array([float(f[field]) for f in fits]))
    attrs["bnsl_flag"] = {m: f["flag"] for m, f in zip(models, fits)}
    if train_fits:
        train = {m: read_fit(f) for m, (f, _, _) in train_fits.items()}
        ds = ds.assign(training_curves(models, train_fits, train))
        attrs["bnsl_train_flag"] = {m: fit["flag"] for m, fit in train.items()}
    if frequency_path is not None and eval_path is not None:
        count = open_store(frequency_path)["count"].values
        targets = open_store(eval_path)["target"].values
        ds["train_count"] = ("vocab", count.astype(np.int64))
        ds["eval_count"] = ("vocab", np.bincount(targets, minlength=count.size).astype(np.int64))
    if corpus_paths:
        ds = ds.assign(language_w_errors(models, ds["hidden_size"].values, corpus_paths))
    if seeds_paths:
        ds = ds.assign(seed_divergences(models, seeds_paths, ds["step"].values, ds["bin"].values))
    if groups:
        names = [groups[m][0] for m in models]
        ds["group"] = ("model", np.array(names, dtype=np.dtypes.StringDType()))
        seeds = [np.nan if groups[m][1] is None else groups[m][1] for m in models]
        ds["seed"] = ("model", np.array(seeds, dtype=float))
        ds = ds.set_coords(["group", "seed"])
    ds.attrs = {**attrs, **(provenance or {}), "pipeline_version": pipeline.__version__}
    ds = with_labels(conform(ds.compute(), "summary"), {"model": models})
    write_zarr(ds, out_path)
    log.info("%d models, %d steps, %d bins", len(models), ds.sizes["step"], ds.sizes["bin"])
    return ds


def seed_divergences(
    models: list[str], paths: list[str], steps: np.ndarray, bins: np.ndarray
) -> dict[str, tuple]:
    """The seeds stores' cross-seed KL per (model, step, bin) and per (model, step): each
    model's mean over the tokens of each bin (``pipeline.maths.binning``), NaN elsewhere."""
    per_bin = np.full((len(models), steps.size, bins.size), np.nan)
    overall = np.full((len(models), steps.size), np.nan)
    for path in paths:
        store = open_labeled(path)
        j = int(np.searchsorted(steps, store.attrs["step"]))
        if j == steps.size or steps[j] != store.attrs["step"]:
            raise ValueError(f"{path}: step {store.attrs['step']} is not among the summary's steps")
        token_bins = Bins.of(store["bin"].values)
        columns = np.searchsorted(bins, token_bins.present)
        for m in store["model"].values:
            stats = bin_statistics(store["seed_kl"].sel(model=m).values, token_bins, [])
            i = models.index(str(m))
            per_bin[i, j, columns] = stats[:-1, 0]
            overall[i, j] = stats[-1, 0]
    return {
        "seed_kl": (("model", "step", "bin"), per_bin),
        "seed_kl_overall": (("model", "step"), overall),
    }


def training_curves(
    models: list[str], train_fits: dict[str, tuple[str, str, str | None]], fits: dict[str, dict]
) -> dict[str, tuple]:
    """The training-loss curves (``model``, ``train_step``) of the models in ``train_fits`` (see
    ``summarize``) and their ``fits`` (``model``,), as ``read_fit`` returns them; NaN for the
    other models."""
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
        fit = fits[m]
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
    """Open ``results/summary.zarr`` with the model names as the ``model`` coordinate and its
    small coordinates (``group``, ``seed``) loaded, so that ``groupby("group")`` works on the
    lazy store."""
    ds = open_labeled(path)
    small = [c for c in ds.coords if c not in ds.indexes and ds[c].dims == ("model",)]
    return ds.assign_coords({c: ds[c].load() for c in small})
