"""The speech queue policy: priority classes, time-to-live, a bound and what it drops.

- Higher classes are always spoken first (URGENT > PAID > MEMBERSHIP > MODERATOR > NORMAL > LOW);
  within a class, first come first served.
- An utterance past its deadline is dropped as `expired` rather than read minutes late.
- When the queue is over its bound, the lowest class loses its oldest utterance first, so a
  paid utterance is never dropped while any unpaid one is waiting.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterable

import anyio

from ishowttsd.events import EventBus
from ishowttsd.messages import Priority, Utterance

DEFAULT_TTL: dict[Priority, float] = {
    Priority.URGENT: 600.0,
    Priority.PAID: 3600.0,
    Priority.MEMBERSHIP: 1800.0,
    Priority.MODERATOR: 120.0,
    Priority.NORMAL: 60.0,
    Priority.LOW: 30.0,
}


def ttl_from_config(cfg_ttl: dict[str, float]) -> dict[Priority, float]:
    ttl = dict(DEFAULT_TTL)
    for name, secs in cfg_ttl.items():
        ttl[Priority.parse(name)] = float(secs)
    return ttl


class SpeechQueue:
    """A bounded priority queue of Utterances; every outcome is published on the bus."""

    def __init__(self, max_pending: int, events: EventBus, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_pending = max_pending
        self.events = events
        self._clock = clock
        self._classes: dict[Priority, deque[Utterance]] = {p: deque() for p in Priority}
        self._wakeup = anyio.Event()

    def __len__(self) -> int:
        return sum(len(q) for q in self._classes.values())

    def put(self, utt: Utterance) -> list[Utterance]:
        """Queue an utterance; returns what the bound forced out (possibly `utt` itself)."""
        self._classes[utt.priority].append(utt)
        self.events.publish("queued", **utt.event_fields(), pending=len(self))
        dropped = []
        while len(self) > self.max_pending:
            victim = self._evict()
            dropped.append(victim)
            self.events.publish("dropped", **victim.event_fields(), reason="queue_full")
        self._wakeup.set()
        return dropped

    def _evict(self) -> Utterance:
        for p in sorted(Priority, reverse=True):
            if self._classes[p]:
                return self._classes[p].popleft()
        raise IndexError("evict from an empty queue")

    def expire(self) -> list[Utterance]:
        """Drop every stale utterance now."""
        now = self._clock()
        gone = []
        for p, q in self._classes.items():
            keep = deque(u for u in q if not u.expired(now))
            if len(keep) != len(q):
                gone.extend(u for u in q if u.expired(now))
                self._classes[p] = keep
        for u in gone:
            self.events.publish("expired", **u.event_fields(), reason="ttl", waited_s=round(now - u.created, 2))
        return gone

    def get_nowait(self) -> Utterance | None:
        """The next utterance to say, or None; stale ones are dropped on the way."""
        self.expire()
        for p in Priority:
            if self._classes[p]:
                return self._classes[p].popleft()
        return None

    async def get(self) -> Utterance:
        while True:
            utt = self.get_nowait()
            if utt is not None:
                return utt
            self._wakeup = anyio.Event()
            await self._wakeup.wait()

    def remove_where(self, pred: Callable[[Utterance], bool], reason: str) -> list[Utterance]:
        removed = []
        for p, q in self._classes.items():
            keep = deque()
            for u in q:
                (removed if pred(u) else keep).append(u)
            self._classes[p] = keep
        for u in removed:
            self.events.publish("dropped", **u.event_fields(), reason=reason)
        return removed

    def remove(self, utt_id: int) -> Utterance | None:
        gone = self.remove_where(lambda u: u.id == utt_id, reason="removed")
        return gone[0] if gone else None

    def clear(self, classes: Iterable[Priority] | None = None) -> list[Utterance]:
        wanted = set(classes) if classes is not None else set(Priority)
        return self.remove_where(lambda u: u.priority in wanted, reason="cleared")

    def pending(self) -> list[Utterance]:
        """Everything waiting, in the order it would be said."""
        return [u for p in Priority for u in self._classes[p]]

    def stats(self) -> dict:
        now = self._clock()
        waiting = self.pending()
        return {
            "pending": len(waiting),
            "max_pending": self.max_pending,
            "by_class": {p.name.lower(): len(self._classes[p]) for p in Priority if self._classes[p]},
            "oldest_wait_s": round(max((now - u.created for u in waiting), default=0.0), 2),
        }

