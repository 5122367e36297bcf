"""uvicorn's worker supervisor, with SIGHUP meaning "reload the site file".

uvicorn 0.54's ``Multiprocess`` answers SIGHUP by replacing every worker with a new process
(start the new one, wait until it is ready, SIGTERM the old one). The old worker then closes
its idle keep-alive connections, and a client that sends its next request on one of them at
that moment gets no answer: under load a restart fails a few requests. And each new worker
would read the site file by itself, so a broken file would be found once per worker, as a
start-up failure.

Here SIGHUP validates the file once, in this process, and publishes it
(:func:`mailwarden.server.reload.publish_logged`); the workers pick the snapshot up in place
(:mod:`mailwarden.server.live`). No worker is touched, so no connection is closed.
"""

from __future__ import annotations

from uvicorn.supervisors import Multiprocess

from mailwarden.server.reload import publish_logged, published


class ReloadingMultiprocess(Multiprocess):
    """``Multiprocess`` whose SIGHUP reloads the site file instead of restarting workers."""

    def handle_hup(self) -> None:
        paths = published()
        if paths is None:  # not started by ``mailwarden serve``: uvicorn's own behaviour
            super().handle_hup()
            return
        publish_logged(*paths)
