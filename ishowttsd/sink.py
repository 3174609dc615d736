"""What a sink plugin is: somewhere spoken audio goes (a sound card, files, OBS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, ClassVar

from pydantic import Field

from ishowttsd.channels import Channels
from ishowttsd.config import Config
from ishowttsd.events import EventBus
from ishowttsd.live_settings import apply_gain
from ishowttsd.messages import AudioChunk, Utterance
from ishowttsd.part import Part, PartSettings


class SinkSettings(PartSettings):
    """Keys every `[[sinks]]` table has; a sink's Settings subclass adds its own."""

    audible: bool | None = Field(
        default=None,
        description="does this sink deliver audio to people? An utterance counts as said only when an audible "
        "sink played it to the end. Default: the sink's own answer (ALSA yes, files no, OBS when it plays audio)",
    )


class NotPlayed(Exception):
    """Raise it from `Sink.play()` when the audio did not reach its destination (no sound card,
    OBS gone, disk full): the utterance is then not counted as said by this sink. The message
    says why, with advice; the sink reports its own state as well."""


@dataclass
class SinkContext:
    """What the daemon hands a sink: the event bus, the config, its state folder, and the
    channels through which it can reach front-door clients (see :mod:`ishowttsd.channels`)."""

    events: EventBus
    config: Config
    state_dir: Path
    channels: Channels = field(default_factory=Channels)


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

    `chunks()` yields audio as the engine produces it, at the sink's live volume (read as each
    chunk is taken, so a change is heard from the next chunk); iterate it to the end (the stats
    are final then). If the utterance is skipped, `play()` is cancelled: stop the sound at once.
    """

    utterance: Utterance
    sample_rate: int
    stats: SynthesisStats
    _stream: Any = field(repr=False, default=None)
    # the factor this sink's audio is scaled by now (master x sink volume); None: as synthesized
    gain: Callable[[], float] | None = field(repr=False, default=None)

    @property
    def key(self) -> str:
        """The utterance's stable key: the same across retries and restarts, so a sink that can
        look at what it already wrote (the file sink) never writes the same utterance twice."""
        return self.utterance.key

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        async for chunk in self._stream:
            g = 1.0 if self.gain is None else self.gain()
            yield chunk if g == 1.0 else AudioChunk(apply_gain(chunk.samples, g), chunk.sample_rate)


class Sink(Part):
    """Base class for sinks. Subclasses set `type`, maybe `Settings`, and write `play()`.

    The speaker calls `play()` for each utterance on every sink in parallel; a sink that
    raises is counted and reported, a sink that is slower than the audio allows is cut off
    and skipped while it is still busy, and neither delays the other sinks or the queue.
    Blocking calls (file or device writes) go through `anyio.to_thread.run_sync`.

    `play()` returning normally means "delivered to the end"; a sink that could not deliver
    raises :class:`NotPlayed` (or any error). Paid speech counts as said only when an audible
    sink (:attr:`delivers_audio`) delivered it; otherwise it stays owed and is played again,
    to the sinks that have not delivered it yet, once one recovers.
    """

    role = "sink"
    type: ClassVar[str]
    Settings: ClassVar[type[SinkSettings]] = SinkSettings
    # True for sinks that play in real time (ALSA): the speaker then paces to them
    realtime: ClassVar[bool] = False
    # True for sinks that deliver audio to people (a sound card, OBS audio, a browser overlay);
    # a file archive is not. The `audible` setting overrides it.
    audible: ClassVar[bool] = False
    # True for a sink that only mirrors what was spoken (the history): it never decides whether
    # an utterance was said, not even in an archive-only setup
    mirror: ClassVar[bool] = False

    def __init__(self, settings: SinkSettings, ctx: SinkContext) -> None:
        super().__init__(settings, ctx)
        self.ctx: SinkContext = ctx

    @property
    def delivers_audio(self) -> bool:
        """Whether an utterance this sink played counts as said (the `audible` setting, else
        the class's answer; a sink whose answer depends on its settings overrides this)."""
        if self.settings.audible is not None:
            return self.settings.audible
        return self.audible

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
