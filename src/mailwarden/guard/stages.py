"""What the guard answers at each stage of an SMTP transaction, whatever the wire.

The policy server and the milter are codecs: they parse their protocol, call the stage here
that matches the request, and turn the :class:`Decision` into their reply format. What a stage
means lives only here, so both front ends behave alike:

* **MAIL FROM**: a locked account is refused before any recipient (the milter asks here; the
  policy server, wired at RCPT, learns it from the store's verdict).
* **RCPT**: each recipient is judged; a hold at RCPT is *carried* to the end of the message,
  because only there is the queue ID known (and, for the milter, only there can a message be
  quarantined).
* **End of message**: the front end that counts messages judges the whole message; the other
  one only enforces a lock taken while the message was being submitted. A carried hold wins
  over an accept; a hold is recorded with its queue ID for ``guard release``.

And what the sender reads. A refusal carries a fixed text per action and a short reference,
never the detector's reasons or thresholds: a spammer driving a webmail reads the error and
would slow down just below the line. The reasons go to the log, the alert and the user's
history, where the reference finds them (``mailwarden guard history USER --ref REF``). Only
the hold's note carries them: a hold's text never reaches the sender (Postfix logs it,
sendmail keeps it in the quarantined queue file).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailwarden.guard.detector import Action, Observation, Verdict

if TYPE_CHECKING:
    from mailwarden.guard.engine import Engine

MAX_REPLY = 300
"""Characters of reply text (RFC 5321 allows 512 octets per reply line, code included)."""

THROTTLE_TEXT = "Sending from this account is paused; try again later"
LOCK_TEXT = "This account is locked; contact {helpdesk}"
HOLD_TEXT = "mailwarden guard: held for review"


def new_ref() -> str:
    """A reference for one decision: 8 base32 characters (40 random bits). Short enough to
    read out over the phone, random so that it says nothing (no count, no time, no order)
    and cannot be guessed; the history entry stores it."""
    return base64.b32encode(secrets.token_bytes(5)).decode("ascii")


def normal_ref(text: str) -> str:
    """A reference as someone typed or read it out: upper case, spaces and dashes dropped,
    and the digits 0, 1 and 8 (not in the base32 alphabet) taken for O, I and B."""
    return text.strip().upper().translate(str.maketrans("018", "OIB", " -"))


_ASCII = str.maketrans({"≤": "<=", "≥": ">=", "×": "x", "…": "...", "–": "-", "—": "-"})


def sanitise(text: str, limit: int = MAX_REPLY) -> str:
    """Text safe in an SMTP reply, a policy action and a milter reply: one line of printable
    ASCII, bounded. The detector's few typographic signs become their ASCII spelling (not
    ``?``); anything else outside ASCII, control characters and ``%`` (a format character for
    sendmail's milter replies) become ``?``."""
    text = text.translate(_ASCII)
    return "".join(ch if " " <= ch <= "~" and ch != "%" else "?" for ch in text)[:limit]


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict as a stage returns it, with the reference a refusal shows the sender."""

    verdict: Verdict
    ref: str = ""
    """8 base32 characters stored with the history entry (``""`` for accept)."""

    @property
    def action(self) -> Action:
        return self.verdict.action


ACCEPTED = Decision(Verdict(Action.ACCEPT))


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refusal in SMTP terms; each codec spells it its own way."""

    code: int
    """451 (try again later) or 550 (refused)."""
    status: str
    """The enhanced status code (RFC 3463), ``4.7.1`` or ``5.7.1``."""
    text: str
    """The fixed human text and the reference: what the sender reads."""

    @property
    def temporary(self) -> bool:
        return self.code < 500


def refusal(decision: Decision, helpdesk: str = "the helpdesk") -> Refusal | None:
    """The refusal of a decision (None for accept and hold, which let the message in)."""
    ref = f" (ref {decision.ref})" if decision.ref else ""
    match decision.action:
        case Action.THROTTLE:
            return Refusal(451, "4.7.1", sanitise(THROTTLE_TEXT + ref))
        case Action.LOCK | Action.REJECT:
            text = LOCK_TEXT.format(helpdesk=helpdesk)
            return Refusal(550, "5.7.1", sanitise(text[: MAX_REPLY - len(ref)] + ref))
        case _:
            return None


def hold_note(decision: Decision) -> str:
    """The text of a hold for the MTA's log and queue (never sent to the sender): the
    reference and the reasons, so the admin looking at the hold queue sees why."""
    ref = f", ref {decision.ref}" if decision.ref else ""
    return sanitise(f"{HOLD_TEXT}{ref}: {decision.verdict.text}")


class Stages:
    """The stage semantics over one :class:`~mailwarden.guard.engine.Engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.helpdesk = engine.config.helpdesk

    def refusal(self, decision: Decision) -> Refusal | None:
        return refusal(decision, self.helpdesk)

    async def mail_from(self, user: str, front: str = "milter") -> Decision:
        """MAIL FROM of an authenticated ``user``: refused when the account is locked."""
        verdict, ref = await self.engine.check_lock(user, front)
        return Decision(verdict, ref) if verdict.action is not Action.ACCEPT else ACCEPTED

    async def recipient(self, user: str, rcpt: str, front: str) -> Decision:
        """One RCPT of ``user``. A hold here is the caller's to carry to the end of the
        message (:meth:`end_of_message`'s ``carried``): it applies to the whole message."""
        obs = Observation(user=user, now=self.engine.clock(), recipients=(rcpt,) if rcpt else ())
        verdict, ref = await self.engine.judge(obs, front)
        return Decision(verdict, ref) if verdict.action is not Action.ACCEPT else ACCEPTED

    async def end_of_message(
        self,
        user: str,
        front: str,
        *,
        message: Observation | None,
        carried: Decision | None = None,
        queue_id: str = "",
    ) -> Decision:
        """The end of a message of ``user``. ``message`` is the whole message when this
        front end counts messages (``message_stage``), None when it only enforces locks;
        ``carried`` the hold of one of its recipients."""
        if message is not None:
            verdict, ref = await self.engine.judge(message, front)
        else:
            verdict, ref = await self.engine.check_lock(user, front)
        decision = Decision(verdict, ref) if verdict.action is not Action.ACCEPT else ACCEPTED
        if decision.action is Action.ACCEPT and carried is not None:
            decision = carried
        if decision.action is Action.HOLD and queue_id:
            why = decision.verdict.text
            reason = f"ref {decision.ref}: {why}" if decision.ref else why
            await self.engine.record_hold(queue_id[:64], user, reason)
        return decision
