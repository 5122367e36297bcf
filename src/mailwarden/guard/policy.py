"""The Postfix SMTPD policy delegation protocol (``check_policy_service``) on asyncio.

Postfix sends ``name=value`` lines ended by an empty line and waits for ``action=...`` and an
empty line, reusing the connection. Wire it at RCPT (``smtpd_recipient_restrictions``) and at
END-OF-DATA (``smtpd_end_of_data_restrictions``): the second check is the final gate that
refuses the whole message when the account was locked while the message was being submitted.
Always with ``default_action=DUNNO``, so mail flows if the guard is down.

This module is only the codec: what each stage means and the words a refused sender reads
live in :mod:`mailwarden.guard.stages`.

Requests are untrusted and bounded: at most 64 attributes, lines of at most 8 KiB, 64 KiB per
request; a client that breaks the limits is disconnected. Postfix ends lines with LF; a request
framed with CRLF (a hand-written client, a test with ``nc -C``) is read as if it had LFs and
answered in the protocol's LF framing, rather than left waiting for an ``\n\n`` that never
comes. The connection's bounds in time and memory are :mod:`mailwarden.guard.listen`'s.
"""

from __future__ import annotations

from itertools import repeat

from mailwarden.guard.detector import Action, Observation
from mailwarden.guard.engine import Engine
from mailwarden.guard.listen import Conversation, FrameError, Listener
from mailwarden.guard.signals import network_of
from mailwarden.guard.stages import Decision, Stages, hold_note, refusal

MAX_LINE = 8192
MAX_ATTRS = 64
MAX_REQUEST = 65536
MAX_HELD_PER_CONNECTION = 1000


class ProtocolError(ValueError):
    """The peer does not speak the policy protocol (or breaks its bounds)."""


def parse_request(block: bytes) -> dict[str, str]:
    """One request (``name=value`` lines, the final empty line optional) → dict.

    Raises :class:`ProtocolError` for lines that are not ``name=value`` and for requests
    beyond the bounds.
    """
    if len(block) > MAX_REQUEST:
        raise ProtocolError("request too large")
    text = block.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = [line for line in text.split("\n") if line]
    try:
        # C speed on the common path: no Python frame per line
        request = dict(map(str.split, lines, repeat("="), repeat(1)))
    except ValueError:
        request = {}
    if len(request) != len(lines) or "" in request or len(text) > MAX_LINE:
        # the slow path only to name the offending line (or a repeated attribute)
        request = {}
        for line in lines:
            name, sep, value = line.partition("=")
            if not sep or not name:
                raise ProtocolError(f"not name=value: {line[:40]!r}")
            if len(line) > MAX_LINE:
                raise ProtocolError("line too long")
            request[name] = value
    if len(request) > MAX_ATTRS:
        raise ProtocolError(f"more than {MAX_ATTRS} attributes")
    return request


def action_for(decision: Decision, stage: str, helpdesk: str = "the helpdesk") -> str:
    """The access(5) action for a decision at ``stage`` (RCPT or END-OF-MESSAGE)."""
    if decision.action is Action.ACCEPT:
        return "DUNNO"
    if decision.action is Action.HOLD:
        return f"HOLD {hold_note(decision)}"  # logged by Postfix, never sent to the client
    refused = refusal(decision, helpdesk)
    assert refused is not None
    if not refused.temporary:
        return f"REJECT {refused.status} {refused.text}"
    verb = "DEFER_IF_PERMIT" if stage == "RCPT" else "DEFER"  # at RCPT: only if the rest permits
    return f"{verb} {refused.status} {refused.text}"


class PolicyServer:
    """One instance serves every connection of one MTA (or several, sharing the engine).

    A codec only: requests become calls of :class:`~mailwarden.guard.stages.Stages`, its
    decisions become access(5) actions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.stages = Stages(engine)
        self.listener = Listener(
            "policy",
            max_connections=self.config.max_connections,
            idle_timeout=self.config.policy_idle_timeout,
        )

    async def respond(self, request: dict[str, str], held: dict[str, Decision]) -> str:
        user = request.get("sasl_username", "")[:256]
        if not user:
            return "DUNNO"  # not an authenticated submission: the relay rules decide
        stage = request.get("protocol_state", "").upper()
        instance = request.get("instance", "")[:64]
        helpdesk = self.stages.helpdesk
        if stage == "RCPT":
            rcpt = request.get("recipient", "")[:320].lower()
            decision = await self.stages.recipient(user, rcpt, "policy")
            if decision.action is Action.HOLD and instance and len(held) < MAX_HELD_PER_CONNECTION:
                held[instance] = decision
            return action_for(decision, stage, helpdesk)
        if stage not in ("END-OF-MESSAGE", "DATA"):
            return "DUNNO"
        carried = held.pop(instance, None) if instance else None
        message = None
        if self.config.message_stage == "policy" and stage == "END-OF-MESSAGE":
            try:
                count = int(request.get("recipient_count", "0") or 0)
            except ValueError:
                count = 0
            message = Observation(
                user=user,
                now=self.engine.clock(),
                message=True,
                rcpt_count=min(max(count, 0), 100_000),
                network=network_of(request.get("client_address", "")),
            )
        decision = await self.stages.end_of_message(
            user,
            "policy",
            message=message,
            carried=carried,
            queue_id=request.get("queue_id", ""),
        )
        return action_for(decision, stage, helpdesk)

    def protocol(self) -> PolicyConnection:
        """A new connection (the protocol factory for :func:`~.listen.start`)."""
        return PolicyConnection(self)


class PolicyConnection(Conversation):
    """One MTA connection: requests end with an empty line, each gets ``action=...``."""

    what = "policy"

    def __init__(self, server: PolicyServer) -> None:
        super().__init__(server.engine.store.immediate, server.listener)
        self.server = server
        self.held: dict[str, Decision] = {}
        """Holds at RCPT by ``instance``, carried to the message's END-OF-MESSAGE."""

    def frame(self, data: bytes) -> bytes:
        """CRLF line ends → LF (a CR left at the end of the previous read included)."""
        if b"\r" not in data and not self.buf.endswith(b"\r"):
            return data
        if data.startswith(b"\n") and self.buf.endswith(b"\r"):
            self.buf = self.buf[:-1]
        return data.replace(b"\r\n", b"\n")

    def take(self, limit: int) -> list[dict[str, str]]:
        buf, start = self.buf, 0
        requests: list[dict[str, str]] = []
        try:
            while len(requests) < limit and (end := buf.find(b"\n\n", start)) >= 0:
                request = parse_request(buf[start : end + 2])
                start = end + 2
                if request:
                    requests.append(request)
        except ProtocolError as exc:
            raise FrameError(str(exc)) from None
        self.buf = buf[start:] if start else buf
        if len(requests) < limit and len(self.buf) > MAX_REQUEST:
            raise FrameError("request too large")
        return requests

    def waits(self, request: dict[str, str]) -> bool:
        return bool(request.get("sasl_username"))  # others are answered DUNNO at once

    async def answer(self, request: dict[str, str]) -> bytes:
        action = await self.server.respond(request, self.held)
        return f"action={action}\n\n".encode()
