"""Named one-to-many channels: a part publishes frames, front doors fan them out to clients.

This is how a plugin reaches connections it does not own: the browser sink publishes each
utterance's audio on ``ctx.channels.get("audio.<sink name>")`` and the web server hands the
frames to every overlay subscribed to that name. Neither side imports the other.

A frame is ``bytes`` (audio) or a ``dict`` (a control message). ``publish`` never blocks and
never waits for a subscriber: each subscriber has a bounded backlog (frames and bytes), and one
that falls behind it is dropped (its iteration ends) instead of slowing the publisher, so a
slow or dead browser never holds up the speaker or the other sinks.

    channel = ctx.channels.get("audio.browser")
    channel.publish({"type": "start", "id": 7})
    channel.publish(pcm_bytes)

    with channel.subscribe() as sub:      # in a front door
        async for frame in sub:
            await websocket.send(frame)
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import anyio

Frame = Any  # bytes or a JSON-able dict


class Subscription:
    """One reader of a channel: an async iterator of frames that ends when it is dropped or closed."""

    def __init__(self, channel: Channel, max_frames: int, max_bytes: int) -> None:
        self._channel = channel
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._wake = anyio.Event()
        self.closed = False
        self.dropped = False  # fell behind its bound and was cut loose

    def offer(self, frame: Frame) -> None:
        if self.closed:
            return
        size = len(frame) if isinstance(frame, (bytes, bytearray)) else 0
        if len(self._frames) >= self._max_frames or self._bytes + size > self._max_bytes:
            self.dropped = True
            self._channel.dropped += 1
            self.close()
            return
        self._frames.append(frame)
        self._bytes += size
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Bytes of audio waiting for this reader."""
        return self._bytes

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Frame:
        while not self._frames:
            if self.closed:
                raise StopAsyncIteration
            self._wake = anyio.Event()
            await self._wake.wait()
        frame = self._frames.popleft()
        if isinstance(frame, (bytes, bytearray)):
            self._bytes -= len(frame)
        return frame

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._frames.clear()
            self._bytes = 0
            self._channel._subs.discard(self)
            self._wake.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Channel:
    """A named stream of frames with any number of bounded subscribers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subs: set[Subscription] = set()
        self.published = 0
        self.dropped = 0  # subscribers cut loose for falling behind

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, frame: Frame) -> int:
        """Offer `frame` to every subscriber without waiting; returns how many got it."""
        self.published += 1
        n = 0
        for sub in list(self._subs):
            sub.offer(frame)
            n += not sub.closed
        return n

    def subscribe(self, max_frames: int = 2048, max_bytes: int = 8 * 1024 * 1024) -> Subscription:
        """A new reader; it is dropped once more than `max_frames` frames or `max_bytes` bytes wait."""
        sub = Subscription(self, max_frames if max_frames > 0 else math.inf, max_bytes)
        self._subs.add(sub)
        return sub


class Channels:
    """The daemon's channels by name (created on first use)."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def get(self, name: str) -> Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = Channel(name)
        return ch

    def names(self) -> list[str]:
        return sorted(self._channels)
