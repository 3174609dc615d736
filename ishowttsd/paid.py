"""The paid-speech policy: what the streamer owes viewers who paid, and how it is kept.

Owed speech is speech of an owed class (``Priority.owed``: paid and membership; see
``messages.py``). The guarantee: every owed utterance is played to its end exactly once by a
sink that people hear, or it is reported as still owed (``status``, ``health``, the ``owed``
and ``journal_stale`` events). How:

- It is journaled (``journal.py``) when moderation accepts it, before the queue can touch it,
  and it is never dropped for space: the queue's bound applies to chat; owed speech beyond what
  memory may hold (``[journal] owed_in_memory``) waits in the journal ("parked") and comes back
  in order as the queue drains.
- It counts as said only when an audible sink (``Sink.delivers_audio``) played it to its end.
  Synthesized but not played (no sound card, OBS gone, disk full) it stays owed, waits, and is
  played again when an audible sink recovers (and every ``[journal] retry_owed_s`` meanwhile),
  only to the sinks that have not played it yet: each sink plays it at most once, across
  retries and restarts (the journal records each sink's delivery the moment it happens).
- A synthesis that fails is retried, up to ``max_attempts`` syntheses started and not
  completed (one that keeps crashing the daemon is given up instead of crash-looping it),
  while it is fresh. The daemon's own shutdown cutting it leaves it owed.
- After a crash or restart, what the journal still holds is queued again (or finished, if an
  audible sink had played it), what went stale while the daemon was down is reported, and the
  platform message ids of recent entries are remembered so a source replaying them is not read
  twice.
- A journal that cannot be opened (a full or read-only disk) or written degrades: speech goes
  on, ``health`` fails with advice, and opening is retried; a corrupt one is moved aside.

Everything not owed passes through untouched.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import anyio

from ishowttsd.config import Config, ConfigError
from ishowttsd.events import EventBus
from ishowttsd.journal import Journal, JournalError
from ishowttsd.messages import Utterance

log = logging.getLogger("ishowttsd.paid")


class PaidSpeech:
    """Keeps owed speech through failures, crashes and restarts (see the module docstring).

    `said(u)`: whether an audible sink played `u` to its end (the speaker knows which sinks are
    audible); `audible()`: the names of those sinks now.
    """

    def __init__(self, cfg: Config, queue, events: EventBus, stopping: Callable[[], bool],
                 said: Callable[[Utterance], bool], audible: Callable[[], frozenset[str]]) -> None:  # fmt: skip
        self.cfg = cfg
        self.queue = queue
        self.events = events
        self.stopping = stopping
        self.said = said
        self.audible = audible
        self.journal: Journal | None = None
        self.problem: str | None = None  # why the journal is not in use, while it should be
        self.waiting: dict[str, Utterance] = {}  # owed speech that no audible sink has played yet
        self.limit = cfg.journal.owed_in_memory
        self._seen_id: Callable[[str, str], None] = lambda platform, mid: None

    # -- the journal -------------------------------------------------------------------------------

    def open(self, seen_id: Callable[[str, str], None]) -> None:
        """Open the journal and queue again what a crash or restart left unsaid.

        `seen_id(platform, message_id)` is told the recent message ids (moderation's dedupe).
        Raises ConfigError only when another daemon owns the journal; any other failure
        degrades (reported, retried by `run`).
        """
        self._seen_id = seen_id
        if not self.cfg.journal.enabled:
            return
        jc = self.cfg.journal
        path = self.cfg.resolve(jc.path) if jc.path else self.cfg.state_dir() / "journal.sqlite3"
        journal = Journal(path, jc.synchronous, max_attempts=jc.max_attempts)
        try:
            journal.open()
        except JournalError as e:
            if "in use by another ishowttsd" in str(e):
                raise ConfigError(str(e)) from None
            if self.problem != str(e):
                self.events.publish("journal.problem", path=str(path), problem=str(e))
            self.problem = str(e)
            return
        self.journal, self.problem = journal, None
        if journal.damage is not None:
            self.events.publish("journal.problem", path=str(path), problem=journal.damage.detail, **{
                k: v for k, v in journal.damage.to_dict().items() if k in ("moved_to", "salvaged", "lost_transactions")})
        journal.prune(jc.keep_days)
        for platform, mid in journal.recent_message_ids():
            seen_id(platform, mid)
        live, stale, given_up = journal.recover()
        for s in stale:
            self.events.publish("journal_stale", **s.to_dict(), reason="ttl_while_stopped")
        for s in given_up:
            self.events.publish("journal_stale", **s.to_dict(), reason="too_many_attempts")
        for u in live:
            if self.said(u):  # an audible sink played it to its end; the daemon died before it knew
                journal.finish(u, "spoken", "played_before_restart")
                continue
            self.events.publish("recovered", **u.event_fields(), age_s=round(time.time() - u.created_wall, 1))
            if self._owed_in_queue() < self.limit:
                self.queue.put(u)
            else:
                journal.park(u)
        self._refill()
        # owed speech accepted while the journal was unavailable is protected from now on
        for u in [*self.waiting.values(), *(x for x in self.queue.pending() if x.priority.owed)]:
            if not journal.tracks(u):
                journal.add(u)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    # -- the life of one utterance ---------------------------------------------------------------

    def admit(self, u: Utterance) -> list[Utterance]:
        """Moderation (or the operator) accepted `u`: owed speech is journaled first, then
        queued, or parked in the journal when memory already holds `owed_in_memory` of it.
        Returns what the queue's bound dropped (chat only; maybe `u` itself)."""
        if not u.priority.owed:
            return self.queue.put(u)
        j = self.journal
        if j is not None and self._owed_in_queue() >= self.limit and j.add(u, parked=True):
            return []  # waits in the journal; `_refill` brings it back in order
        if j is not None:
            j.add(u)
        elif self._owed_in_queue() >= self.limit * _NO_JOURNAL_FACTOR:
            # without a journal there is nowhere else to keep it: memory must stay bounded
            log.error("owed speech dropped: %d owed utterances wait in memory and the journal is unavailable (%s)",
                      self._owed_in_queue(), self.problem or "disabled")  # fmt: skip
            self.events.publish("dropped", **u.event_fields(), reason="no_room_no_journal")
            return [u]
        return self.queue.put(u)

    def merged(self, u: Utterance) -> None:
        """A gift combo grew: the waiting utterance says a new total."""
        if self.journal is not None:
            self.journal.update_text(u)

    def started(self, u: Utterance) -> None:
        """Synthesis of `u` starts: one more attempt."""
        if self.journal is not None:
            self.journal.started(u)
        self._refill()

    def synthesized(self, u: Utterance) -> None:
        """Synthesis of `u` completed: that attempt did not fail (a crash while it plays, or a
        sink that does not play it, must not use up its attempts)."""
        if self.journal is not None:
            self.journal.synthesized(u)

    def delivered(self, u: Utterance, sink: str) -> None:
        """`sink` played `u` to its end (a late one may finish an utterance that was waiting)."""
        if self.journal is not None:
            self.journal.delivered(u, sink)
        if u.key in self.waiting and self.said(u):
            del self.waiting[u.key]
            self._finish(u, "spoken", "played_late")

    def spoken(self, u: Utterance, _stats: Any = None) -> None:
        self.waiting.pop(u.key, None)
        self._finish(u, "spoken", "")

    def ended(self, u: Utterance, outcome: str, reason: str) -> None:
        """`u` left the queue or the speaker unsaid: dropped, expired, cut or failed."""
        if not u.priority.owed:
            return
        self.waiting.pop(u.key, None)
        if outcome == "cut" and reason == "skipped" and self.stopping():
            return  # cut by our own shutdown: still owed, said after the restart
        j = self.journal
        if outcome == "failed" and reason == "not_played":
            self.waiting[u.key] = u
            self.events.publish("owed", **u.event_fields(), reason="no sink that people hear played it",
                                waiting=len(self.waiting))  # fmt: skip
            self._refill()
            return
        attempts = j.attempts(u) if j is not None else 0
        max_attempts = j.max_attempts if j is not None else self.cfg.journal.max_attempts
        if outcome == "failed" and attempts < max_attempts and not u.expired():
            # owed speech gets another try: a transient engine error must not lose a super chat
            self.events.publish("retry", **u.event_fields(), attempts=attempts, reason=reason)
            self.queue.put(u)
            return
        self._finish(u, outcome, reason)

    def _finish(self, u: Utterance, outcome: str, reason: str) -> None:
        if self.journal is not None:
            self.journal.finish(u, outcome, reason)
        self._refill()

    # -- waiting speech and parked speech ----------------------------------------------------------

    def _owed_in_queue(self) -> int:
        return sum(1 for u in self.queue.pending() if u.priority.owed)

    def _refill(self) -> None:
        """Bring parked owed speech back from the journal while memory has room, oldest first."""
        j = self.journal
        if j is None:
            return
        for u in j.unpark(self.limit - self._owed_in_queue()):
            self.queue.put(u)

    def release(self) -> int:
        """Queue the waiting owed speech again (an audible sink is back, or it is time to try)."""
        waiting, self.waiting = list(self.waiting.values()), {}
        for u in waiting:
            self.queue.put(u)
        return len(waiting)

    async def run(self) -> None:
        """Play waiting owed speech again when an audible sink recovers, and every
        `retry_owed_s` meanwhile (a sound card is retried only when something is played to
        it); retry opening a journal that could not be opened."""
        every = self.cfg.journal.retry_owed_s
        with self.events.subscribe({"sink.state"}) as sub:
            next_try = time.monotonic() + every
            while True:
                with anyio.move_on_after(max(0.0, next_try - time.monotonic())):
                    ev = await sub.receive()
                    if ev.get("state") == "ok" and ev.get("sink") in self.audible() and self.waiting:
                        log.info("sink %s is back: playing %d owed utterance(s) again", ev["sink"], len(self.waiting))
                        self.release()
                    continue
                next_try = time.monotonic() + every
                if self.waiting:
                    self.release()
                if self.journal is None and self.problem is not None:
                    try:
                        self.open(self._seen_id)
                    except ConfigError as e:  # another daemon took the journal meanwhile: say so, go on
                        self.problem = str(e)

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = self.journal.status() if self.journal is not None else {"path": None, "pending": 0, "parked": 0}
        st["enabled"] = self.cfg.journal.enabled
        st["problem"] = self.problem
        st["waiting_for_sink"] = len(self.waiting)
        st["owed_in_queue"] = self._owed_in_queue()
        return st


# without a journal, owed speech may fill memory up to this many times `owed_in_memory`
_NO_JOURNAL_FACTOR = 10
