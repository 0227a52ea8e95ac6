"""What a hub repository holds, read from the hub or, offline, from the local hub cache (laid
out as ``huggingface_hub`` lays it out). Light (no torch): ``pipeline.plan`` discovers a hub
suite's checkpoints with it when the DAG is built."""

from __future__ import annotations

import re
from pathlib import Path


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _storage(repo_id: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def cached_revisions(repo_id: str) -> list[str]:
    """Revisions of ``repo_id`` recorded in the local hub cache (its ``refs/``)."""
    refs = _storage(repo_id) / "refs"
    if not refs.is_dir():
        return []
    return sorted((str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file()), key=_natural)


def list_revisions(repo_id: str) -> list[str]:
    """The revisions of ``repo_id``: the hub's branches where it can be reached, else the cache's."""
    from huggingface_hub import HfApi, constants

    if not constants.HF_HUB_OFFLINE:
        try:
            refs = HfApi().list_repo_refs(repo_id)
            return sorted((b.name for b in refs.branches), key=_natural)
        except Exception:  # no network, unknown repository: fall back to the cache
            pass
    return cached_revisions(repo_id)


def list_folders(repo_id: str, revision: str = "main") -> list[str]:
    """The top-level folders of one revision of ``repo_id`` (a Trainer run pushed with
    ``hub_strategy="all_checkpoints"`` has one per checkpoint): the hub's file listing where it
    can be reached, else the cached snapshot of that revision."""
    from huggingface_hub import HfApi, constants

    if not constants.HF_HUB_OFFLINE:
        try:
            files = HfApi().list_repo_files(repo_id, revision=revision)
            return sorted({f.split("/")[0] for f in files if "/" in f}, key=_natural)
        except Exception:  # no network: fall back to the cache
            pass
    ref = _storage(repo_id) / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = _storage(repo_id) / "snapshots" / commit
    if not snapshot.is_dir():
        return []
    return sorted((p.name for p in snapshot.iterdir() if p.is_dir()), key=_natural)
