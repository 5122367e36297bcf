"""Where the guard keeps its state: memory (one MTA), SQLite (restarts keep locks and
baselines) and Redis (several MTAs share one view). All speak :class:`~.base.Store`."""

from __future__ import annotations

from mailwarden.guard.store.base import Event, HoldInfo, LockInfo, Store, StoreError

__all__ = ["Event", "HoldInfo", "LockInfo", "Store", "StoreError"]
