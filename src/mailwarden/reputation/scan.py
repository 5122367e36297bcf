"""``scan``: read the log files once, count, report. The only I/O is reading the files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailwarden.reputation.logline import Clock
from mailwarden.reputation.reader import batches, scan_lines
from mailwarden.reputation.signatures import SignatureSet
from mailwarden.reputation.tally import OutboundNames, Tally


def scan(
    paths: Sequence[Path],
    signatures: SignatureSet,
    *,
    end: float,
    length: float,
    clock: Clock,
    outbound: OutboundNames | None = None,
) -> dict[str, Any]:
    """The report (see :meth:`Tally.report`) for ``paths``, read in the order given."""
    tally = Tally(signatures, end=end, length=length, outbound=outbound)
    add = tally.add
    for path in paths:
        for lines in batches(path):
            tally.lines += len(lines)
            scan_lines(lines, clock, add)
    report = tally.report()
    report["files"] = [str(p) for p in paths]
    return report
