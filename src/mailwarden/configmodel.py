"""The base every configuration section is built on, wherever its model lives.

The site model composes sections owned by their parts (``[directory]`` in
:mod:`mailwarden.directory.config`, ``[guard]`` in :mod:`mailwarden.guard.config`): they share
one base so that every section is immutable, refuses unknown keys and strips white space alike,
and one error type through which cross-field rules name the key they mean.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FrozenModel(BaseModel):
    """Immutable once loaded, unknown keys refused (a typo is an error, not a silent default)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class KeyedValueError(ValueError):
    """A cross-field rule failed at a known key: ``path`` (relative to the model that raised)
    and the offending ``value`` let the loader name the line, as for single-field errors."""

    def __init__(self, message: str, path: tuple[str | int, ...], value: object = None) -> None:
        super().__init__(message)
        self.path = path
        self.value = value
