"""Browser sink: the speech, streamed to every OBS overlay page that listens.

Each utterance goes out on the channel ``audio.<sink name>`` (see :mod:`ishowttsd.channels`)
as it is synthesized: a ``start`` frame (id, sample rate, text, user), binary audio frames
(an 8-byte header: utterance id and sample rate as little-endian uint32, then 16-bit PCM), and
``end``, or ``cut`` the moment it is skipped, removed or cleared; ``pause``/``resume`` follow
the speaker. The web server subscribes one bounded reader per overlay: a browser that reads
too slowly is dropped, never waited for, so it cannot slow the speaker or the other sinks.

While overlays listen, ``play()`` keeps pace with what they hear (it returns about when the
audio ends, less ``lead_ms`` so the next utterance starts without a gap): `speaking`, the
queue and skip then match what the audience hears, as with a sound card. With no overlay
connected it returns at once and raises NotPlayed: it counts as a sink people hear (`delivers_audio`)
only while an overlay listens. With `[web]` enabled and no `[[sinks]]` table of this type, the
daemon adds one named ``browser``.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import anyio
from pydantic import Field

from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import NotPlayed, Playback, Sink, SinkSettings

HEADER = struct.Struct("<II")  # utterance id, sample rate


class BrowserSettings(SinkSettings):
    pace: bool = Field(default=True, description="play no faster than real time while overlays listen")
    lead_ms: int = Field(default=300, ge=0, le=5000, description="how far ahead of the listeners audio may be sent")


def channel_name(sink_name: str) -> str:
    """The channel a browser sink named `sink_name` publishes on."""
    return f"audio.{sink_name}"


class BrowserSink(Sink):
    type = "browser"
    Settings = BrowserSettings

    @property
    def delivers_audio(self) -> bool:
        """People hear it while an overlay page listens (OBS captures the page's audio)."""
        if self.settings.audible is not None:
            return self.settings.audible
        return bool(self.channel.subscribers)

    def __init__(self, settings: BrowserSettings, ctx) -> None:
        super().__init__(settings, ctx)
        self.settings: BrowserSettings = settings
        self.channel = ctx.channels.get(channel_name(self.name))
        self._paused_at: float | None = None
        self._paused_total = 0.0

    async def start(self) -> None:
        self.set_state("ok", f"channel {self.channel.name}")

    def _clock(self) -> float:
        """Seconds of unpaused time (listeners hear nothing while paused)."""
        now = time.monotonic()
        paused = self._paused_total + (now - self._paused_at if self._paused_at is not None else 0.0)
        return now - paused

    async def _keep_pace(self, t0: float, sent_s: float) -> None:
        lead = self.settings.lead_ms / 1000
        while self.settings.pace and self.channel.subscribers:
            ahead = sent_s - lead - (self._clock() - t0)
            if ahead <= 0:
                return
            await anyio.sleep(min(ahead, 0.1))

    async def play(self, pb: Playback) -> None:
        utt, m, ch = pb.utterance, pb.utterance.message, self.channel
        ch.publish({"type": "start", "id": utt.id, "sample_rate": pb.sample_rate, "text": utt.text,
                    "user": m.user.name if m else None, "priority": utt.priority.name.lower()})  # fmt: skip
        header = HEADER.pack(utt.id & 0xFFFFFFFF, pb.sample_rate)
        t0, sent_s = self._clock(), 0.0
        try:
            async for chunk in pb.chunks():
                ch.publish(header + chunk.pcm16())
                self.counters["chunks"] += 1
                sent_s += chunk.duration
                await self._keep_pace(t0, sent_s)
            await self._keep_pace(t0, sent_s)
        except BaseException:  # a skip cancels play(): the overlays stop this utterance at once
            ch.publish({"type": "cut", "id": utt.id})
            raise
        ch.publish({"type": "end", "id": utt.id, "cut": pb.stats.cut})
        if not ch.subscribers:
            raise NotPlayed("no overlay page is listening (add the overlay URL from `ishowttsctl web` to OBS)")

    async def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()
        self.channel.publish({"type": "pause"})

    async def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_total += time.monotonic() - self._paused_at
            self._paused_at = None
        self.channel.publish({"type": "resume"})

    def status(self) -> dict[str, Any]:
        ch = self.channel
        return {**super().status(), "listeners": ch.subscribers, "dropped_listeners": ch.dropped}


@hookimpl
def ishowtts_register_sinks(register):
    register(BrowserSink)
