"""The checkpoints stage: every suite's checkpoints as Hugging Face model directories, and loading
any of them for extraction.

The toy suite's models are trained here (``pipeline.toy.training``) and saved with
``save_pretrained`` on a Pythia-like schedule (step 0, powers of two, then evenly spaced).

Hub suites (Pythia, OLMo, …) are fetched one revision (or one subfolder of a revision) at a
time with ``fetch_revision`` into the shared hub cache, and a local run's checkpoints are read
where they lie: ``results/checkpoints/{model}/step{N}/`` becomes a directory of links to the
files its format reads (``pipeline.formats``). From there on every checkpoint is treated alike:
``load_checkpoint`` loads it through its format (safetensors first, no remote code), checks
the weights, and ``weights_sha256`` fingerprints them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline import formats
from pipeline.hub import cached_revisions, list_revisions
from pipeline.logs import quiet_transformers
from pipeline.optimizer import adamw_state, write_state, write_torch_state
from pipeline.provenance import SOURCE_FILE, snapshot_commit
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
    its optimizer's state beside it (``pipeline.optimizer``: AdamW's, or any other's), and the training loss of every step as
    ``out_dir/train_loss.tsv`` (``pipeline.fit.write_train_curve``).

    A model with a head rank is saved as an ordinary GPT-NeoX model whose output layer is the
    product U = A·B (so every stage reads it like any causal LM), with ``head_rank`` in its
    config; its optimizer files hold the moments of the factors A and B, which the update stage
    does not use (it follows these models' displacements between checkpoints).

    Returns the saved steps.
    """
    from pipeline.store import open_store
    from pipeline.toy.training import loss_terms, plain_model, toy_training

    stream = open_store(corpus_path)["train"].values
    out_dir = Path(out_dir)
    from pipeline.fit import TRAIN_CURVE, write_train_curve

    saved, losses = [], []
    origin = {
        "kind": "toy",
        "shape": dataclasses.asdict(model),
        "train": dataclasses.asdict(train),
        "vocab_size": vocab_size,
        "corpus": str(corpus_path),
        "format": "transformers",
    }
    for step, net, opt in toy_training(model, train, stream, vocab_size, losses):
        terms = loss_terms(train)
        if train.optimizer == "adamw":
            adamw = dataclasses.replace(adamw_state(opt[0], net), terms=terms)
            state = functools.partial(_write_adamw, adamw)
        else:
            state = functools.partial(_write_torch, opt, net, train.optimizer, step, terms)

        def write(directory, state=state, step=step):
            state(directory)
            source = {**origin, "step": step, "weights_sha256": weights_sha256(directory)}
            (directory / SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n")

        _save(plain_model(net), out_dir / f"step{step}", write)
        saved.append(step)
    write_train_curve(losses, out_dir / TRAIN_CURVE)
    return saved


def _write_adamw(state, directory: Path) -> None:
    """AdamW's state, with the sha256 of the weights saved beside it (the update stage checks
    that they belong together)."""
    write_state(dataclasses.replace(state, weights_sha256=weights_sha256(directory)), directory)


def _write_torch(optimizers, net, kind, step, terms, directory: Path) -> None:
    """Another optimizer's state, with the sha256 of the weights saved beside it."""
    write_torch_state(optimizers, net, kind, step, directory, terms, weights_sha256(directory))


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


def hub_patterns(
    allow_pickle: bool = False, format: str | None = None, subfolder: str | None = None
) -> list[str]:
    """The files fetched for one revision (under ``subfolder`` where the checkpoints are
    subfolders of one revision): the format's (``pipeline.formats``); with no format given, a
    transformers directory's and a Trainer checkpoint's, detected once fetched."""
    names = [format] if format else ["transformers", "trainer"]
    pats = sorted({p for n in names for p in formats.get(n).patterns(allow_pickle)})
    return [f"{subfolder}/{p}" for p in pats] if subfolder else pats


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
            known = _shorten(list_revisions(repo_id))
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
    repo_id: str,
    revision: str,
    allow_pickle: bool = False,
    format: str | None = None,
    subfolder: str | None = None,
) -> Path:
    """Download (or find in the hub cache) one checkpoint: a revision, or ``subfolder`` of it
    (a Trainer run pushed with ``hub_strategy="all_checkpoints"``), the files of its format.

    Uses ``hub_snapshot`` into the shared hub cache (``HF_HOME`` / ``HF_HUB_CACHE``), so
    revisions share blobs and nothing is copied per revision. With ``HF_HUB_OFFLINE=1`` a cached
    revision is found and a missing one is an error that says how to fetch it. Returns the
    checkpoint's directory in the snapshot; a ``ValueError`` says why it is incomplete.
    """
    where = f"{repo_id} revision {revision!r}" + (f" subfolder {subfolder!r}" if subfolder else "")
    if format is not None and formats.get(format).PICKLES_ONLY and not allow_pickle:
        raise ValueError(f"{where} ({format}): {formats.get(format).problem('.', False)}")
    path = hub_snapshot(
        repo_id, revision, hub_patterns(allow_pickle, format, subfolder), f"checkpoint {where}"
    )
    path = path / subfolder if subfolder else path
    if not path.is_dir():
        raise ValueError(f"{where}: no such folder in the repository")
    fmt = formats.resolve(path, format)
    why = fmt.problem(path, allow_pickle)
    if why is not None:
        raise ValueError(f"{where} ({fmt.NAME}): {why}")
    files = sorted(f.name for f in path.iterdir() if f.is_file())
    log.info(
        "%s resolved to commit %s (%s format): %s in %s",
        where,
        snapshot_commit(path),
        fmt.NAME,
        ", ".join(files),
        path,
    )
    return path


