"""``--follow``: read a growing log like ``tail -F`` and feed the sliding window.

Rotation is noticed by the path's inode changing (logrotate's create mode, rsyslog reopening)
or its size shrinking below what was read (copytruncate): the old file is read to its end
first, so no line written just before the rotation is lost, then the new file from its start.
A missing path (between rename and create) is waited for. The loop sleeps ``poll`` seconds
between reads; a quiet log costs one ``stat`` per poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mailwarden.reputation.logline import Clock, parse_line
from mailwarden.reputation.reader import CHUNK, LineSplitter, LogError, batches
from mailwarden.reputation.watch import Change, Watch

READ_LIMIT = 64 * CHUNK
"""Bytes read per poll at most, so a huge backlog cannot starve the alerting."""


class TailFile:
    """New complete lines of ``path``, across rotations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._inode: tuple[int, int] | None = None
        self._splitter = LineSplitter()
        self._open()
        if self._file is None:
            raise LogError(f"{path}: cannot read: no such file")

    def _open(self) -> None:
        try:
            st = self.path.stat()
            self._file = self.path.open("rb")
        except OSError:
            self._file = None
            return
        self._inode = (st.st_dev, st.st_ino)
        self._splitter = LineSplitter()

    def _drain(self, limit: int) -> tuple[list[str], int]:
        assert self._file is not None
        lines: list[str] = []
        total = 0
        while total < limit:
            data = self._file.read(CHUNK)
            if not data:
                break
            total += len(data)
            lines.extend(self._splitter.feed(data))
        return lines, total

    def read(self) -> list[str]:
        if self._file is None:
            self._open()
            if self._file is None:
                return []
        lines, got = self._drain(READ_LIMIT)
        if got >= READ_LIMIT:
            return lines  # more waiting: come back before looking for a rotation
        try:
            st = self.path.stat()
        except OSError:
            return lines  # renamed away, the new one not created yet
        if (st.st_dev, st.st_ino) != self._inode:
            lines.extend(self._splitter.flush())  # the old file's unterminated last line
            self._file.close()
            self._open()
            if self._file is not None:
                lines.extend(self._drain(READ_LIMIT)[0])
        elif st.st_size < self._file.tell():  # copytruncate
            self._file.seek(0)
            self._splitter = LineSplitter()
            lines.extend(self._drain(READ_LIMIT)[0])
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _feed(lines: list[str], clock: Clock, watch: Watch) -> None:
    for line in lines:
        if "stat" in line or " said: " in line or " refused to talk to me: " in line:
            attempt = parse_line(line, clock)
            if attempt is not None:
                watch.add(attempt)


def follow(
    paths: list[Path],
    watch: Watch,
    clock: Clock,
    *,
    on_change: Callable[[Change], None],
    on_ready: Callable[[], None] = lambda: None,
    poll: float = 1.0,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    running: Callable[[], bool] = lambda: True,
) -> None:
    """Prime the window from ``paths`` (older rotated files first, all read to the end), then
    follow the last one until ``running()`` says stop (or the process is interrupted)."""
    start = now()
    watch.now = start
    clock.set_reference(start)
    for path in paths[:-1]:
        for lines in batches(path):
            _feed(lines, clock, watch)
    tail = TailFile(paths[-1])
    try:
        while True:
            lines = tail.read()
            if not lines:
                break
            _feed(lines, clock, watch)
        for change in watch.evaluate(now(), quiet=True):
            on_change(change)
        on_ready()
        while running():
            sleep(poll)
            t = now()
            clock.set_reference(t)
            watch.now = t
            lines = tail.read()
            if lines:
                _feed(lines, clock, watch)
            for change in watch.evaluate(t):
                on_change(change)
    finally:
        tail.close()
