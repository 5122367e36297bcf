"""Live reload of the site file: validate once, publish a snapshot, let the workers follow.

``systemctl reload mailwarden`` sends SIGHUP to the main process. The main process (uvicorn's
supervisor with ``--workers N``, the only process otherwise) reads the site file once and
validates it fully, as ``mailwarden serve`` does at start: the TOML and the model, the signing
key and certificate, the optional LDAP client. Only a file that passes is *published*: its text
is written, atomically, to a private snapshot file the workers load from. A file that fails is
refused with the loader's message (``site.toml:12: …``) in the log, and nothing changes.

Each worker watches the snapshot (one ``stat`` every :data:`WATCH_INTERVAL` seconds) and,
when it changed, builds a new application from it and swaps it in for new requests while the
requests already running finish on the old one (:mod:`mailwarden.server.live`). No worker is
restarted and no connection is closed, so a reload fails no request, and a broken file never
reaches a worker. A worker that is started later (uvicorn replaces one that died) also loads
the snapshot, never the file on disk: an edit that was not reloaded, or was refused, cannot
stop it from starting.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

from mailwarden.directory.ldap_client import require_site_clients
from mailwarden.errors import MailwardenError
from mailwarden.profiles.signing import load_signer
from mailwarden.site.load import parse_site, read_site_text
from mailwarden.site.model import Site

log = logging.getLogger("mailwarden.server")

CONFIG_ENV = "MAILWARDEN_CONFIG"
"""The site file's path: names it in messages, and relative paths in it resolve beside it."""
SNAPSHOT_ENV = "MAILWARDEN_SITE_SNAPSHOT"
"""The published (validated) text of the site file, which workers load."""
PUBLISHER_ENV = "MAILWARDEN_SITE_PUBLISHER"
"""Process id of the process that validates and publishes on SIGHUP (the main process)."""

WATCH_INTERVAL = 0.5
"""Seconds between a worker's looks at the snapshot: how long a reload takes to arrive."""

_hup_before_start = False


def validate(source: Path) -> tuple[Site, str]:
    """Read and check the site file as ``mailwarden serve`` does at start; its text too.

    Raises :class:`MailwardenError` with the loader's message (file:line) when it is not
    valid, its signing key cannot be used, or it needs a client library that is missing.
    """
    text = read_site_text(source)
    site = parse_site(text, source=str(source), base_dir=source.resolve().parent)
    load_signer(site.profiles)
    require_site_clients(site, guard=False)
    return site, text


def publish(source: Path, snapshot: Path) -> None:
    """Validate ``source`` and publish it to ``snapshot``.

    The text is written to a new file that then replaces the snapshot (``os.replace``), so a
    worker reads the old text or the new one, never half of it. An unchanged text is published
    too: the workers then rebuild all the same, which re-reads the files the site names (a
    renewed signing key and certificate, see docs/deployment.md).
    """
    _site, text = validate(source)
    fresh = snapshot.with_name(snapshot.name + ".new")
    fresh.write_text(text, encoding="utf-8")
    os.replace(fresh, snapshot)


def publish_logged(source: Path, snapshot: Path) -> bool:
    """:func:`publish` for a SIGHUP: the outcome goes to the log, never an exception."""
    try:
        publish(source, snapshot)
    except MailwardenError as exc:
        log.error("reload refused, still serving the previous configuration: %s", exc.message)
        return False
    except Exception:  # a reload must never take the server down
        log.exception("reload refused, still serving the previous configuration")
        return False
    log.info("reload: %s is valid; the workers switch to it now", source)
    return True


def published() -> tuple[Path, Path] | None:
    """The site file and its snapshot, when ``mailwarden serve`` set them up (else None)."""
    snapshot = os.environ.get(SNAPSHOT_ENV)
    if not snapshot:
        return None
    return Path(os.environ[CONFIG_ENV]), Path(snapshot)


def load_published(source: Path, snapshot: Path) -> Site:
    """The site as published: the snapshot's text, named and resolved as the site file."""
    text = snapshot.read_text(encoding="utf-8")
    return parse_site(text, source=str(source), base_dir=source.resolve().parent)


def is_publisher() -> bool:
    """Whether this process validates and publishes on SIGHUP (the only process with one
    worker; with several, the supervisor does it and the workers only follow)."""
    return os.environ.get(PUBLISHER_ENV) == str(os.getpid())


def prepare(source: Path) -> Path:
    """Set up reload for ``mailwarden serve``: publish the site file to a private snapshot
    (removed at exit) that worker processes find through the environment, and remember a
    SIGHUP that arrives before the application can act on it (it is acted on at start-up)."""
    folder = Path(tempfile.mkdtemp(prefix="mailwarden-site-"))
    snapshot = folder / "site.toml"
    atexit.register(discard, snapshot)
    publish(source, snapshot)  # raises: a file that fails here fails the start
    os.environ[CONFIG_ENV] = str(source)
    os.environ[SNAPSHOT_ENV] = str(snapshot)
    os.environ[PUBLISHER_ENV] = str(os.getpid())
    signal.signal(signal.SIGHUP, _remember_hup)
    return snapshot


def discard(snapshot: Path) -> None:
    """Remove the snapshot's folder (at shut-down of the publishing process: with one worker
    uvicorn ends it by re-raising SIGTERM, so its ``atexit`` hooks never run)."""
    shutil.rmtree(snapshot.parent, ignore_errors=True)


def _remember_hup(signum: int, frame: object) -> None:
    global _hup_before_start
    _hup_before_start = True


def take_early_hup() -> bool:
    """Whether a SIGHUP arrived before the application started (and forget it)."""
    global _hup_before_start
    pending, _hup_before_start = _hup_before_start, False
    return pending
