"""The server's listening socket, bound here before uvicorn starts, and uvicorn run on it.

uvicorn binds by itself and, when that fails, logs ``[Errno 98] Address already in use``
without the address and exits 3 (or, with several workers, a worker does). Binding first gives
every worker count the same one-line error with the address, ``LISTEN-FAILED`` and exit 2, and
uvicorn's own ``Multiprocess`` supervisor hands the one socket to every worker, as it does
with the socket it binds itself.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

from mailwarden.errors import MailwardenError

if TYPE_CHECKING:
    from mailwarden.server.protocol import HttpLimits

BACKLOG = 2048
"""uvicorn's default; the kernel queues connections while the workers start."""


def shown(host: str, port: int) -> str:
    """``127.0.0.1:8080``, ``[::1]:8080``: as the operator would write it in ``--listen``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(exc: OSError, where: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{where} is already in use"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: not an address of this machine"
    if isinstance(exc, socket.gaierror):
        return f"{where}: cannot resolve the host name ({exc.strerror})"
    return f"{where}: {exc.strerror or exc}"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, inheritable by worker processes.

    ``SO_REUSEADDR`` as uvicorn sets it: a restart does not wait for old connections in
    TIME_WAIT, yet a port another process listens on is still refused (Linux).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise MailwardenError(_why(exc, shown(host, port)), code="LISTEN-FAILED") from None
    sock.set_inheritable(True)
    return sock


def run_uvicorn(
    sock: socket.socket, *, workers: int, limits: HttpLimits | None = None, **options: Any
) -> int:
    """uvicorn serving ``options`` (``uvicorn.Config`` keywords) on ``sock``; the exit status.

    Connections are bounded by ``limits`` (:mod:`mailwarden.server.protocol`: head size,
    header, body and idle timeouts, connections per worker). ``2`` when the single worker did
    not start (the application's start-up failed; uvicorn has logged why), as every command's
    "could not run" status.
    """
    import uvicorn

    from mailwarden.guard.listen import raise_fd_limit
    from mailwarden.server.protocol import HttpLimits, LimitedConfig
    from mailwarden.server.supervisor import ReloadingMultiprocess

    limits = limits or HttpLimits()
    # Every connection is a file descriptor; refused ones linger for a moment, and a worker
    # has its own files (metrics, the directory, the site snapshot) besides.
    raise_fd_limit(2 * limits.max_connections + 256)
    host, port = sock.getsockname()[:2]
    config = LimitedConfig(
        limits=limits, host=str(host), port=int(port), workers=workers, **options
    )
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            ReloadingMultiprocess(config, sockets=[sock]).run()  # SIGHUP: reload, see there
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C at an unlucky moment
        pass
    finally:
        sock.close()
    if workers == 1 and not server.started:
        return 2
    return 0
