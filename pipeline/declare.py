"""How a configuration key is declared: its default and its one-line meaning, in one place.

Every config section is a frozen dataclass whose fields are made by one of three helpers:
``setting`` (a default the workflow fills in when the key is left out), ``required`` (no
default: the user gives it) or ``optional`` (no default, and absent unless given: a key that only
one source or format reads). ``defaults``, ``meaning`` and ``keys`` read them back for the config
loader, the JSON schema and the docs' table of keys. No imports beyond the standard library:
both ``pipeline.config`` and ``pipeline.toy`` declare their sections with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_KIND = "kind"
_MEANING = "meaning"


def setting(default: Any, meaning: str) -> Any:
    """A key with a default (a tuple stands for a list: dataclass defaults must be immutable)."""
    return dataclasses.field(default=default, metadata={_KIND: "setting", _MEANING: meaning})


def required(meaning: str) -> Any:
    """A key the user must give."""
    return dataclasses.field(metadata={_KIND: "required", _MEANING: meaning})


def optional(meaning: str) -> Any:
    """A key without a default that is absent unless given (it reads as None in the dataclass)."""
    return dataclasses.field(default=None, metadata={_KIND: "optional", _MEANING: meaning})


def keys(cls: type) -> dict[str, dataclasses.Field]:
    """The declared keys of a section, in declaration order."""
    return {f.name: f for f in dataclasses.fields(cls) if _KIND in f.metadata}


def kind(field: dataclasses.Field) -> str:
    """``"setting"``, ``"required"`` or ``"optional"``."""
    return field.metadata[_KIND]


def meaning(field: dataclasses.Field) -> str:
    return field.metadata[_MEANING]


def defaults(cls: type) -> dict[str, Any]:
    """The defaults of a section's settings, lists as lists (as YAML reads them)."""
    return {
        name: list(f.default) if isinstance(f.default, tuple) else f.default
        for name, f in keys(cls).items()
        if kind(f) == "setting"
    }
