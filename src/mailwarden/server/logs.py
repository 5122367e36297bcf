"""The server's log configuration: uvicorn's, plus the ``mailwarden`` loggers.

Without it, ``mailwarden.server`` (reloads, internal errors, directory outages) had no
handler and only its warnings reached stderr, unformatted, through Python's last-resort
handler; a reload that succeeded left no line at all. Now they share uvicorn's handler and
format (``INFO:     reload: …``) and follow ``--log-level``.
"""

from __future__ import annotations

import copy
from typing import Any


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's ``LOGGING_CONFIG`` with the ``mailwarden`` loggers at ``level``."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["mailwarden"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
