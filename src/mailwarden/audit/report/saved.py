"""The audit's saved runs: each run's JSON and HTML report in one folder, under a name made
of its start time, a bounded history, and ``latest.json``/``latest.html`` for whoever wants
only the newest (the operator console, a web server, a script).

Files are written whole, then renamed into place, so a reader never sees half a report.
``latest.*`` are relative symbolic links, replaced by a rename as well: ``ls -l`` shows which
run they are, they cost no space, and a reader that opens one gets either the old run or the
new one. Pruning deletes only files whose names this module made (``audit-<time>.json`` and
``.html``), never anything else an admin put in the folder.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mailwarden.errors import InputError

PREFIX = "audit-"
LATEST_JSON = "latest.json"
LATEST_HTML = "latest.html"
DEFAULT_KEEP = 200
MAX_KEEP = 100_000
RUN_RE = re.compile(r"audit-(\d{8}T\d{6}Z)(?:-(\d{1,4}))?\.(json|html)")
"""A saved run's file: its UTC start time, a counter when two runs started in one second."""


@dataclass(frozen=True, slots=True)
class SavedRun:
    """Where one run went, and what pruning removed."""

    json: Path
    html: Path
    removed: tuple[Path, ...]


def stem_for(started: str, folder: Path) -> str:
    """``audit-20260105T060000Z``, the report's start in UTC, plus ``-2``, ``-3`` … when that
    name is taken (two runs in one second must not overwrite each other)."""
    try:
        when = datetime.datetime.fromisoformat(started)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
    except ValueError:
        when = datetime.datetime.now(datetime.UTC)
    base = PREFIX + when.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    stem, number = base, 1
    while (folder / f"{stem}.json").exists() or (folder / f"{stem}.html").exists():
        number += 1
        stem = f"{base}-{number}"
    return stem


def run_key(name: str) -> tuple[str, int] | None:
    """The sort key of a saved run's file name (time, then counter); None for other files."""
    found = RUN_RE.fullmatch(name)
    if found is None:
        return None
    return found.group(1), int(found.group(2) or 1)


def write_atomically(path: Path, text: str) -> None:
    """Whole or not at all: a monitoring system or the console never reads half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _link(folder: Path, name: str, target: str) -> None:
    """``folder/name`` → ``target`` (relative), swapped in by a rename."""
    tmp = folder / f".{name}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        tmp.replace(folder / name)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot link {folder / name}: {exc.strerror or exc}") from None


def prune(folder: Path, keep: int) -> tuple[Path, ...]:
    """Delete the runs older than the newest ``keep`` (both files of each)."""
    runs: dict[tuple[str, int], list[Path]] = {}
    for path in folder.iterdir():
        key = run_key(path.name)
        if key is not None and not path.is_symlink():
            runs.setdefault(key, []).append(path)
    removed: list[Path] = []
    for key in sorted(runs)[: max(len(runs) - keep, 0)]:
        for path in runs[key]:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise InputError(f"cannot remove {path}: {exc.strerror or exc}") from None
            removed.append(path)
    return tuple(removed)


def save_run(folder: Path, started: str, json_text: str, html_text: str, keep: int) -> SavedRun:
    """Save one run's two reports in ``folder`` (made if missing), point ``latest.*`` at them
    and keep the newest ``keep`` runs."""
    if not 1 <= keep <= MAX_KEEP:
        raise InputError(f"--keep {keep}: give a number of runs between 1 and {MAX_KEEP}")
    try:
        folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--save-dir {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise InputError(f"--save-dir {folder}: not a folder")
    stem = stem_for(started, folder)
    json_path, html_path = folder / f"{stem}.json", folder / f"{stem}.html"
    write_atomically(json_path, json_text)
    write_atomically(html_path, html_text)
    _link(folder, LATEST_JSON, json_path.name)
    _link(folder, LATEST_HTML, html_path.name)
    return SavedRun(json_path, html_path, prune(folder, keep))
