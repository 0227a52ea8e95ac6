"""Checkpoints from a hub cache laid out as huggingface_hub lays it out, offline; the evaluation
and frequency sources of real suites; bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import xarray as xr

from pipeline.checkpoints import (
    fetch_revision,
    link_checkpoint,
    load_checkpoint,
    weights_sha256,
)
from pipeline.data import build_eval, write_eval, write_frequency
from pipeline.reduce import check_duplicates, find_duplicates
from pipeline.sources import (
    count_megatron,
    load_counts,
    read_texts,
    sample_windows,
    tokenize_stream,
)
from pipeline.store import write_zarr
from tests.hubcache import TEXT, build_suite, write_megatron

REPO = "EleutherAI/pythia-test"


def test_cached_revision_loads_offline(hub_cache, tmp_path):
    build_suite(hub_cache, REPO, [0, 1])
    snapshot = fetch_revision(REPO, "step1")
    assert snapshot.parent.parent == hub_cache / "models--EleutherAI--pythia-test"
    dst = tmp_path / "results/checkpoints/m/step1"
    dst.parent.mkdir(parents=True)
    link_checkpoint(snapshot, dst)
    assert (dst / "model.safetensors").is_symlink()  # a pointer into the cache, not a copy
    assert not (dst / "config.json").is_symlink()  # copied: it outlives the cache
    from safetensors import safe_open

    with safe_open(dst / "model.safetensors", "pt") as fh:
        assert "embed_out.weight" in fh.keys()  # Pythia's tensor names on disk
    model = load_checkpoint(dst)
    assert model.get_output_embeddings().weight.shape == (320, 16)
    blob = (snapshot / "model.safetensors").resolve()
    assert weights_sha256(dst) == hashlib.sha256(blob.read_bytes()).hexdigest()
    assert blob.name == weights_sha256(dst)  # the cache names LFS blobs by their sha256


def test_missing_revision_names_model_revision_and_fix(hub_cache):
    build_suite(hub_cache, REPO, [0, 2])
    with pytest.raises(FileNotFoundError) as err:
        fetch_revision(REPO, "step4")
    msg = str(err.value)
    assert REPO in msg and "step4" in msg and "hf download" in msg
    assert "step0, step2" in msg  # the revisions that do exist (in the cache)


def test_truncated_and_nan_weights_are_reported(hub_cache, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    build_suite(hub_cache, REPO, [0])
    src = fetch_revision(REPO, "step0")
    bad = tmp_path / "truncated"
    bad.mkdir()
    (bad / "config.json").write_bytes((src / "config.json").read_bytes())
    data = (src / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot load checkpoint .*truncated"):
        load_checkpoint(bad)
    nan = tmp_path / "nan"
    nan.mkdir()
    (nan / "config.json").write_bytes((src / "config.json").read_bytes())
    tensors = load_file(src / "model.safetensors")
    tensors["embed_out.weight"][0, 0] = torch.nan
    save_file(tensors, nan / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="nan.*NaN or infinite weights in 'lm_head.weight'"):
        load_checkpoint(nan)


def test_pickle_weights_need_an_opt_in(hub_cache, tmp_path):
    import torch
    from safetensors.torch import load_file

    build_suite(hub_cache, REPO, [0])
    src = fetch_revision(REPO, "step0")
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_bytes((src / "config.json").read_bytes())
    torch.save(load_file(src / "model.safetensors"), old / "pytorch_model.bin")
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        load_checkpoint(old)
    model = load_checkpoint(old, allow_pickle=True)  # weights_only loading
    assert model.config.hidden_size == 16


def test_duplicate_revisions_under_each_policy(tmp_path):
    assert find_duplicates([0, 1, 2, 4], ["a", "a", "b", "a"]) == [(1, 0, "a"), (4, 0, "a")]
    paths = []
    for step, sha in ((0, "x"), (1, "x"), (2, "y")):
        ds = xr.Dataset(
            {"loss": ("token", np.ones(3))}, attrs={"step": step, "weights_sha256": sha}
        )
        path = str(tmp_path / f"step{step}.zarr")
        write_zarr(ds, path)
        paths.append(path)
    table = tmp_path / "dups.tsv"
    assert check_duplicates(paths, "warn", str(table), "m") == paths
    assert table.read_text().splitlines()[1].split("\t") == ["m", "1", "0", "x"]
    assert check_duplicates(paths, "skip", str(table), "m") == [paths[0], paths[2]]
    with pytest.raises(ValueError, match="step 1 = step 0"):
        check_duplicates(paths, "fail", str(table), "m")


def test_text_and_jsonl_sources_use_the_models_tokenizer(hub_cache, tmp_path):
    tokenizer = build_suite(hub_cache, REPO, [0])
    txt = tmp_path / "a.txt"
    txt.write_text(TEXT)
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": line}) for line in TEXT.split(". ")))
    docs = list(read_texts([str(txt), str(jsonl)], text_field="body"))
    assert docs[0] == TEXT and len(docs) == 1 + len(TEXT.split(". "))
    stream = tokenize_stream(docs, tokenizer, max_tokens=10**6)
    ref = tokenizer(TEXT, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert stream[: len(ref)].tolist() == ref
    freq = tmp_path / "freq.zarr"
    write_frequency(np.bincount(stream, minlength=320), str(freq), source="test")
    spec = {
        "source": "text",
        "paths": [str(txt), str(jsonl)],
        "text_field": "body",
        "tokenizer": {"repo_id": REPO, "revision": "step0"},
        "sequences": 8,
        "context_length": 16,
        "seed": 3,
    }
    build_eval(spec, str(freq), str(tmp_path / "e1.zarr"))
    build_eval(spec, str(freq), str(tmp_path / "e2.zarr"))
    e1, e2 = xr.open_zarr(tmp_path / "e1.zarr"), xr.open_zarr(tmp_path / "e2.zarr")
    assert e1["input_ids"].shape == (8, 16)
    xr.testing.assert_identical(e1.load(), e2.load())  # the same V every time
    with pytest.raises(ValueError, match="has no field 'text'"):
        list(read_texts([str(jsonl)]))


def test_dataset_source_streams_a_local_builder(hub_cache, tmp_path):
    build_suite(hub_cache, REPO, [0])
    data = tmp_path / "val.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in TEXT.split(". ")))
    write_frequency(np.ones(320, dtype=int), str(tmp_path / "f.zarr"), source="test")
    spec = {
        "source": "dataset",
        "dataset": {"path": "json", "data_files": str(data), "split": "train"},
        "tokenizer": {"repo_id": REPO, "revision": "step0"},
        "sequences": 4,
        "context_length": 8,
    }
    build_eval(spec, str(tmp_path / "f.zarr"), str(tmp_path / "e.zarr"))
    assert xr.open_zarr(tmp_path / "e.zarr")["targets"].shape == (4, 8)


def test_pretokenized_source(tmp_path):
    write_frequency(np.ones(50, dtype=int), str(tmp_path / "f.zarr"), source="test")
    stream = np.arange(1000) % 50
    np.save(tmp_path / "ids.npy", stream)
    spec = {
        "source": "tokens",
        "path": str(tmp_path / "ids.npy"),
        "sequences": 5,
        "context_length": 9,
    }
    build_eval(spec, str(tmp_path / "f.zarr"), str(tmp_path / "e.zarr"))
    ev = xr.open_zarr(tmp_path / "e.zarr")
    windows = np.concatenate([ev["input_ids"].values, ev["targets"].values[:, -1:]], axis=1)
    for w in windows:  # each window is a contiguous run of the stream
        assert (np.diff(w) % 50 == 1).all()
    np.save(tmp_path / "win.npy", np.arange(40 * 12).reshape(40, 12) % 50)
    spec.update(path=str(tmp_path / "win.npy"))
    build_eval(spec, str(tmp_path / "f.zarr"), str(tmp_path / "e2.zarr"))
    assert xr.open_zarr(tmp_path / "e2.zarr")["input_ids"].shape == (5, 9)


def test_megatron_shards_are_counted_exactly(tmp_path):
    rng = np.random.default_rng(0)
    shards = []
    for k in range(2):
        docs = [rng.integers(0, 50277, size=rng.integers(1, 500)) for _ in range(30)]
        write_megatron(tmp_path / f"shard{k}", docs)
        shards.append(np.concatenate(docs))
    ref = np.bincount(np.concatenate(shards), minlength=50304)
    count = count_megatron(
        [str(tmp_path / "shard0"), str(tmp_path / "shard1")], 50304, chunk_tokens=777
    )
    np.testing.assert_array_equal(count, ref)
    assert (count[50277:] == 0).all()  # padded ids beyond the tokenizer are never seen
    with pytest.raises(ValueError, match="≥ frequency.vocab_size"):
        count_megatron([str(tmp_path / "shard0")], 1000)
    (tmp_path / "cut.idx").write_bytes((tmp_path / "shard0.idx").read_bytes())
    (tmp_path / "cut.bin").write_bytes((tmp_path / "shard0.bin").read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated"):
        count_megatron([str(tmp_path / "cut")], 50304)


def test_counts_vector_is_padded_to_the_model_vocabulary(tmp_path):
    np.save(tmp_path / "c.npy", np.array([5, 0, 3]))
    assert load_counts(str(tmp_path / "c.npy"), 5).tolist() == [5, 0, 3, 0, 0]
    with pytest.raises(ValueError, match="vocab_size is 2"):
        load_counts(str(tmp_path / "c.npy"), 2)


def test_bad_evaluation_sets_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="outside|another vocabulary|frequency table has"):
        write_eval(np.array([[1, 2, 99]]), np.zeros(10, dtype=int), str(tmp_path / "e.zarr"), "t")
    assert not (tmp_path / "e.zarr").exists()  # nothing half written
    with pytest.raises(ValueError, match="empty"):
        sample_windows(np.arange(100), 0, 8, seed=0)
    with pytest.raises(ValueError, match="eval.sequences asks for 50"):
        sample_windows(np.arange(100), 50, 8, seed=0)


def test_duplicate_warning_reaches_the_console_and_failure_needs_no_table(tmp_path, capfd):
    paths = []
    for step in (0, 1):
        ds = xr.Dataset(
            {"loss": ("token", np.ones(3))}, attrs={"step": step, "weights_sha256": "s"}
        )
        write_zarr(ds, tmp_path / f"step{step}.zarr")
        paths.append(str(tmp_path / f"step{step}.zarr"))
    check_duplicates(paths, "warn", str(tmp_path / "d.tsv"), "m")
    assert "WARNING: m: revisions with identical weights: step 1 = step 0" in capfd.readouterr().err
    with pytest.raises(ValueError) as err:
        check_duplicates(paths, "fail", str(tmp_path / "d.tsv"), "m")
    assert "d.tsv" not in str(err.value)  # Snakemake deletes a failed job's outputs


def test_a_trainer_checkpoint_in_a_hub_subfolder_loads_offline(hub_cache, tmp_path):
    """A Trainer run pushed with hub_strategy="all_checkpoints": checkpoint-N/ folders in one
    revision, fetched one subfolder at a time and linked like any revision."""
    from tests.hubcache import add_revision, make_model_files

    make_model_files(tmp_path / "model", seed=3)
    files = {f"checkpoint-4/{f.name}": f.read_bytes() for f in (tmp_path / "model").iterdir()}
    files["checkpoint-4/trainer_state.json"] = b'{"global_step": 4, "log_history": []}'
    files["checkpoint-8/config.json"] = files["checkpoint-4/config.json"]  # incomplete upload
    add_revision(hub_cache, "me/run", "main", files)
    path = fetch_revision("me/run", "main", subfolder="checkpoint-4", format="trainer")
    assert path.name == "checkpoint-4"
    link_checkpoint(path, tmp_path / "step4", format="trainer")
    model = load_checkpoint(tmp_path / "step4", format="trainer")
    assert model.config.hidden_size == 16
    with pytest.raises(ValueError, match="checkpoint-8.*no trainer_state.json|checkpoint-8.*not"):
        fetch_revision("me/run", "main", subfolder="checkpoint-8", format="trainer")
