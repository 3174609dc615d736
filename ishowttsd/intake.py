"""The message path: what sources hand in becomes speech, or is taken back.

A message goes ``received`` → chat commands and mutes (``chat_commands.py``) → moderation
(``moderation.py``) → the paid-speech policy (``paid.py``, which journals owed speech) → the
queue; a rejection is published as ``filtered`` with its reason. A platform's deletion (a deleted super chat, a timeout, a
cleared chat) takes matching speech back, waiting or speaking, in one call.

Interactions (entries, follows, shares, likes: ``GREETING_KINDS``) never go that way one by one:
the greeter (``greetings.py``) gathers them, without an event each (a busy room sends thousands
a second), and says them as one throttled line. Other speech accepted here cuts a greeting line
prepared ahead of it.

The moderation policy can be swapped at run time (a reload); what moderation remembers
(cooldowns, recent texts and ids, open combos) carries over.
"""

from __future__ import annotations

import time
from typing import Any

from ishowttsd.chat_commands import ChatCommands
from ishowttsd.events import EventBus
from ishowttsd.greetings import Greeter
from ishowttsd.messages import GREETING_KINDS, Deletion, Message, Priority, Utterance
from ishowttsd.moderation import CHAT_KINDS, Merged, Moderator, Rejection


class Intake:
    """Messages and deletions from sources (and `inject`) into the queue."""

    def __init__(self, moderator: Moderator, ttl: dict[Priority, float], queue, speaker, paid, events: EventBus,
                 commands: ChatCommands | None = None, greeter: Greeter | None = None) -> None:  # fmt: skip
        self.moderator = moderator
        self.commands = commands
        self.greeter = greeter
        self.ttl = ttl
        self.queue = queue
        self.speaker = speaker
        self.paid = paid
        self.events = events

    def swap(self, moderator: Moderator, ttl: dict[Priority, float]) -> None:
        """Use a new moderation policy from now on (its state is the old one's)."""
        self.moderator, self.ttl = moderator, ttl

    def deadline(self, priority: Priority) -> float | None:
        """When speech of this class, accepted now, goes stale."""
        ttl = self.ttl.get(priority)
        return None if ttl is None else time.monotonic() + ttl

    def message(self, source: str | None, m: Message) -> Utterance | Rejection:
        """One message from a source (`None`: the control API's `inject`)."""
        name = source or "control"
        if m.kind in GREETING_KINDS:
            if self.greeter is not None and self.greeter.add(m):
                return Rejection("greeting", "gathered for the next greeting line")
            return Rejection("greeting_off", f"[greetings] kinds does not include {m.kind.value}")
        self.events.publish("received", source=name, platform=m.platform, kind=m.kind.value, user=m.user.name,
                            text=m.text, message_id=m.id)  # fmt: skip
        early = self._commands(m)
        if early is not None:
            self.events.publish("filtered", source=name, platform=m.platform, kind=m.kind.value, user=m.user.name,
                                reason=early.reason, detail=early.detail)  # fmt: skip
            return early
        result = self.moderator.moderate(m, source=name, flood=self.queue.flooded, is_pending=self.queue.contains)
        if isinstance(result, Rejection):
            self.events.publish("filtered", source=name, platform=m.platform, kind=m.kind.value, user=m.user.name,
                                reason=result.reason, detail=result.detail)  # fmt: skip
            return result
        if isinstance(result, Merged):  # a gift combo grew: the waiting utterance says the total
            self.events.publish("merged", **result.utterance.event_fields(), total=result.total, message_id=m.id)
            self.paid.merged(result.utterance)
            return result.utterance
        if self.commands is not None:
            result.voice = self.commands.voice_for(m) or result.voice
        if self.greeter is not None:
            self.greeter.other_speech(result)
        self.paid.admit(result)  # owed speech is journaled before the queue (or its bound) can touch it
        return result

    def _commands(self, m: Message) -> Rejection | None:
        """A command line (never read aloud, done or refused), or a muted user's chat."""
        c = self.commands
        if c is None:
            return None
        if c.is_command(m):
            seen = self.moderator.state
            if m.id and (m.platform, m.id) in seen.recent_ids:  # a source that reconnected and replayed
                return Rejection("duplicate_id", f"message {m.id} was seen already")
            if m.id:
                seen.seen_id(m.platform, m.id, time.monotonic())
            out = c.handle(m)
            return Rejection("command", out.detail if out.done else f"refused ({out.reason}): {out.detail}")
        left = c.muted(m) if m.kind in CHAT_KINDS else None
        if left is not None:
            return Rejection("muted", f"muted from chat for {left:.0f} s more")
        return None

    def status(self) -> dict[str, Any]:
        """Chat commands (mutes with time left, refusals) and greetings, for `status`."""
        return {"commands": self.commands.status() if self.commands else None,
                "greetings": self.greeter.status() if self.greeter else None}  # fmt: skip

    def deletion(self, source: str | None, d: Deletion) -> None:
        """A platform took messages back: their speech goes, waiting or speaking."""
        ids = set(d.message_ids)

        def match(u: Utterance) -> bool:
            m = u.message
            if m is None or m.platform != d.platform:
                return False
            return d.everything or bool(m.id and m.id in ids) or (d.user_id is not None and m.user.id == d.user_id)

        removed, cut = self.speaker.take_back(match, f"deleted:{d.reason or 'platform'}", cut_reason="deleted")
        self.events.publish("deletion", platform=d.platform, message_ids=d.message_ids, user_id=d.user_id,
                            everything=d.everything, removed=len(removed), cut=len(cut))  # fmt: skip
