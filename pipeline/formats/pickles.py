"""Pickled checkpoint files (``.pt``, ``.bin``) read as tensors only.

``torch.load(weights_only=True)`` rebuilds tensors and plain containers and refuses every other
object without running any code from the file. ``load`` turns its refusal into a message that
says so (which object, that the file is refused, what to do) instead of torch's hint that
``weights_only=False`` "will likely succeed", which would run the file's code.
"""

from __future__ import annotations

import re
from pathlib import Path


def refusal(err: Exception) -> str | None:
    """The object a weights-only load refused (``module.name``), or None if ``err`` is not a
    refusal (a damaged or truncated file)."""
    import pickle

    if not isinstance(err, pickle.UnpicklingError):
        return None
    match = re.search(r"GLOBAL ([\w.]+)", str(err))
    return match.group(1) if match else "an object that is not a tensor"


def load(file: Path, what: str, mmap: bool = False, allowed: list | None = None):
    """``torch.load(file, weights_only=True)`` (with ``allowed`` types besides tensors); a
    ``ValueError`` naming the file, what it is and the fix otherwise."""
    import torch
    from torch.serialization import safe_globals

    try:
        with safe_globals(allowed or []):
            return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        refused = refusal(err)
        if refused is not None:
            raise ValueError(
                f"{file} ({what}) holds objects other than tensors ({refused}) and is refused: "
                "it is read as tensors only, so that no code in it ever runs. Save it again as "
                "tensors (a state dict), or use a checkpoint in safetensors"
            ) from None
        raise ValueError(
            f"cannot read {file} ({what}): {str(err).splitlines()[0]}; it is damaged or "
            "truncated: delete the checkpoint and re-run to fetch or save it again"
        ) from err
