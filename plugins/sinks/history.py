"""History sink: the last utterances that were spoken, with their audio, in memory.

It keeps who said what, when, with which voice and RTF, and the 16-bit audio of each, for the
control room's history (play or download an utterance again) and the `history` control verb.
It is bounded twice: at most ``keep`` utterances and ``max_mb`` of audio; the oldest go first,
and an utterance longer than the whole budget is listed without its audio. Skipped utterances
are kept, marked cut, with the audio that played. Nothing is written to disk.

With `[web]` enabled and no `[[sinks]]` table of this type, the daemon adds one named
``history`` sized by ``[web] history`` and ``history_max_mb``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import Playback, Sink, SinkSettings


class HistorySettings(SinkSettings):
    keep: int = Field(default=50, ge=1, le=10_000, description="utterances kept")
    max_mb: float = Field(default=64.0, gt=0, le=4096, description="audio kept, in MB of 16-bit PCM")


@dataclass
class Entry:
    info: dict[str, Any]
    pcm: bytes | None  # 16-bit mono PCM, or None when it did not fit the budget
    sample_rate: int


class HistorySink(Sink):
    """Keeps the last utterances and their audio; read them with `entries()` and `audio(id)`."""

    type = "history"
    Settings = HistorySettings
    mirror = True  # it keeps what was spoken; it does not make anything said

    def __init__(self, settings: HistorySettings, ctx) -> None:
        super().__init__(settings, ctx)
        self.settings: HistorySettings = settings
        self._entries: deque[Entry] = deque()
        self._bytes = 0

    @property
    def budget(self) -> int:
        return int(self.settings.max_mb * 1024 * 1024)

    async def play(self, pb: Playback) -> None:
        parts: list[bytes] = []
        size = 0
        started = time.time()
        cut = True
        try:
            async for chunk in pb.chunks():
                if size <= self.budget:  # past the budget the audio is dropped, the entry kept
                    b = chunk.pcm16()
                    parts.append(b)
                    size += len(b)
            cut = pb.stats.cut
        finally:  # a skip cancels play(): what played is still history
            self._keep(pb, parts if size <= self.budget else None, started, cut)

    def _keep(self, pb: Playback, parts: list[bytes] | None, started: float, cut: bool) -> None:
        utt, m = pb.utterance, pb.utterance.message
        st = pb.stats.to_dict()
        pcm = b"".join(parts) if parts is not None else None
        info = {
            "id": utt.id, "ts": round(started, 3), "text": utt.text, "priority": utt.priority.name.lower(),
            "source": utt.source, "platform": m.platform if m else None, "kind": m.kind.value if m else "say",
            "user": m.user.name if m else None, "voice": st["voice"], "engine": st["engine"], "rtf": st["rtf"],
            "audio_s": round(len(pcm) / 2 / pb.sample_rate, 3) if pcm and pb.sample_rate else 0.0,
            "cut": cut, "has_audio": bool(pcm),
        }  # fmt: skip
        self._entries.append(Entry(info, pcm or None, pb.sample_rate))
        self._bytes += len(pcm or b"")
        while len(self._entries) > self.settings.keep or self._bytes > self.budget:
            old = self._entries.popleft()
            self._bytes -= len(old.pcm or b"")
        self.counters["kept"] += 1

    def entries(self) -> list[dict[str, Any]]:
        """What was said, newest first (no audio; see `audio`)."""
        return [dict(e.info) for e in reversed(self._entries)]

    def audio(self, utterance_id: int) -> tuple[bytes, int] | None:
        """(16-bit mono PCM, sample rate) of a kept utterance, or None."""
        for e in self._entries:
            if e.info["id"] == utterance_id and e.pcm:
                return e.pcm, e.sample_rate
        return None

    def status(self) -> dict[str, Any]:
        return {**super().status(), "kept": len(self._entries), "audio_mb": round(self._bytes / 1024 / 1024, 2)}


@hookimpl
def ishowtts_register_sinks(register):
    register(HistorySink)
