"""SIGHUP for the guard (``systemctl reload mailwarden-guard``): re-read ``[guard]`` live.

The per-user state lives in the store, and the store takes the detector with every decision,
so the new configuration is swapped into the running :class:`Engine` (configuration,
detector, lock and alert actions) between two decisions: a decision in progress finishes with
the detector it started with, the next one uses the new, nothing is forgotten and no
connection is touched. Everything new is built before anything is swapped, so a file that
does not load, or a lock method whose client is missing, changes nothing: the error is logged
(file:line, as the loader reports it) and the running configuration stays.

Some settings are bound at start and take effect only at the next restart: where the guard
listens, its store, and what its front ends read once when they start (see
:data:`RESTART_ONLY`). A reload that changes one of them still applies the rest and says in
the log which ones wait for a restart.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mailwarden.directory.ldap_client import require_site_clients
from mailwarden.errors import MailwardenError
from mailwarden.guard.actions import Alerter, Locker
from mailwarden.guard.detector import Detector
from mailwarden.guard.engine import Engine
from mailwarden.guard.service import guard_config, local_domains
from mailwarden.site import load_site

log = logging.getLogger("mailwarden.guard")

RESTART_ONLY = (
    "policy_listen",
    "milter_listen",
    "store",
    "state_path",
    "redis_url",
    "redis_timeout",
    "lock_ttl_hours",
    "message_stage",
    "webmail_received_by",
    "helpdesk",
    "instance_name",
)
"""``[guard]`` keys read once at start (listeners, the store, the policy and milter servers'
copies): a reload leaves them as they are."""


def reload_guard(engine: Engine, source: Path) -> bool:
    """Re-read ``[guard]`` from ``source`` into ``engine``; whether it was applied."""
    try:
        site = load_site(source)
        config = guard_config(site, str(source))
        require_site_clients(site)
        detector = Detector(config, local_domains(site, config))
        locker, alerter = Locker(config.lock), Alerter(config.alerts)
    except MailwardenError as exc:
        log.error(
            json.dumps({"event": "reload-refused", "guard": engine.name, "error": exc.message})
        )
        return False
    except Exception as exc:  # a reload must never take the guard down
        log.exception(
            json.dumps({"event": "reload-refused", "guard": engine.name, "error": str(exc)})
        )
        return False
    waiting = [key for key in RESTART_ONLY if getattr(config, key) != getattr(engine.config, key)]
    # keep what is bound at start, so the engine's configuration is what actually runs
    config = config.model_copy(update={key: getattr(engine.config, key) for key in waiting})
    detector = Detector(config, detector.local_domains)
    engine.config, engine.detector, engine.locker, engine.alerter = (
        config,
        detector,
        locker,
        alerter,
    )
    record: dict[str, object] = {"event": "reloaded", "guard": engine.name, "file": str(source)}
    if waiting:
        record["restart_needed_for"] = waiting
    log.info(json.dumps(record))
    return True
