"""What a run's results depend on: its config without execution and presentation settings, every
section overlaid on its defaults, and that config's digest (the provenance of the results)."""

from __future__ import annotations

import hashlib
import json

from pipeline.config.declarations import NOT_SCIENCE
from pipeline.config.load import filled


def science(config: dict) -> dict:
    """The config as far as results depend on it: every declared section with its defaults
    (writing a default out changes nothing), without ``execution`` and ``plots``."""
    return {k: v for k, v in filled(config).items() if k not in NOT_SCIENCE}


def digest(config: dict) -> str:
    """sha256 of ``science(config)`` as canonical JSON: the provenance of a run's results."""
    text = json.dumps(science(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
