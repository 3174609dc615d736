"""What a sink plugin is: somewhere spoken audio goes (a sound card, files, OBS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar

from ishowttsd.config import Config
from ishowttsd.events import EventBus
from ishowttsd.messages import AudioChunk, Utterance
from ishowttsd.part import Part, PartSettings


# the keys every table has; a sink's Settings subclass adds its own
SinkSettings = PartSettings


@dataclass
class SinkContext:
    events: EventBus
    config: Config
    state_dir: Path


@dataclass
class SynthesisStats:
    """How synthesis of one utterance went; complete once the audio stream has ended."""

    engine: str = ""
    voice: str = ""
    sample_rate: int = 0
    # wall time spent inside the engine; in a batch, this utterance's share of the batch's time
    # in proportion to its audio length (so RTF is the batch's RTF)
    synth_s: float = 0.0
    audio_s: float = 0.0  # seconds of audio produced
    # time to first audio: from the utterance's turn to play to its first chunk at the sinks
    # (near zero when it was synthesized while the previous one played)
    ttfa_s: float | None = None
    # engine latency: synthesis start to its first chunk (a batch's members: the batch's wall time)
    first_chunk_s: float | None = None
    chunks: int = 0
    cut: bool = False  # skipped, cleared or deleted before the end
    batch: int = 1  # how many utterances were synthesized together with this one (itself included)

    @property
    def rtf(self) -> float | None:
        return self.synth_s / self.audio_s if self.audio_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        rtf = self.rtf
        return {
            "engine": self.engine,
            "voice": self.voice,
            "sample_rate": self.sample_rate,
            "synth_s": round(self.synth_s, 4),
            "audio_s": round(self.audio_s, 4),
            "rtf": None if rtf is None else round(rtf, 4),
            "ttfa_s": None if self.ttfa_s is None else round(self.ttfa_s, 4),
            "first_chunk_s": None if self.first_chunk_s is None else round(self.first_chunk_s, 4),
            "chunks": self.chunks,
            "cut": self.cut,
            "batch": self.batch,
        }


@dataclass
class Playback:
    """One utterance as a sink sees it: what is said, its audio as it arrives, its stats.

    `chunks()` yields audio as the engine produces it; iterate it to the end (the stats are
    final then). If the utterance is skipped, `play()` is cancelled: stop the sound at once.
    """

    utterance: Utterance
    sample_rate: int
    stats: SynthesisStats
    _stream: Any = field(repr=False, default=None)

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        async for chunk in self._stream:
            yield chunk


class Sink(Part):
    """Base class for sinks. Subclasses set `type`, maybe `Settings`, and write `play()`.

    The speaker calls `play()` for each utterance on every sink in parallel; a sink that
    raises is counted and reported, a sink that is slower than the audio allows is cut off
    and skipped while it is still busy, and neither delays the other sinks or the queue.
    Blocking calls (file or device writes) go through `anyio.to_thread.run_sync`.
    """

    role = "sink"
    type: ClassVar[str]
    Settings: ClassVar[type[SinkSettings]] = SinkSettings
    # True for sinks that play in real time (ALSA): the speaker then paces to them
    realtime: ClassVar[bool] = False

    def __init__(self, settings: SinkSettings, ctx: SinkContext) -> None:
        super().__init__(settings, ctx)
        self.ctx: SinkContext = ctx

    async def start(self) -> None:
        """Open devices or connections; raising here marks the sink failed, not the daemon."""

    async def play(self, playback: Playback) -> None:
        raise NotImplementedError

    async def pause(self) -> None:
        """Playback is paused: real-time sinks hold their sound."""

    async def resume(self) -> None:
        """Playback resumes."""

    async def close(self) -> None:
        """Called once at shutdown."""
