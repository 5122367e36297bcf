"""The milter over the real wire (asyncio server in the test, MTA-side client)."""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Action, Detector, Verdict
from mailwarden.guard.engine import Engine
from mailwarden.guard.milter import MilterError, MilterServer, Session, negotiate, reply_for
from mailwarden.guard.stages import Decision
from mailwarden.guard.store.memory import MemoryStore
from tests.fixtures.guard_milter_client import MilterClient, pkt

LOCAL = frozenset({"example.edu"})


def with_milter(config: dict[str, Any], job: Callable[[int, Engine], Awaitable[None]]) -> None:
    async def main() -> None:
        guard = GuardConfig.model_validate(config)
        engine = Engine(guard, MemoryStore(), Detector(guard, LOCAL))
        loop = asyncio.get_running_loop()
        server = await loop.create_server(MilterServer(engine).protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await job(port, engine)
        finally:
            server.close()
            await engine.drain()

    asyncio.run(main())


def test_negotiation_answers_every_stage_but_body() -> None:
    reply = negotiate(struct.pack("!III", 6, 0x1FF, 0x1FFFFF))
    version, actions, proto = struct.unpack("!III", reply[5:17])
    assert version == 6
    assert actions & 0x20  # quarantine
    assert proto == 0x10 | 0x100  # only body and unknown skipped; no "no reply" flags
    assert b"{auth_authen}" in reply


def test_reply_codes() -> None:
    def reply(action: Action, *reasons: str) -> bytes | None:
        return reply_for(Decision(Verdict(action, 2, reasons), "K7QW2M4A"))

    assert reply_for(Decision(Verdict(Action.ACCEPT))) is None
    assert reply(Action.HOLD, "x") is None
    throttle = reply(Action.THROTTLE, "100% odd")
    assert throttle == pkt(
        b"y", b"451 4.7.1 Sending from this account is paused; try again later (ref K7QW2M4A)\0"
    )
    lock = reply(Action.LOCK, "72 external recipients in 1 h (usual \u2264 40)")
    assert lock == pkt(
        b"y", b"550 5.7.1 This account is locked; contact the helpdesk (ref K7QW2M4A)\0"
    )


def test_milter_only_blast_is_quarantined_then_refused_and_locked() -> None:
    async def job(port: int, engine: Engine) -> None:
        client = await MilterClient.connect("127.0.0.1", port)
        ok = await client.message("ann", ["friend@example.org"], subject="lunch?")
        assert ok.final() == ("eom", b"c", "")
        outcomes, texts, notes = [], [], []
        for i in range(30):
            rcpts = [f"v{i}x{k}@s{i}-{k}.example" for k in range(20)]
            res = await client.message("mal", rcpts, subject=f"Prize {i}", queue_id=f"Q{i}")
            stage, code, text = res.final()
            quarantined = [a for a in res.actions if a.startswith(b"q")]
            if quarantined:
                outcomes.append("quarantine")
                notes.append(quarantined[0][1:].rstrip(b"\0").decode())
            else:
                outcomes.append(f"{stage}:{code.decode()}:{text[:9]}")
                if code == b"y":
                    texts.append(text)
        assert "quarantine" in outcomes, outcomes
        assert any(o.startswith("rcpt:y:451 4.7.1") for o in outcomes), outcomes
        assert outcomes[-1].startswith("mail:y:550 5.7.1"), outcomes  # locked at MAIL FROM
        # the sender reads a fixed text and a reference, never a reason or a threshold
        assert texts
        for text in texts:
            assert FIXED.fullmatch(text), text
        # the quarantine note stays with the queued message: reference and reasons
        assert all(NOTE.match(n) and re.search(r"\d", n[30:]) for n in notes), notes
        holds = await engine.store.holds()
        assert holds
        assert holds[0].user == "mal"
        assert holds[0].reason.startswith("ref ")
        assert (await client.message("ann", ["x@example.org"])).final() == ("eom", b"c", "")
        await client.close()

    with_milter({"message_stage": "milter-only"}, job)


FIXED = re.compile(
    r"451 4\.7\.1 Sending from this account is paused; try again later \(ref [A-Z2-7]{8}\)"
    r"|550 5\.7\.1 This account is locked; contact the helpdesk \(ref [A-Z2-7]{8}\)"
)
NOTE = re.compile(r"mailwarden guard: held for review, ref [A-Z2-7]{8}: \S")


def test_browser_ip_from_the_webmail_received_header_is_the_network() -> None:
    async def job(port: int, engine: Engine) -> None:
        client = await MilterClient.connect("127.0.0.1", port)
        received = "from [198.51.100.23] by webmail.example.edu with HTTP; Mon, 1 Jan 2024"
        await client.message("bea", ["a@example.org"], received=received)
        forged = "from [203.0.113.1] by evil.example with HTTP"
        await client.message("bea", ["a@example.org"], received=forged, client_ip="192.0.2.9")
        await client.close()
        state = engine.store.users["bea"]  # type: ignore[attr-defined]
        assert set(state.networks) == {"198.51.100.0/24", "192.0.2.0/24"}

    with_milter({"message_stage": "milter", "webmail_received_by": "webmail.example.edu"}, job)


def test_unauthenticated_mail_is_accepted_and_garbage_disconnects() -> None:
    async def job(port: int, engine: Engine) -> None:
        client = await MilterClient.connect("127.0.0.1", port)
        res = await client.message("", ["x@example.org"])
        assert res.replies["mail"] == b"a"
        await client.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack("!I", 1 << 30) + b"O")
        await writer.drain()
        assert await reader.read(10) == b""
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(pkt(b"O", b"\0\0"))  # short negotiation
        await writer.drain()
        assert await reader.read(10) == b""
        writer.close()

    with_milter({}, job)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(list(b"ACDEHKLMNORTUQB")), st.binary(max_size=300)),
        max_size=12,
    )
)
def test_any_packet_sequence_gets_answers_or_a_protocol_error(
    packets: list[tuple[int, bytes]],
) -> None:
    """Whatever an MTA (or anything else) sends, the milter answers or refuses cleanly."""
    guard = GuardConfig.model_validate({"message_stage": "milter-only"})
    server = MilterServer(Engine(guard, MemoryStore(), Detector(guard, LOCAL)))

    async def run() -> None:
        session = Session()
        for code, data in packets:
            try:
                replies = await server.on(session, bytes([code]), data)
            except MilterError:
                return
            for reply in replies:
                (size,) = struct.unpack("!I", reply[:4])
                assert size == len(reply) - 4
                assert reply[4:5] in (b"a", b"c", b"q", b"y", b"O")

    asyncio.run(run())
