"""site.toml → :class:`~mailwarden.site.model.Site`, with errors that point at the line.

``tomllib`` reports syntax errors with a line and column but forgets positions once parsed, so
for validation errors we find the line again from the key path (:func:`locate`). The message an
operator sees always has the form ``FILE:LINE: KEY.PATH: what is wrong (got VALUE)``.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mailwarden.errors import ConfigError
from mailwarden.site.model import Site

MAX_SITE_FILE = 4 * 1024 * 1024

_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*(\]\]?)\s*(?:#.*)?$")
_SIMPLE_KEY = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
_KEY_RE = re.compile(rf"^\s*({_SIMPLE_KEY}(?:\s*\.\s*{_SIMPLE_KEY})*)\s*=")
_PART_RE = re.compile(r""""((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+)""")


def _split_key(dotted: str) -> list[str]:
    return [a or b or c for a, b, c in _PART_RE.findall(dotted)]


def _entries(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line, key path) of every table header and ``key =`` line of TOML ``text``.

    ``[[array]]`` headers are counted, so the second ``[[services.default.imap]]`` table has
    the path ``services.default.imap.1``.
    """
    table: list[str] = []
    array_counts: dict[tuple[str, ...], int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        header = _HEADER_RE.match(line)
        if header and not line.lstrip().startswith("#"):
            parts = _split_key(header.group(2))
            if header.group(1) == "[[":
                key = tuple(parts)
                index = array_counts.get(key, -1) + 1
                array_counts[key] = index
                table = [*parts, str(index)]
            else:
                table = parts
            yield lineno, table
        else:
            key_match = _KEY_RE.match(line)
            if key_match:
                yield lineno, [*table, *_split_key(key_match.group(1))]


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """Best-effort line number (1-based) of the key ``path`` in TOML ``text``.

    Returns the line of the longest matching prefix of ``path``; when not even the first
    part is written as such (a missing key inside ``[[services.x.imap]]`` tables, whose
    parent ``services.x`` never appears alone), the first line inside the nearest parent.
    """
    want = [str(p) for p in path]
    best_line: int | None = None
    best_len = -1
    entries = list(_entries(text))
    for lineno, candidate in entries:
        matched = 0
        for have, need in zip(candidate, want, strict=False):
            if have != need:
                break
            matched += 1
        if matched == len(candidate) and matched > best_len:
            best_len, best_line = matched, lineno
    if best_line is None:
        for size in range(len(want), 0, -1):
            for lineno, candidate in entries:
                if candidate[:size] == want[:size]:
                    return lineno
    return best_line


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key_path(path: Sequence[str | int]) -> str:
    return ".".join(f'"{p}"' if isinstance(p, str) and "." in p else str(p) for p in path)


_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _syntax_error(source: str, exc: tomllib.TOMLDecodeError) -> str:
    """``FILE:LINE: not valid TOML: what (column N)`` from tomllib's message."""
    message = str(exc)
    position = _TOML_POSITION_RE.search(message)
    if position is None:
        return f"{source}: not valid TOML: {message}"
    what = message[: position.start()]
    return f"{source}:{position.group(1)}: not valid TOML: {what} (column {position.group(2)})"


_BACKENDS = frozenset({"embedded", "ldap", "sql"})


def _types(annotation: Any) -> list[Any]:
    """The concrete types behind an annotation (through Annotated, Optional and unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _types(arg)]
    return [annotation]


def _is_backend(kind: Any, backend: str | None) -> bool:
    """Whether ``kind`` is the directory model selected by ``backend`` (or not one at all)."""
    if backend is None or not (isinstance(kind, type) and issubclass(kind, BaseModel)):
        return True
    field = kind.model_fields.get("backend")
    return field is None or backend in typing.get_args(field.annotation)


def allowed_keys(path: Sequence[str | int], backend: str | None = None) -> list[str]:
    """The keys the site model accepts in the table at ``path`` (for "unknown key" errors);
    ``backend`` picks the directory backend's model among the tagged union."""
    current: list[Any] = [Site]
    for part in path:
        following: list[Any] = []
        for kind in current:
            origin = typing.get_origin(kind)
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                field = kind.model_fields.get(str(part))
                if field is not None:
                    following += _types(field.annotation)
            elif origin is dict:  # any key: the value's type
                following += _types(typing.get_args(kind)[1])
            elif origin is tuple and isinstance(part, int):
                following += _types(typing.get_args(kind)[0])
        current = [kind for kind in following if _is_backend(kind, backend)]
    return sorted(
        {
            name
            for kind in current
            if isinstance(kind, type) and issubclass(kind, BaseModel)
            for name in kind.model_fields
        }
    )


