"""Bad input data is refused at the stage that reads it, with a message that names the file,
the problem and the fix; what is doubtful but legal is warned about on the console."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.data import build_eval, build_update_batches, write_eval, write_frequency
from pipeline.maths.frequency import UNSEEN_BIN
from pipeline.sources import load_counts, read_texts
from tests.hubcache import build_suite

REPO = "test-org/tiny-suite"


@pytest.mark.parametrize(
    "counts, message",
    [
        (np.array([0.5, 0.25, 0.25]), r"non-integer counts at 3 ids \(id 0: 0.5\).*relative"),
        (np.array([3.0, np.nan, 1.0]), "NaN or infinite counts at 1 ids"),
        (np.array([3, -1, 1]), "negative counts"),
        (np.ones((2, 3), dtype=int), "1-D"),
        (np.array(["a", "b"]), "must be numbers"),
        (np.arange(10), "has 10 counts but frequency.vocab_size is 8"),
    ],
)
def test_bad_counts_are_refused_naming_the_file(tmp_path, counts, message):
    path = tmp_path / "counts.npy"
    np.save(path, counts)
    with pytest.raises(ValueError, match=message) as err:
        load_counts(str(path), vocab_size=8)
    assert str(path) in str(err.value)


def test_integral_float_counts_are_exact_and_padded(tmp_path):
    path = tmp_path / "counts.npy"
    np.save(path, np.array([3.0, 0.0, 2.0**40]))
    np.testing.assert_array_equal(load_counts(str(path), 5), [3, 0, 2**40, 0, 0])


def test_text_errors_name_the_file_and_line(tmp_path):
    bad_json = tmp_path / "a.jsonl"
    bad_json.write_text('{"text": "fine"}\n\n{"text": "cut off\n')
    with pytest.raises(ValueError, match=rf"{bad_json}:3 is not valid JSON"):
        list(read_texts([str(bad_json)]))
    not_utf8 = tmp_path / "b.txt"
    not_utf8.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{not_utf8} is not UTF-8"):
        list(read_texts([str(not_utf8)]))
    not_text = tmp_path / "c.jsonl"
    not_text.write_text('{"text": 3}\n')
    with pytest.raises(ValueError, match=rf"{not_text}:1: field 'text' is not a string"):
        list(read_texts([str(not_text)]))


def test_ids_out_of_range_only_as_inputs_are_refused(tmp_path):
    bins = np.zeros(10, dtype=np.int64)
    windows = np.array([[12, 1, 2], [3, 4, 5]])  # 12 is an input, never a target
    with pytest.raises(ValueError, match=r"inputs and targets\) span 1..12.*10 ids"):
        write_eval(windows, bins, str(tmp_path / "e.zarr"), source="test")
    assert not (tmp_path / "e.zarr").exists()


def test_unseen_evaluation_tokens_are_warned_about_on_the_console(tmp_path, capfd):
    bins = np.array([-3, -3, UNSEEN_BIN, -2])
    write_eval(np.array([[0, 1, 2, 2, 3]]), bins, str(tmp_path / "e.zarr"), source="test")
    err = capfd.readouterr().err
    assert "WARNING: 2 of 4 evaluation tokens (50.00%)" in err and "unseen bin" in err


def test_a_tokenizer_with_more_ids_than_the_counts_is_refused(hub_cache, tmp_path):
    tokenizer = build_suite(hub_cache, REPO, [0])
    text = tmp_path / "a.txt"
    text.write_text("the cat sat on the mat. " * 50)
    short = len(tokenizer) - 5  # counts made with a tokenizer that had fewer ids
    np.save(tmp_path / "counts.npy", np.ones(short, dtype=np.int64))
    counts = load_counts(str(tmp_path / "counts.npy"), 320)
    write_frequency(counts, str(tmp_path / "f.zarr"), source="counts.npy", counted_ids=short)
    spec = {
        "source": "text",
        "paths": [str(text)],
        "tokenizer": {"repo_id": REPO, "revision": "step0"},
        "sequences": 2,
        "context_length": 8,
    }
    with pytest.raises(ValueError, match=rf"has {len(tokenizer)} ids, and its own vocabulary"):
        build_eval(spec, str(tmp_path / "f.zarr"), str(tmp_path / "e.zarr"))
    write_frequency(np.ones(320, dtype=np.int64), str(tmp_path / "g.zarr"), source="full")
    build_eval(spec, str(tmp_path / "g.zarr"), str(tmp_path / "e.zarr"))  # the right counts
    assert xr.open_zarr(tmp_path / "e.zarr")["targets"].shape == (2, 8)


def neox_style_tokenizer(out: Path) -> int:
    """A tokenizer directory as the GPT-NeoX repository ships 20B_tokenizer.json: a BPE whose
    specials are <|endoftext|> (id 0) and <|unk|> (id 1), no <|padding|>, and a config naming
    <|padding|> as the pad token, which transformers then appends. Returns the file's ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tests.hubcache import TEXT

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=100,
        special_tokens=["<|endoftext|>", "<|unk|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT], trainer)
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|unk|>",
        "pad_token": "<|padding|>",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return tok.get_vocab_size()


def test_a_pad_token_transformers_appended_is_a_warning_not_a_refusal(tmp_path, capfd):
    from transformers import AutoTokenizer

    ids = neox_style_tokenizer(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tokenizer.convert_ids_to_tokens(1) == "<|unk|>"
    assert len(tokenizer) == ids + 1 and tokenizer.pad_token_id == ids  # appended
    write_frequency(np.ones(ids, dtype=np.int64), str(tmp_path / "f.zarr"), source="counts")
    text = tmp_path / "a.txt"
    text.write_text("the model learns the frequent tokens first. " * 40)
    spec = {
        "source": "text",
        "paths": [str(text)],
        "tokenizer": {"path": str(tmp_path / "tok")},
        "sequences": 2,
        "context_length": 8,
    }
    build_eval(spec, str(tmp_path / "f.zarr"), str(tmp_path / "e.zarr"))
    err = capfd.readouterr().err
    assert f"{ids} '<|padding|>'" in err and "added by transformers" in err
    assert "pad_token" in err
    # a text that produces the appended token is refused, naming it
    text.write_text("the model <|padding|> learns. " * 40)
    with pytest.raises(ValueError, match=rf"{ids} '<\|padding\|>' \(added by transformers"):
        build_eval(spec, str(tmp_path / "f.zarr"), str(tmp_path / "e2.zarr"))
    assert not (tmp_path / "e2.zarr").exists()


def test_an_offline_tokenizer_error_names_repository_revision_and_role(hub_cache):
    from pipeline.sources import load_tokenizer

    with pytest.raises(FileNotFoundError) as err:
        load_tokenizer({"repo_id": "nobody/missing", "revision": "v1"})
    message = str(err.value)
    assert "the evaluation tokenizer (eval.tokenizer)" in message
    assert "nobody/missing revision 'v1'" in message and "hf download nobody/missing" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one message


def test_counts_are_downloaded_only_with_their_checksum(tmp_path):
    import hashlib

    from pipeline.sources import download_verified

    src = tmp_path / "src.npy"
    np.save(src, np.arange(5))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "data" / "counts.npy"
    with pytest.raises(ValueError, match="not the configured"):
        download_verified(src.as_uri(), "0" * 64, str(out))
    assert not out.exists() and not list(out.parent.iterdir())
    download_verified(src.as_uri(), sha, str(out))
    np.testing.assert_array_equal(np.load(out), np.arange(5))


def test_an_unreachable_download_names_the_url_and_the_fix(tmp_path):
    from pipeline.sources import download_verified

    url = "http://127.0.0.1:9/pythia-unigrams.npy"  # the discard port: refused at once
    with pytest.raises(OSError, match=rf"cannot download {url}.*put it at .*counts.npy"):
        download_verified(url, "0" * 64, str(tmp_path / "counts.npy"), timeout=5)


def test_update_batches_from_exported_training_batches_keep_their_order(tmp_path):
    """A 2-D token array of windows is read in order (batch k = rows k·S … (k+1)·S − 1), with
    the user's label; ids beyond the frequency table are refused naming it."""
    write_frequency(np.arange(1, 51), str(tmp_path / "f.zarr"), source="test")
    rows = np.random.default_rng(0).integers(0, 50, (12, 9))
    np.save(tmp_path / "batches.npy", rows)
    spec = {
        "name": "b",
        "source": "tokens",
        "path": str(tmp_path / "batches.npy"),
        "sequences": 3,
        "context_length": 8,
        "label": "training batches 1-4",
    }
    build_update_batches(spec, 4, str(tmp_path / "f.zarr"), str(tmp_path / "u.zarr"))
    ub = xr.open_zarr(tmp_path / "u.zarr")
    np.testing.assert_array_equal(ub["input_ids"].values, rows.reshape(4, 3, 9))
    assert ub.attrs["source"] == "training batches 1-4"
    bins = xr.open_zarr(tmp_path / "f.zarr")["bin"].values
    np.testing.assert_array_equal(ub["bin"].values, bins[rows.reshape(4, 3, 9)[:, :, 1:]])
    write_frequency(np.arange(1, 11), str(tmp_path / "small.zarr"), source="test")
    with pytest.raises(ValueError, match="small.zarr has 10 ids"):
        build_update_batches(spec, 4, str(tmp_path / "small.zarr"), str(tmp_path / "v.zarr"))
    assert not (tmp_path / "v.zarr").exists()


def test_update_batches_from_text_are_named_a_held_out_sample(hub_cache, tmp_path):
    build_suite(hub_cache, REPO, [0])
    write_frequency(np.ones(320, dtype=int), str(tmp_path / "f.zarr"), source="test")
    (tmp_path / "a.txt").write_text("the rare tokens are learned late. " * 80)
    spec = {
        "name": "h",
        "source": "text",
        "paths": [str(tmp_path / "a.txt")],
        "tokenizer": {"repo_id": REPO, "revision": "step0"},
        "sequences": 2,
        "context_length": 7,
        "seed": 1,
    }
    build_update_batches(spec, 3, str(tmp_path / "f.zarr"), str(tmp_path / "u.zarr"))
    ub = xr.open_zarr(tmp_path / "u.zarr")
    assert ub["input_ids"].shape == (3, 2, 8)
    assert ub.attrs["source"] == "held-out text sample, text files (not the training batches)"


def test_input_files_are_checked_before_any_job_and_once(tmp_path):
    from pipeline.config import ConfigError
    from pipeline.inputs import check

    counts, text = tmp_path / "counts.npy", tmp_path / "eval.jsonl"
    np.save(counts, np.array([3, 1, 2]))
    text.write_text('{"text": "fine"}\n')
    config = {
        "frequency": {"name": "c", "source": "counts", "path": str(counts), "vocab_size": 8},
        "eval": {"name": "e", "source": "text", "paths": [str(text)]},
    }
    cache = tmp_path / "results/.input-checks.json"
    check(config, cache)
    assert set(json.loads(cache.read_text())) == {str(counts), str(text)}
    np.save(counts, np.array([0.5, 0.25, 0.25]))  # relative frequencies: refused
    with pytest.raises(ConfigError, match=rf"frequency.path: {counts} holds non-integer counts"):
        check(config, cache)
    np.save(counts, np.array([3, 1, 2]))
    text.write_text('{"text": "fine"}\n{"text": "cut\n')
    with pytest.raises(ConfigError, match=rf"eval.paths: {text}:2 is not valid JSON.*untouched"):
        check(config, cache)
    config["eval"] = {"name": "e", "source": "tokens", "path": str(tmp_path / "t.npy")}
    np.save(tmp_path / "t.npy", np.array([[1, 2], [-1, 3]]))
    with pytest.raises(ConfigError, match="eval.path: .*t.npy holds a negative token id"):
        check(config, cache)
