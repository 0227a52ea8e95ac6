"""The checkpoints stage: every suite's checkpoints as Hugging Face model directories, and loading
any of them for extraction.

The toy suite's models are trained here (``pipeline.toy.training``) and saved with
``save_pretrained`` on a Pythia-like schedule (step 0, powers of two, then evenly spaced).

Hub suites (Pythia, OLMo, …) are fetched one revision at a time with ``fetch_revision`` into the
shared hub cache, and ``results/checkpoints/{model}/step{N}/`` becomes a directory of links into
it. From there on every checkpoint is treated alike: ``load_checkpoint`` reads a Hugging Face
model directory (safetensors first, no remote code), checks the weights, and ``weights_sha256``
fingerprints them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline import olmo
from pipeline.logs import quiet_transformers
from pipeline.optimizer import adamw_state, write_sgd_state, write_state
from pipeline.toy.schedule import ToyModel, TrainConfig

log = logging.getLogger(__name__)


def train_toy(
    model: ToyModel,
    train: TrainConfig,
    corpus_path: str | os.PathLike,
    vocab_size: int,
    out_dir: str | os.PathLike,
) -> list[int]:
    """Train one toy model on the toy corpus's training stream (``pipeline.toy.training``) and
    save ``out_dir/step{N}/`` as a Hugging Face model directory at every scheduled step, with
    its optimizer's state beside it (``pipeline.optimizer``: AdamW's, or SGD's), and the training loss of every step as
    ``out_dir/train_loss.tsv`` (``pipeline.fit.write_train_curve``).

    A model with a head rank is saved as an ordinary GPT-NeoX model whose output layer is the
    product U = A·B (so every stage reads it like any causal LM), with ``head_rank`` in its
    config; its optimizer files hold the moments of the factors A and B, which the update stage
    does not use (it follows these models' displacements between checkpoints).

    Returns the saved steps.
    """
    from pipeline.store import open_store
    from pipeline.toy.training import plain_model, toy_training

    stream = open_store(corpus_path)["train"].values
    out_dir = Path(out_dir)
    from pipeline.fit import TRAIN_CURVE, write_train_curve

    saved, losses = [], []
    for step, net, opt in toy_training(model, train, stream, vocab_size, losses):
        if isinstance(opt, torch.optim.SGD):
            write = functools.partial(write_sgd_state, opt, net, step)
        else:
            write = functools.partial(write_state, adamw_state(opt, net))
        _save(plain_model(net), out_dir / f"step{step}", write)
        saved.append(step)
    write_train_curve(losses, out_dir / TRAIN_CURVE)
    return saved


def _save(net, path: Path, write_optimizer: Callable[[Path], None]) -> None:
    """Save ``net`` and, with ``write_optimizer(directory)``, its optimizer's state at ``path``
    (written beside it first, then moved into place)."""
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp, safe_serialization=True)
    write_optimizer(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


# --- checkpoints from the Hugging Face hub --------------------------------------------------

CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
]
SAFETENSORS_FILES = ["*.safetensors", "*.safetensors.index.json"]
PICKLE_FILES = ["*.bin", "*.bin.index.json"]  # only with an explicit opt-in (allow_pickle)


def hub_patterns(allow_pickle: bool = False, format: str = "transformers") -> list[str]:
    """The files fetched for one revision: config, tokenizer, weights (safetensors first); for
    an OLMo-native branch its config.yaml, model.pt and optim.pt (``pipeline.olmo``)."""
    if format == "olmo":
        return list(olmo.NATIVE_FILES)
    return (
        CONFIG_FILES + TOKENIZER_FILES + SAFETENSORS_FILES + (PICKLE_FILES if allow_pickle else [])
    )


def cached_revisions(repo_id: str) -> list[str]:
    """Revisions of ``repo_id`` recorded in the local hub cache (its ``refs/``)."""
    from huggingface_hub import constants

    refs = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs"
    if not refs.is_dir():
        return []
    return sorted((str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file()), key=_natural)


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def known_revisions(repo_id: str) -> list[str]:
    """The revisions of ``repo_id``: the hub's branches where it can be reached, else the cache's."""
    from huggingface_hub import HfApi, constants

    if not constants.HF_HUB_OFFLINE:
        try:
            refs = HfApi().list_repo_refs(repo_id)
            return sorted((b.name for b in refs.branches), key=_natural)
        except Exception:  # no network, unknown repository: fall back to the cache
            pass
    return cached_revisions(repo_id)


def _shorten(names: list[str], n: int = 12) -> str:
    if not names:
        return "none"
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


#: Attempts of a download that fails for a transient reason (a dropped connection, a 5xx);
#: a definitive failure (offline, no such revision) is reported at once.
DOWNLOAD_ATTEMPTS = 3


def hub_snapshot(repo_id: str, revision: str, patterns: list[str], what: str) -> Path:
    """``huggingface_hub.snapshot_download`` of ``patterns`` of one revision into the shared hub
    cache, with one clear error naming ``what`` (e.g. "the evaluation tokenizer"), the
    repository and the revision when it cannot be had, and in-process retries of transient
    failures only. Returns the snapshot directory."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
        except RevisionNotFoundError:
            known = _shorten(known_revisions(repo_id))
            raise ValueError(
                f"{what}: {repo_id} has no revision {revision!r}; revisions: {known}"
            ) from None
        except (RepositoryNotFoundError, GatedRepoError) as err:
            raise ValueError(
                f"{what}: the repository {repo_id} does not exist or needs access "
                f"({type(err).__name__}); check the name, or log in with `hf auth login`"
            ) from None
        except LocalEntryNotFoundError:
            cached = cached_revisions(repo_id)
            raise FileNotFoundError(
                f"{what}: {repo_id} revision {revision!r} is not in the hub cache "
                f"{constants.HF_HUB_CACHE} and the hub cannot be reached "
                f"(HF_HUB_OFFLINE={int(constants.HF_HUB_OFFLINE)}). Fetch it on a machine with "
                f"network access into the same HF_HOME: `hf download {repo_id} --revision "
                f"{revision}`; cached revisions: {_shorten(cached)}"
            ) from None
        except OSError as err:  # connection errors, timeouts, HTTP 5xx (HfHubHTTPError)
            if attempt == DOWNLOAD_ATTEMPTS:
                raise OSError(
                    f"{what}: downloading {repo_id} revision {revision!r} failed "
                    f"{DOWNLOAD_ATTEMPTS} times: {err}"
                ) from err
            log.warning("%s: attempt %d failed (%s); retrying", what, attempt, err)
            time.sleep(5 * attempt)
    raise AssertionError("unreachable")


def fetch_revision(
    repo_id: str, revision: str, allow_pickle: bool = False, format: str = "transformers"
) -> Path:
    """Download (or find in the hub cache) one revision's config, tokenizer and weights (or, in
    OLMo's native ``format``, its config.yaml, model.pt and optim.pt).

    Uses ``hub_snapshot`` into the shared hub cache (``HF_HOME`` / ``HF_HUB_CACHE``), so
    revisions share blobs and nothing is copied per revision. With ``HF_HUB_OFFLINE=1`` a cached
    revision is found and a missing one is an error that says how to fetch it. Returns the
    snapshot directory.
    """
    what = f"checkpoint {repo_id}"
    if format == "olmo":
        if not allow_pickle:
            raise ValueError(
                f"{repo_id} revision {revision!r} is in OLMo's native format: model.pt and "
                "optim.pt are pickles. Set allow_pickle: true on this model to read them (with "
                "weights_only loading, which runs no code)"
            )
        path = hub_snapshot(repo_id, revision, hub_patterns(format="olmo"), what)
        missing = [f for f in olmo.NATIVE_FILES if not (path / f).exists()]
        if missing:
            raise ValueError(
                f"{repo_id} revision {revision!r} has no {', '.join(missing)}: it is not an "
                "OLMo-native checkpoint (format: olmo) or its upload is incomplete"
            )
        return path
    path = hub_snapshot(repo_id, revision, hub_patterns(allow_pickle), what)
    if not any(path.glob("*.safetensors")) and not (allow_pickle and any(path.glob("*.bin"))):
        fix = (
            ""
            if allow_pickle
            else (
                "; if it has .bin (pickle) weights only, set allow_pickle: true on this model to load "
                "them (with weights_only=True)"
            )
        )
        raise ValueError(f"{repo_id} revision {revision!r} has no .safetensors weights{fix}")
    return path


def link_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, format: str = "transformers"
) -> None:
    """Make ``dst`` a Hugging Face model directory of symbolic links to the files of ``src``
    (a hub snapshot): a pointer into the cache, no copy. An OLMo-native snapshot gets a
    ``config.json`` of its transformers counterpart beside the links (``pipeline.olmo``).
    Written atomically."""
    src, dst = Path(src), Path(dst)
    native = format == "olmo"
    if not (src / ("config.yaml" if native else "config.json")).exists():
        raise FileNotFoundError(
            f"{src} is not "
            + (
                "an OLMo-native checkpoint (no config.yaml)"
                if native
                else "a Hugging Face model directory (no config.json)"
            )
        )
    tmp = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # an OLMo-native branch: only what is read (train.pt needs unrestricted unpickling)
    files = [src / f for f in olmo.NATIVE_FILES] if native else list(src.iterdir())
    for f in files:
        (tmp / f.name).symlink_to(f.absolute())
    if native:
        olmo.hf_config(olmo.read_config(src), str(src / "config.yaml")).save_pretrained(tmp)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def weight_files(path: str | os.PathLike) -> list[Path]:
    """A checkpoint's weight files: its safetensors, else its pickle (.bin) files."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files and olmo.is_native(path):
        files = [path / olmo.MODEL_FILE]
    if not files:
        raise FileNotFoundError(f"no weights (.safetensors, .bin or OLMo's model.pt) in {path}")
    return files


def weights_sha256(path: str | os.PathLike) -> str:
    """sha256 over a checkpoint's weight files (sorted by name, links followed), streamed."""
    h = hashlib.sha256()
    for f in weight_files(path):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_checkpoint(
    path: str | os.PathLike, dtype: torch.dtype = torch.float32, allow_pickle: bool = False
):
    """Load a causal LM from a Hugging Face model directory; no remote code is executed.

    Weights load from safetensors; ``.bin`` (pickle) files only with ``allow_pickle``, and then
    with ``weights_only`` loading; an OLMo-native checkpoint (fetched only with that opt-in)
    through ``pipeline.olmo.load_model``, also with ``weights_only`` loading. Raises a
    ``ValueError`` that names the checkpoint if it cannot be read (a truncated file) or its
    weights hold NaN or infinity.
    """
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        if olmo.is_native(path):
            model = olmo.load_model(path, dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=dtype,
                use_safetensors=None if allow_pickle else True,
                trust_remote_code=False,
                weights_only=True,
            )
    except Exception as err:
        raise ValueError(
            f"cannot load checkpoint {path}: {err}. Delete it and re-run to fetch or train it again."
        ) from err
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(
                f"checkpoint {path} has NaN or infinite weights in {name!r}; it cannot be measured"
            )
    model.eval()
    return model
