"""The speech queue policy: priority classes, time-to-live, a bound and what it drops.

- Higher classes are always spoken first (URGENT > PAID > MEMBERSHIP > MODERATOR > NORMAL > LOW > GREETING);
  within a class, first come first served.
- An utterance past its deadline is dropped as `expired` rather than read minutes late.
- The queue holds at most `max_pending` utterances that are not owed. Over the bound it drops by
  `EVICTION_ORDER`: the lowest class first, oldest first within a class (the operator's URGENT
  `say` counts as chat here). Owed speech (paid, membership) is never dropped for space: the
  paid-speech policy (``paid.py``) bounds how much of it waits in memory and keeps the rest in
  the journal.
- Flood mode: at `flood_threshold` pending the queue reports a flood (moderation then stops
  reading usernames) and may say `flood_announce` once; the flood ends below half the threshold.
- Whatever leaves the queue without being handed to the speaker is published (dropped, expired)
  and passed to every `on_discard` callback (the journal marks paid speech that way).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from typing import Callable

import anyio

from ishowttsd.events import EventBus
from ishowttsd.messages import Priority, Utterance

log = logging.getLogger("ishowttsd.queue")

DEFAULT_TTL: dict[Priority, float] = {
    Priority.URGENT: 600.0,
    Priority.PAID: 3600.0,
    Priority.MEMBERSHIP: 1800.0,
    Priority.MODERATOR: 120.0,
    Priority.NORMAL: 60.0,
    Priority.LOW: 30.0,
    Priority.GREETING: 15.0,  # a welcome read a minute late welcomes nobody
}

# what the bound drops first: every class that is not owed, lowest first, then the owed ones
# (GREETING, LOW, NORMAL, MODERATOR, URGENT, MEMBERSHIP, PAID)
EVICTION_ORDER = tuple(sorted(Priority, key=lambda p: (p.owed, -p.value)))


def ttl_from_config(cfg_ttl: dict[str, float]) -> dict[Priority, float]:
    ttl = dict(DEFAULT_TTL)
    for name, secs in cfg_ttl.items():
        ttl[Priority.parse(name)] = float(secs)
    return ttl


class SpeechQueue:
    """A bounded priority queue of Utterances; every outcome is published on the bus."""

    def __init__(
        self,
        max_pending: int,
        events: EventBus,
        clock: Callable[[], float] = time.monotonic,
        flood_threshold: int = 0,
        flood_announce: str = "",
    ) -> None:
        self.max_pending = max_pending
        self.events = events
        self._clock = clock
        self._classes: dict[Priority, deque[Utterance]] = {p: deque() for p in Priority}
        self._ids: dict[int, Utterance] = {}
        self._wakeup = anyio.Event()
        self.flood_threshold = flood_threshold
        self.flood_announce = flood_announce
        self.flooded = False
        self.floods = 0
        self.waits: deque[float] = deque(maxlen=200)  # seconds from queued to handed to the speaker
        self.on_discard: list[Callable[[Utterance, str, str], None]] = []  # (utt, event, reason)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, utt_id: int) -> bool:
        return utt_id in self._ids

    def contains(self, utt_id: int) -> bool:
        return utt_id in self._ids

    def configure(self, max_pending: int, flood_threshold: int, flood_announce: str) -> list[Utterance]:
        """Apply a reloaded [queue] config; a smaller bound drops at once what no longer fits."""
        self.max_pending = max_pending
        self.flood_threshold = flood_threshold
        self.flood_announce = flood_announce
        dropped = self._enforce_bound()
        self._check_flood()
        return dropped

    def put(self, utt: Utterance) -> list[Utterance]:
        """Queue an utterance; returns what the bound forced out (possibly `utt` itself)."""
        self._classes[utt.priority].append(utt)
        self._ids[utt.id] = utt
        self.events.publish("queued", **utt.event_fields(), pending=len(self))
        dropped = self._enforce_bound()
        self._check_flood()
        self._wakeup.set()
        return dropped

    def _enforce_bound(self) -> list[Utterance]:
        """Over the bound, drop chat by EVICTION_ORDER; owed speech is never dropped for space
        (the paid-speech policy keeps its own bound on how much of it waits in memory)."""
        dropped = []
        while sum(len(q) for p, q in self._classes.items() if not p.owed) > self.max_pending:
            victim = self._evict()
            if victim is None:
                break
            dropped.append(victim)
            self._discard(victim, "dropped", "queue_full")
        return dropped

    def _evict(self) -> Utterance | None:
        for p in EVICTION_ORDER:
            if self._classes[p] and not p.owed:
                u = self._classes[p].popleft()
                del self._ids[u.id]
                return u
        return None

    def _discard(self, u: Utterance, event: str, reason: str, **more) -> None:
        self.events.publish(event, **u.event_fields(), reason=reason, **more)
        for cb in self.on_discard:
            try:
                cb(u, event, reason)
            except Exception:  # a journal or monitor bug must not leave the queue half-updated
                log.exception("an on_discard callback failed for utterance %s", u.id)

    def _check_flood(self) -> None:
        n = len(self)
        if not self.flooded and self.flood_threshold and n >= self.flood_threshold:
            self.flooded = True
            self.floods += 1
            self.events.publish("flood", state="on", backlog=n, threshold=self.flood_threshold)
            if self.flood_announce:
                text = self.flood_announce.replace("{backlog}", str(n))
                self.put(Utterance(text=text, priority=Priority.URGENT, source="flood",
                                   deadline=self._clock() + DEFAULT_TTL[Priority.NORMAL]))  # fmt: skip
        elif self.flooded and (not self.flood_threshold or n < self.flood_threshold // 2):
            self.flooded = False
            self.events.publish("flood", state="off", backlog=n, threshold=self.flood_threshold)

    def expire(self) -> list[Utterance]:
        """Drop every stale utterance now."""
        now = self._clock()
        gone = []
        for p, q in self._classes.items():
            if any(u.expired(now) for u in q):
                gone.extend(u for u in q if u.expired(now))
                self._classes[p] = deque(u for u in q if not u.expired(now))
        for u in gone:
            del self._ids[u.id]
            self._discard(u, "expired", "ttl", waited_s=round(now - u.created, 2))
        if gone:
            self._check_flood()
        return gone

    def get_nowait(self) -> Utterance | None:
        """The next utterance to say, or None; stale ones are dropped on the way."""
        self.expire()
        for p in Priority:
            if self._classes[p]:
                u = self._classes[p].popleft()
                del self._ids[u.id]
                self.waits.append(self._clock() - u.created)
                self._check_flood()
                return u
        return None

    async def get(self) -> Utterance:
        while True:
            utt = self.get_nowait()
            if utt is not None:
                return utt
            self._wakeup = anyio.Event()
            await self._wakeup.wait()

    def take_more(self, pred: Callable[[Utterance], bool], limit: int) -> list[Utterance]:
        """Up to `limit` more utterances from the front, in the order they would be said, while
        `pred` holds: it stops at the first that does not match, so none is said before one
        queued ahead of it (the speaker batches these with the one it just took). Never waits;
        stale ones are dropped on the way."""
        self.expire()
        now = self._clock()
        taken: list[Utterance] = []
        for u in self.pending():
            if len(taken) >= limit or not pred(u):
                break
            self._classes[u.priority].popleft()  # in order and stopping at a miss: u is its class's head
            del self._ids[u.id]
            self.waits.append(now - u.created)
            taken.append(u)
        if taken:
            self._check_flood()
        return taken

    def remove_where(self, pred: Callable[[Utterance], bool], reason: str) -> list[Utterance]:
        removed = []
        for p, q in self._classes.items():
            keep: deque[Utterance] = deque()
            for u in q:
                (removed if pred(u) else keep).append(u)
            self._classes[p] = keep
        for u in removed:
            del self._ids[u.id]
            self._discard(u, "dropped", reason)
        if removed:
            self._check_flood()
        return removed

    def pending(self) -> list[Utterance]:
        """Everything waiting, in the order it would be said."""
        return [u for p in Priority for u in self._classes[p]]

    def stats(self) -> dict:
        now = self._clock()
        oldest = min((q[0].created for q in self._classes.values() if q), default=now)
        waits = list(self.waits)
        return {
            "pending": len(self),
            "max_pending": self.max_pending,
            "by_class": {p.name.lower(): len(self._classes[p]) for p in Priority if self._classes[p]},
            "oldest_wait_s": round(now - oldest, 2),
            # queue latency: how long recent utterances waited before the speaker took them
            "latency_median_s": round(statistics.median(waits), 3) if waits else None,
            "latency_max_s": round(max(waits), 3) if waits else None,
            "flood": self.flooded,
            "flood_threshold": self.flood_threshold,
            "floods": self.floods,
        }
