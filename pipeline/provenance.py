"""Where a store came from: its job's inputs (paths and sha256), where each checkpoint came from,
the tokenizer, and the package versions; written into every store's ``attrs["provenance"]``.

A job's entry script calls ``from_job(snakemake)`` once; ``pipeline.store.write_zarr`` then adds
``record()`` to every store the job writes: ``{"rule", "inputs": {name: [description, …]},
"software": {package: version}, …}``, plus what the stage found out while it ran (``add``: the
tokenizer it loaded, the commit a revision resolved to). Outside a job (a notebook) a store
records the software only.

An input is described by what identifies its content: a file by its sha256; a Zarr store by
the sha256 of its manifest (which holds the checksums of every chunk and metadata file); a
checkpoint (its ``config.json``) by its ``source.json``: the hub repository, revision and
resolved commit, or the local directory, or the toy training, and its config's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

#: Beside every checkpoint under results/checkpoints/: where it came from.
SOURCE_FILE = "source.json"
PACKAGES = (
    "torch",
    "transformers",
    "huggingface_hub",
    "safetensors",
    "tokenizers",
    "numpy",
    "zarr",
    "xarray",
    "dask",
    "lmfit",
    "snakemake",
)

#: The config files of the invocation, set by the workflow (rules/common.smk) for its jobs. Not a
#: rule's param: params re-run a rule when they change, and a config renamed or written out with
#: its defaults changes no result. Every job parses the Snakefile with the same --configfile
#: (locally and on SLURM), so each job's scripts inherit its own invocation's files.
CONFIG_FILES_ENV = "PIPELINE_CONFIG_FILES"

_job: dict = {}


def versions() -> dict[str, str]:
    """Python's and each installed package's version."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe(path: str | os.PathLike) -> dict:
    """What identifies one input's content (see the module's docstring)."""
    from pipeline.store import MANIFEST

    p = Path(path)
    out: dict = {"path": str(path)}
    if p.name == "config.json" and (p.parent / SOURCE_FILE).exists():
        out["checkpoint"] = json.loads((p.parent / SOURCE_FILE).read_text())
    if (p / MANIFEST).is_file():
        out["manifest_sha256"] = sha256_file(p / MANIFEST)
    elif p.is_file():
        out["sha256"] = sha256_file(p)
        out["bytes"] = p.stat().st_size
    elif not p.exists():
        out["missing"] = True
    return out


def from_job(smk) -> None:
    """Record the running Snakemake job (its rule and named inputs) for the stores it writes."""
    named = dict(smk.input.items())
    inputs = named or {"input": list(smk.input)}
    _job.clear()
    _job["rule"] = smk.rule
    _job["inputs"] = {
        k: [describe(v)] if isinstance(v, str) else [describe(x) for x in v]
        for k, v in inputs.items()
    }


def config_files() -> list[str]:
    """The config files that made this job's run, as given (``[]`` outside a workflow)."""
    return json.loads(os.environ.get(CONFIG_FILES_ENV, "[]"))


def add(key: str, value) -> None:
    """Something the stage found out while it ran (the tokenizer it loaded, a resolved commit)."""
    _job.setdefault("found", {})[key] = value


def record() -> dict:
    """The provenance of a store written now."""
    return {**_job, "software": versions()}


def checkpoint_source(**fields) -> dict:
    """The content of a checkpoint's ``source.json`` (None fields left out)."""
    return {k: v for k, v in fields.items() if v is not None}


def snapshot_commit(path: str | os.PathLike) -> str | None:
    """The commit of a hub-cache snapshot path (``…/snapshots/{commit}/…``), or None."""
    parts = Path(path).parts
    if "snapshots" in parts and parts.index("snapshots") + 1 < len(parts):
        return parts[parts.index("snapshots") + 1]
    return None


def directory_sha256(path: str | os.PathLike, names: list[str]) -> str:
    """sha256 over the named files of a directory (those present), in order."""
    h = hashlib.sha256()
    for name in names:
        f = Path(path) / name
        if f.is_file():
            h.update(name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()
