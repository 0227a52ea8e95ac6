"""The notebook API (``pipeline.api``) against independent references: the per-token loss of a
plain forward pass and ``cross_entropy``; the store the extract stage writes for the same
checkpoint and evaluation set; numpy's ``floor(log2(count / total))`` for the bins; the ids
the tokenizer itself gives for texts; the summary's own reader for a run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.api import measure, open_run
from pipeline.config import ExtractConfig, FitConfig, ReduceConfig
from pipeline.data import write_eval, write_frequency
from pipeline.extract import extract_checkpoint
from pipeline.fit import fit_model
from pipeline.maths.frequency import UNSEEN_BIN
from pipeline.reduce import reduce_model
from pipeline.schema import declared
from pipeline.store import StoreError, open_store
from pipeline.summary import open_summary, summarize
from tests.hubcache import make_model_files, make_tokenizer
from tests.unit.stages.test_reduce import write_steps

V = 97  # tiny_neox's vocabulary


def windows(n_seq=5, window=13, seed=1, high=V):
    return np.random.default_rng(seed).integers(0, high, size=(n_seq, window))


def test_loss_is_a_plain_forward_pass_and_cross_entropy(tiny_neox):
    ids = windows()
    ds = measure(tiny_neox, ids)
    with torch.no_grad():
        logits = tiny_neox(input_ids=torch.from_numpy(ids[:, :-1])).logits
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, V), torch.from_numpy(ids[:, 1:]).reshape(-1), reduction="none"
    )
    np.testing.assert_allclose(ds["loss"].values, loss.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds["p_target"].values, np.exp(-loss.numpy()), rtol=1e-5)
    np.testing.assert_array_equal(ds["target"].values, ids[:, 1:].reshape(-1))
    assert "step" not in ds.dims and "bin" not in ds.coords  # no counts: no bins
    decl = declared("extract")["loss"]
    assert ds["loss"].attrs["long_name"] == decl.meaning and ds["loss"].attrs["units"] == decl.units
    assert ds.attrs["model"] == "GPTNeoXForCausalLM" and ds.attrs["dtype"] == "float32"


def test_measure_is_what_the_extract_stage_writes(tiny_neox, tmp_path):
    """A checkpoint on disk and an evaluation set built the project's way (frequency table,
    eval store): ``measure`` gives the variables, coordinates and attrs of the store."""
    checkpoint = tmp_path / "step3"
    tiny_neox.save_pretrained(checkpoint, safe_serialization=True)
    rng = np.random.default_rng(2)
    count = rng.integers(0, 40, size=V) * (rng.random(V) < 0.9)
    ids = windows(n_seq=4, window=9)
    freq = write_frequency(count, str(tmp_path / "frequency.zarr"), "test")
    write_eval(ids, freq["bin"].values, str(tmp_path / "eval.zarr"), "test")
    settings = dict(parameters=True, rank_tokens=16, sequences_per_pass=3, vocab_chunk=7)
    extract_checkpoint(
        str(checkpoint),
        str(tmp_path / "eval.zarr"),
        str(tmp_path / "out.zarr"),
        "tiny",
        3,
        ExtractConfig(device="cpu", **settings),
    )
    stored = open_store(tmp_path / "out.zarr").isel(step=0, drop=True).load()
    ours = measure(checkpoint, ids, counts=count, name="tiny", **settings)
    assert set(ours.data_vars) == set(stored.data_vars)
    assert set(ours.coords) == set(stored.coords) and dict(ours.sizes) == dict(stored.sizes)
    for name in [*ours.data_vars, *ours.coords]:
        assert ours[name].dims == stored[name].dims, name
        np.testing.assert_array_equal(ours[name].values, stored[name].values, err_msg=name)
        assert ours[name].attrs == stored[name].attrs, name
    # the store's step, revision, and the software versions write_zarr adds
    written = {k: v for k, v in stored.attrs.items() if k not in ("step", "revision", "provenance")}
    assert ours.attrs == written


def test_bins_are_floor_log2_of_the_target_frequency(tiny_neox):
    """Counts shorter than the vocabulary (padded), some ids unseen (−64)."""
    count = np.random.default_rng(3).integers(0, 6, size=90)
    ids = windows(high=90)
    ds = measure(tiny_neox, ids, counts=count)
    target = ids[:, 1:].reshape(-1)
    with np.errstate(divide="ignore"):
        ref = np.floor(np.log2(count[target] / count.sum()))
    ref = np.where(count[target] > 0, ref, -64)
    assert UNSEEN_BIN == -64 and (ref == -64).any()
    np.testing.assert_array_equal(ds["bin"].values, ref)
    assert ds["bin"].dims == ("token",)


def test_texts_are_the_ids_their_tokenizer_gives(tmp_path):
    tokenizer = make_tokenizer(tmp_path / "tokenizer")
    make_model_files(tmp_path / "model", seed=0)
    texts = ["the model learns the frequent tokens first.", "rare tokens late.", "loss curves"]
    stream = np.concatenate(
        [
            tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            for t in texts
        ]
    )
    L = 6
    n = stream.size // (L + 1)
    ref = measure(tmp_path / "model", stream[: n * (L + 1)].reshape(n, L + 1))
    ours = measure(
        tmp_path / "model", texts=texts, tokenizer=tmp_path / "tokenizer", context_length=L
    )
    np.testing.assert_array_equal(ours["target"].values, ref["target"].values)
    np.testing.assert_array_equal(ours["loss"].values, ref["loss"].values)
    # a 1-D stream of ids is cut the same way; by default into windows of the model's 64
    # positions (65 ids: one here, the rest left out)
    xr.testing.assert_equal(measure(tmp_path / "model", stream, context_length=L), ref)
    assert stream.size < 2 * 65
    whole = measure(tmp_path / "model", texts=texts, tokenizer=tokenizer)
    np.testing.assert_array_equal(whole["target"].values, stream[1:65])


def bad_inputs(tokenizer):
    ids = windows()
    return [
        (dict(ids=np.where(ids == ids[0, 0], V, ids)), ValueError, r"ids hold id 97 .*0\.\.96"),
        (dict(ids=ids - 1 - ids.max()), ValueError, "ids hold id -"),
        (dict(ids=ids, texts=["a"], tokenizer=tokenizer), ValueError, "not both"),
        (dict(), ValueError, "not neither"),
        (dict(texts=["the model"]), ValueError, "texts need a tokenizer: pass tokenizer="),
        (dict(texts=[], tokenizer=tokenizer), ValueError, "texts is empty"),
        (dict(ids=ids.astype(float)), TypeError, "ids must be integer"),
        (dict(ids=ids[0, :1]), ValueError, "not one window"),
        (dict(ids=ids, context_length=5), ValueError, "context_length is 5 but ids has windows"),
        (dict(ids=ids, counts=np.ones(V + 1, int)), ValueError, "counts argument has 98 counts"),
        (dict(ids=ids, counts=np.ones(10, int)), ValueError, "counts argument has 10 .* reach id"),
        (dict(ids=ids, counts=np.full(V, 0.5)), ValueError, "counts argument holds non-integer"),
        (dict(ids=ids, dtype="float33"), ValueError, "dtype 'float33' is not a torch dtype"),
    ]


def test_bad_inputs_are_refused_naming_the_argument(tiny_neox, tmp_path):
    tokenizer = make_tokenizer(tmp_path / "tokenizer")  # its ids reach beyond tiny_neox's 97
    for kwargs, error, message in bad_inputs(tokenizer):
        with pytest.raises(error, match=message):
            measure(tiny_neox, **kwargs)
    with pytest.raises(ValueError, match="texts tokenized with .* outside the model's vocab"):
        measure(tiny_neox, texts=["the model learns"], tokenizer=tokenizer)
    with pytest.raises(TypeError, match="model is a dict; give a causal LM"):
        measure({}, windows())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run's folder with a summary written by ``pipeline.summary``: two models (of one
    reduction and fit)."""
    tmp_path = tmp_path_factory.mktemp("run")
    results = tmp_path / "results"
    results.mkdir()
    paths, _, _ = write_steps(tmp_path, [0, 1], 20, 20)
    reduce_model(paths, str(tmp_path / "m.zarr"), "m", ReduceConfig())
    with pytest.warns(UserWarning, match="too_few_points"):  # 1 point: no fit
        fit_model(str(tmp_path / "m.zarr"), str(tmp_path / "m.json"), FitConfig(min_step=0))
    summarize(
        ["toy-d8", "toy-d16"],
        [str(tmp_path / "m.zarr")] * 2,
        [str(tmp_path / "m.json")] * 2,
        str(results / "summary.zarr"),
    )
    return results


def test_open_run_gives_the_models_by_name(run):
    for path in (run, run / "summary.zarr", str(run)):
        s = open_run(path)
        assert s["model"].values.tolist() == ["toy-d8", "toy-d16"]
        xr.testing.assert_identical(s.load(), open_summary(str(run / "summary.zarr")).load())
    assert s["loss_overall"].sel(model="toy-d16").dims == ("step",)


def test_open_run_refuses_a_folder_without_a_summary_and_a_damaged_store(run, tmp_path):
    where = re.escape(f"no summary at {run.parent}/summary.zarr; the runs in {run.parent}: {run}")
    with pytest.raises(FileNotFoundError, match=where):
        open_run(run.parent)  # the project's folder: names the run inside it
    with pytest.raises(FileNotFoundError, match="give a finished run's folder"):
        open_run(run / "nothing")
    damaged = tmp_path / "summary.zarr"
    shutil.copytree(run / "summary.zarr", damaged)
    next(p for p in (damaged / "loss_overall" / "c").rglob("*") if p.is_file()).unlink()
    with pytest.raises(StoreError, match="damaged"):
        open_run(damaged)


def test_importing_the_api_loads_no_torch(repo):
    code = "import sys, pipeline.api; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True)
