"""The one event bus: every stage publishes here; logs, counters and `watch` read from it."""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections import Counter
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger("ishowttsd.events")

# events that do not deserve a log line of their own at INFO (they are frequent and dull)
_QUIET = {"telemetry"}


class EventBus:
    """Publish events (plain dicts) to counters, the log and any number of subscribers.

    A subscriber that does not keep up loses events (counted as `lagged` on its next read)
    instead of slowing the daemon down: one stuck `watch` client must never stall speech.
    """

    def __init__(self, subscriber_buffer: int = 1000) -> None:
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()  # filtered/dropped reasons
        self._seq = itertools.count(1)
        self._subs: list[_Subscription] = []
        self._buffer = subscriber_buffer

    def publish(self, event: str, **fields: Any) -> dict[str, Any]:
        ev = {"event": event, "ts": round(time.time(), 3), "seq": next(self._seq), **fields}
        self.counts[event] += 1
        if "reason" in fields and event in ("filtered", "dropped", "expired", "failed"):
            self.reasons[f"{event}:{fields['reason']}"] += 1
        if event not in _QUIET:
            log.info("%s %s", event, _fmt(fields))
        for sub in list(self._subs):
            sub.offer(ev)
        return ev

    def subscribe(self) -> _Subscription:
        sub = _Subscription(self, self._buffer)
        self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: _Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)


class _Subscription:
    def __init__(self, bus: EventBus, buffer: int) -> None:
        self._bus = bus
        self.lagged = 0
        self._pending: dict | None = None
        send, recv = anyio.create_memory_object_stream[dict](max_buffer_size=buffer)
        self._send: MemoryObjectSendStream[dict] = send
        self._recv: MemoryObjectReceiveStream[dict] = recv

    def offer(self, ev: dict) -> None:
        try:
            self._send.send_nowait(ev)
        except anyio.WouldBlock:
            self.lagged += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.close()

    async def receive(self) -> dict:
        if self._pending is not None:
            ev, self._pending = self._pending, None
            return ev
        ev = await self._recv.receive()
        if self.lagged:
            # report the gap first, then the event that followed it
            lost, self.lagged = self.lagged, 0
            self._pending = ev
            return {"event": "lagged", "ts": round(time.time(), 3), "lost": lost}
        return ev

    def close(self) -> None:
        self._bus._unsubscribe(self)
        self._send.close()
        self._recv.close()

    def __enter__(self) -> _Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(fields: dict[str, Any]) -> str:
    """key=value pairs on one line, values JSON-quoted when they need it (journald-friendly)."""
    parts = []
    for k, v in fields.items():
        if isinstance(v, float):
            v = round(v, 4) if math.isfinite(v) else str(v)
        if isinstance(v, str) and v and " " not in v and "=" not in v and '"' not in v and "\n" not in v:
            parts.append(f"{k}={v}")
        else:
            parts.append(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}")
    return " ".join(parts)