def _format_errors(source: str, text: str, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    paths: list[tuple[str | int, ...]] = []
    backends: list[str | None] = []
    for error in errors:
        backends.append(next((str(p) for p in error["loc"] if p in _BACKENDS), None))
        loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # pydantic puts the union tag (the backend name) into the path of tagged unions: drop it.
        # "[key]" marks an error in a table's key itself (a bad domain name): the path to that
        # key says it all.
        paths.append(tuple(p for p in loc if p not in {*_BACKENDS, "[key]"}))
    lines = []
    for error, path, backend in zip(errors, paths, backends, strict=True):
        # A list whose only item failed also reports "too short": the item's error says it all.
        if error["type"] == "too_short" and any(
            len(other) > len(path) and other[: len(path)] == path for other in paths
        ):
            continue
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] == "extra_forbidden" and path:
            known = allowed_keys(path[:-1], backend)
            message = f"unknown key {str(path[-1])!r}" + (
                f"; expected one of: {', '.join(known)}" if known else ""
            )
        shown_input: Any = error.get("input")
        has_input = error["type"] not in {"missing", "model_type"} and "input" in error
        # Cross-field rules (model validators) say which key they mean (KeyedValueError).
        cause = (error.get("ctx") or {}).get("error")
        extra_path = getattr(cause, "path", None)
        if extra_path:
            path = (*path, *extra_path)
            shown_input = getattr(cause, "value", None)
            has_input = shown_input is not None
        key = _key_path(path)
        line = locate(text, path) if path else None
        where = f"{source}:{line}" if line else source
        got = ""
        if has_input and path and not isinstance(shown_input, dict | list):
            got = f" (got {_describe(shown_input)})"
        lines.append(f"{where}: {key or '(top level)'}: {message}{got}")
    return "\n".join(lines)


def parse_site(text: str, *, source: str = "site.toml", base_dir: Path | None = None) -> Site:
    """Parse and validate site.toml ``text``; relative paths resolve against ``base_dir``."""
    if len(text) > MAX_SITE_FILE:
        raise ConfigError(f"{source}: file is larger than 4 MiB; is this really a site file?")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_error(source, exc)) from None
    directory = data.get("directory")
    if isinstance(directory, dict):
        # ``backend`` selects the model class, so pydantic needs it even though it defaults.
        directory.setdefault("backend", "embedded")
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, text, exc)) from None
    if base_dir is not None:
        directory = site.directory.resolve_paths(base_dir)
        if directory is not site.directory:
            site = site.model_copy(update={"directory": directory})
            site.model_post_init(None)
    if base_dir is not None:
        site = _resolve_profile_paths(site, base_dir)
        ca_file = site.audit.ca_file
        if ca_file is not None and not ca_file.is_absolute():
            site = site.model_copy(
                update={"audit": site.audit.model_copy(update={"ca_file": base_dir / ca_file})}
            )
            site.model_post_init(None)
    return site


def _resolve_profile_paths(site: Site, base_dir: Path) -> Site:
    """Signing files named relative to the site file live beside it, like the directory."""
    profiles = site.profiles
    update = {
        key: base_dir / value
        for key in ("signing_certificate", "signing_key", "signing_chain")
        if (value := getattr(profiles, key)) is not None and not value.is_absolute()
    }
    if not update:
        return site
    site = site.model_copy(update={"profiles": profiles.model_copy(update=update)})
    site.model_post_init(None)
    return site


def read_site_text(path: str | Path) -> str:
    """The text of the site file at ``path`` (the server's reload validates and publishes
    exactly the text it read, so it reads once and parses with :func:`parse_site`)."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read site file: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")  # editors on Windows like to add a BOM
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 (byte {exc.start})") from None


def load_site(path: str | Path) -> Site:
    """Read and validate the site file at ``path``."""
    file = Path(path)
    text = read_site_text(file)
    return parse_site(text, source=str(file), base_dir=file.resolve().parent)
