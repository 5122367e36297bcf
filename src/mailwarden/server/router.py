"""Path → route, with the methods each route answers.

A route is a row: its metrics label, its handler, the methods it allows and what a client using
another method gets (405 with ``Allow`` listing the row's methods, in the row's order). The
dispatcher checks the method once for every route, as Starlette's ``Route`` does, so handlers
never look at it; ``HEAD`` is answered by the ``GET`` handler with the body dropped
(:class:`~mailwarden.server.http.StatusSend`), the same headers, ``Content-Length`` included.

Routing is a dictionary lookup on the lower-cased path and then a short list of prefixes: the
hot endpoints answer in tens of microseconds, so the table is plain data, not patterns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from mailwarden.server.http import TEXT, Receive, Scope, Send, respond

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

METHOD_NOT_ALLOWED = b"method not allowed\n"


class _AnyMethod(frozenset[str]):
    """What a route with ``methods=None`` allows: every method (one test on the hot path)."""

    def __contains__(self, item: object) -> bool:
        return True


ANY_METHOD = _AnyMethod()


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the table. ``methods`` None: any method reaches the handler."""

    name: str
    """The endpoint label of the request metric."""
    handler: Handler
    methods: tuple[str, ...] | None = ("GET", "HEAD")
    refusal: bytes = METHOD_NOT_ALLOWED
    """The body of the 405 answer (an endpoint whose clients expect JSON errors gets JSON)."""
    refusal_type: bytes = TEXT
    allowed: frozenset[str] = field(init=False, repr=False)
    allow_header: tuple[bytes, bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        methods = self.methods
        object.__setattr__(self, "allowed", ANY_METHOD if methods is None else frozenset(methods))
        object.__setattr__(self, "allow_header", (b"allow", ", ".join(methods or ()).encode()))

    async def refuse(self, send: Send) -> None:
        """The 405 answer: the row's refusal body and an ``Allow`` header with its methods."""
        await respond(send, 405, self.refusal, self.refusal_type, extra_headers=[self.allow_header])


class Router:
    """Exact paths first, then prefixes in order, else the fallback (a 404 for any method)."""

    def __init__(
        self,
        exact: Mapping[str, Route],
        prefixes: Iterable[tuple[str, Route]],
        fallback: Route,
    ) -> None:
        self._exact = {path.lower(): route for path, route in exact.items()}
        self._prefixes = tuple((prefix.lower(), route) for prefix, route in prefixes)
        self.fallback = fallback

    def match(self, path: str) -> Route:
        """The route for ``path`` (already lower-cased by the caller: paths are not
        case-sensitive here, Outlook writes ``/AutoDiscover/AutoDiscover.xml``)."""
        route = self._exact.get(path)
        if route is not None:
            return route
        for prefix, candidate in self._prefixes:
            if path.startswith(prefix):
                return candidate
        return self.fallback