def link_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    format: str | None = None,
    allow_pickle: bool = False,
    source: dict | None = None,
) -> None:
    """Make ``dst`` a checkpoint directory of symbolic links to the files of ``src`` (a hub
    snapshot or a local checkpoint directory) that its format reads, beside a copy of its
    ``config.json`` (for an OLMo-native checkpoint, that of its transformers counterpart): a
    pointer, no copy of the weights, and a directory whose ``config.json`` stays when the
    source is deleted, so that nothing re-runs, and a ``source.json`` saying where it came from
    (``source``: the hub repository, revision and commit, or the local directory; the format),
    which the stores measured on it record. Written atomically."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such checkpoint directory")
    fmt = formats.resolve(src, format)
    why = fmt.problem(src, allow_pickle)
    if why is not None:
        raise ValueError(f"{src} is not a complete {fmt.NAME} checkpoint: {why}")
    tmp = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in fmt.linked_files(src):
        if f.name != SOURCE_FILE:
            (tmp / f.name).symlink_to(f.absolute())
    fmt.write_config(src, tmp)
    origin = {
        **(source or {"kind": "local", "path": str(src.resolve())}),
        "format": fmt.NAME,
        "weights_sha256": formats.weights_sha256(tmp),  # (duplicates are known before extraction)
    }
    (tmp / SOURCE_FILE).write_text(json.dumps(origin, indent=1) + "\n")
    log.info("linked %s → %s: %s", src, dst, json.dumps(origin))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def weight_files(path: str | os.PathLike) -> list[Path]:
    """A checkpoint's weight files, as its format names them."""
    return formats.detect(path).weight_files(path)


weights_sha256 = formats.weights_sha256


def load_checkpoint(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
    format: str | None = None,
):
    """Load the causal LM of a checkpoint directory through its format (``pipeline.formats``);
    no remote code is executed.

    Weights load from safetensors; ``.bin`` (pickle) files only with ``allow_pickle``, and then
    with ``weights_only`` loading; an OLMo-native checkpoint (fetched only with that opt-in)
    also with ``weights_only`` loading. Raises a ``ValueError`` that names the checkpoint if it
    cannot be read (a truncated file) or its weights hold NaN or infinity.
    """
    quiet_transformers()
    fmt = formats.resolve(path, format)
    try:
        model = fmt.load_model(path, dtype, allow_pickle)
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
