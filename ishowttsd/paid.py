"""The paid-speech policy: what the streamer owes viewers who paid, and how it is kept.

Owed speech is speech of an owed class (``Priority.owed``: paid and membership; see
``messages.py``). The policy:

- it is journaled (``journal.py``) when moderation accepts it, before the queue can touch it;
- a synthesis that fails is retried, up to ``max_attempts`` syntheses started, while it is fresh;
- it is finished in the journal when it is spoken, dropped, expired, cut or finally failed,
  except when the daemon's own shutdown cut it: then it is still owed;
- after a crash or restart, what the journal still holds is queued again, what went stale
  while the daemon was down is reported (``journal_stale``), and the platform message ids of
  recent entries are remembered so that a source replaying them is not read twice.

Everything not owed passes through untouched.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ishowttsd.config import Config, ConfigError
from ishowttsd.events import EventBus
from ishowttsd.journal import Journal, JournalError
from ishowttsd.messages import Utterance

log = logging.getLogger("ishowttsd.paid")


class PaidSpeech:
    """Keeps owed speech through failures, crashes and restarts (see the module docstring)."""

    def __init__(self, cfg: Config, queue, events: EventBus, stopping: Callable[[], bool]) -> None:
        self.cfg = cfg
        self.queue = queue
        self.events = events
        self.stopping = stopping
        self.journal: Journal | None = None

    # -- after a start ----------------------------------------------------------------------------

    def open(self, seen_id: Callable[[str, str], None]) -> None:
        """Open the journal and queue again what a crash or restart left unsaid.

        `seen_id(platform, message_id)` is told the recent message ids (moderation's dedupe).
        """
        jc = self.cfg.journal
        if not jc.enabled:
            return
        path = self.cfg.resolve(jc.path) if jc.path else self.cfg.state_dir() / "journal.sqlite3"
        journal = Journal(path, jc.synchronous)
        try:
            journal.open()
        except JournalError as e:
            raise ConfigError(str(e)) from None
        self.journal = journal
        journal.prune(jc.keep_days)
        for platform, mid in journal.recent_message_ids():
            seen_id(platform, mid)
        live, stale, given_up = journal.recover()
        for s in stale:
            log.warning("journal: not said before its time-to-live ran out while stopped: %s", s.to_dict())
            self.events.publish("journal_stale", **s.to_dict(), reason="ttl_while_stopped")
        for s in given_up:
            log.error("journal: given up after repeated attempts without being said: %s", s.to_dict())
            self.events.publish("journal_stale", **s.to_dict(), reason="too_many_attempts")
        for u in live:
            self.events.publish("recovered", **u.event_fields(), age_s=round(time.time() - u.created_wall, 1))
            self.queue.put(u)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    # -- the life of one utterance ----------------------------------------------------------------

    def accepted(self, u: Utterance) -> None:
        """Moderation accepted `u`: journal it if it is owed (committed before the queue sees it)."""
        if self.journal is not None and u.priority.owed:
            self.journal.add(u)

    def merged(self, u: Utterance) -> None:
        """A gift combo grew: the waiting utterance says a new total."""
        if self.journal is not None:
            self.journal.update_text(u)

    def started(self, u: Utterance) -> None:
        """Synthesis of `u` starts: one more attempt."""
        if self.journal is not None:
            self.journal.started(u)

    def spoken(self, u: Utterance, _stats: Any = None) -> None:
        self.ended(u, "spoken", "")

    def ended(self, u: Utterance, outcome: str, reason: str) -> None:
        """`u` left the queue or the speaker: spoken, dropped, expired, cut or failed."""
        j = self.journal
        if j is None or not j.tracks(u):
            return
        if outcome == "cut" and reason == "skipped" and self.stopping():
            return  # cut by our own shutdown: still owed, spoken after the restart
        if outcome == "failed" and j.attempts(u) < j.max_attempts and not u.expired():
            # owed speech gets another try: a transient engine error must not lose a super chat
            self.events.publish("retry", **u.event_fields(), attempts=j.attempts(u), reason=reason)
            self.queue.put(u)
            return
        j.finish(u, outcome, reason)

    def status(self) -> dict[str, Any] | None:
        return self.journal.status() if self.journal is not None else None
