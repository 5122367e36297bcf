"""The stage semantics both front ends share: what each SMTP stage decides, what the sender
reads (a fixed text and a reference, never a reason) and what the admin finds by it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mailwarden.guard.config import GuardConfig
from mailwarden.guard.detector import Action, Detector, Observation, Verdict
from mailwarden.guard.engine import Engine
from mailwarden.guard.stages import (
    MAX_REPLY,
    Decision,
    Stages,
    hold_note,
    new_ref,
    normal_ref,
    refusal,
    sanitise,
)
from mailwarden.guard.store.memory import MemoryStore
from mailwarden.guard.store.redis import RedisStore
from mailwarden.guard.store.sqlite import SqliteStore
from tests.fixtures.net import free_port

LOCAL = frozenset({"example.edu"})
T0 = 1_700_000_000.0
REF = re.compile(r"[A-Z2-7]{8}")


def engine_for(config: dict[str, object], store: MemoryStore | RedisStore | None = None) -> Engine:
    guard = GuardConfig.model_validate(config)
    clock = iter(T0 + i * 0.5 for i in range(100_000))
    return Engine(guard, store or MemoryStore(), Detector(guard, LOCAL), clock=lambda: next(clock))


@given(st.text(max_size=2000))
def test_sanitised_text_is_one_bounded_line_of_printable_ascii(text: str) -> None:
    clean = sanitise(text)
    assert len(clean) <= MAX_REPLY
    assert all(" " <= ch <= "~" for ch in clean)
    assert "%" not in clean  # a format character in sendmail's milter replies


def test_sanitise_spells_the_detectors_signs_in_ascii() -> None:
    # before: "(usual ? 40)" in the reply
    assert sanitise("72 external recipients in 1 h (usual ≤ 40)\r\n") == (
        "72 external recipients in 1 h (usual <= 40)??"
    )


@given(
    st.sampled_from([Action.THROTTLE, Action.LOCK, Action.REJECT]),
    st.lists(st.text(min_size=1, max_size=80), max_size=5),
    st.floats(0, 20),
)
def test_a_refusal_says_the_same_whatever_the_reasons(
    action: Action, reasons: list[str], score: float
) -> None:
    ref = new_ref()
    refused = refusal(Decision(Verdict(action, score, tuple(reasons)), ref))
    bare = refusal(Decision(Verdict(action), ref))
    assert refused is not None
    assert refused == bare  # nothing of the reasons or the score gets through
    assert refused.text.endswith(f" (ref {ref})")
    assert (refused.code, refused.status) == (
        (451, "4.7.1") if action is Action.THROTTLE else (550, "5.7.1")
    )


def test_accept_and_hold_are_not_refusals_and_the_hold_note_has_the_reasons() -> None:
    assert refusal(Decision(Verdict(Action.ACCEPT))) is None
    hold = Decision(Verdict(Action.HOLD, 4, ("4 recipients in 1 h > 3",)), "K7QW2M4A")
    assert refusal(hold) is None
    assert hold_note(hold) == (
        "mailwarden guard: held for review, ref K7QW2M4A: 4 recipients in 1 h > 3"
    )


def test_references_are_short_random_and_read_back_as_typed() -> None:
    refs = {new_ref() for _ in range(2000)}
    assert len(refs) == 2000
    assert all(REF.fullmatch(r) for r in refs)
    assert normal_ref(" k7qw-2m4a ") == "K7QW2M4A"
    assert normal_ref("0I1B8") == "OIIBB"  # digits read for the letters O, I and B


def test_the_helpdesk_is_named_and_must_fit_an_smtp_reply() -> None:
    engine = engine_for({"helpdesk": "the IT service desk (+49 30 1234-5678)"})
    refused = Stages(engine).refusal(Decision(Verdict(Action.REJECT), "K7QW2M4A"))
    assert refused is not None
    assert refused.text == (
        "This account is locked; contact the IT service desk (+49 30 1234-5678) (ref K7QW2M4A)"
    )
    for bad in ("le service informatique, bâtiment B", "helpdesk\r\n250 OK", "100% help"):
        with pytest.raises(ValidationError, match="printable ASCII"):
            GuardConfig.model_validate({"helpdesk": bad})
    long = Stages(engine_for({"helpdesk": "x" * 200})).refusal(Decision(Verdict(Action.LOCK), "R"))
    assert long is not None
    assert long.text.endswith(" (ref R)")  # the reference survives a long helpdesk text


def test_a_hold_at_rcpt_is_carried_to_the_end_of_the_message_and_recorded() -> None:
    engine = engine_for(
        {"classes": {"watched": {"rcpts_per_hour": 3}}, "members": {"watched": ["wes"]}}
    )
    stages = Stages(engine)

    async def run() -> None:
        decisions = [
            await stages.recipient("wes", f"m{k}@club{k}.example", "policy") for k in range(4)
        ]
        assert [d.action for d in decisions] == [Action.ACCEPT] * 3 + [Action.HOLD]
        hold = decisions[-1]
        assert REF.fullmatch(hold.ref)
        # the front end that only enforces locks accepts at the end: the carried hold wins
        end = await stages.end_of_message(
            "wes", "policy", message=None, carried=hold, queue_id="Q1"
        )
        assert end is hold
        (held,) = await engine.store.holds()
        assert (held.queue_id, held.user) == ("Q1", "wes")
        assert held.reason == f"ref {hold.ref}: 4 recipients in 1 h > 3"
        # without a queue ID nothing is recorded, the message is still held
        again = await stages.end_of_message("wes", "policy", message=None, carried=hold)
        assert again.action is Action.HOLD
        assert len(await engine.store.holds()) == 1
        # the history keeps the reasons under the reference
        (event,) = [e for e in await engine.store.history("wes") if e.action == "hold"]
        assert (event.detail["ref"], event.reason) == (hold.ref, "4 recipients in 1 h > 3")
        await engine.drain()

    asyncio.run(run())


def test_the_refusals_of_a_lock_taken_here_quote_the_locks_reference() -> None:
    engine = engine_for({})
    stages = Stages(engine)

    async def run() -> None:
        lock = None
        for i in range(200):
            obs = Observation(
                "eve",
                T0 + i * 0.1,
                tuple(f"v{i}x{k}@s{i}-{k}.example" for k in range(30)),
                True,
                30,
            )
            verdict, ref = await engine.judge(obs, "policy")
            if verdict.action is Action.LOCK:
                lock = ref
                break
        assert lock is not None
        at_mail = await stages.mail_from("eve")
        at_rcpt = await stages.recipient("eve", "x@example.org", "policy")
        at_end = await stages.end_of_message("eve", "milter", message=None)
        assert [d.action for d in (at_mail, at_rcpt, at_end)] == [Action.REJECT] * 3
        assert {at_mail.ref, at_rcpt.ref, at_end.ref} == {lock}
        await engine.drain()
        actions = [e.action for e in await engine.store.history("eve")]
        assert actions[-1] == "lock"  # refusals of a known lock add nothing
        assert "reject" not in actions

    asyncio.run(run())


def test_a_lock_taken_elsewhere_gets_one_reference_and_one_history_entry(tmp_path: Path) -> None:
    """A lock set by an admin (or by another guard sharing the store): the first refusal
    makes a reference and writes it to the history with the lock's reason, once; every
    later refusal quotes it; a new lock gets a new one."""

    async def run() -> None:
        store = SqliteStore(tmp_path / "guard.sqlite")
        engine = engine_for({}, store)
        stages = Stages(engine)
        await store.lock("amy", "phished, ticket 4711", T0, by="admin")
        first = await stages.mail_from("amy")
        assert first.action is Action.REJECT
        assert REF.fullmatch(first.ref)
        again = [await stages.mail_from("amy") for _ in range(50)]
        assert {d.ref for d in again} == {first.ref}
        await engine.drain()
        (entry,) = await store.history("amy")
        assert (entry.action, entry.detail["ref"]) == ("reject", first.ref)
        assert "phished, ticket 4711" in entry.reason
        refused = stages.refusal(first)
        assert refused is not None
        assert "4711" not in refused.text  # the sender never reads the lock's reason
        await store.unlock("amy")
        assert (await stages.mail_from("amy")).action is Action.ACCEPT
        await store.lock("amy", "phished again", T0 + 99, by="admin")
        second = await stages.mail_from("amy")
        assert second.ref != first.ref
        await engine.drain()
        assert [e.detail["ref"] for e in await store.history("amy")] == [first.ref, second.ref]
        await store.close()

    asyncio.run(run())


@pytest.mark.parametrize("mode", ["accept", "tempfail"])
def test_a_store_down_at_mail_from_never_reads_as_a_lock(mode: str) -> None:
    """Nothing listens on the port: a real connection failure. Fail closed tempfails (451,
    try again later); before, the store's failure was refused as "account locked" (550)."""

    async def run() -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
        engine = engine_for({"on_store_error": mode}, store)
        decision = await Stages(engine).mail_from("ann")
        await engine.drain()
        await store.close()
        if mode == "accept":
            assert decision.action is Action.ACCEPT
        else:
            refused = refusal(decision)
            assert refused is not None
            assert (refused.code, refused.status) == (451, "4.7.1")
        assert engine.store_down

    asyncio.run(run())
