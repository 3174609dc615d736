"""What an engine is: it loads, warms up, lists voices and streams speech for a text; and the
one way the daemon runs it (`stream_synthesis`)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Protocol

import anyio
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ishowttsd.config import Config
from ishowttsd.messages import AudioChunk

# progress(stage, fraction or None): long work (load, warm-up, compile) reports here
Progress = Callable[[str, "float | None"], None]


class Cancel(Protocol):
    """What an engine needs of a cancel flag (a threading.Event is one)."""

    def is_set(self) -> bool: ...


class EngineError(Exception):
    """An engine cannot do what was asked; the message says why and what to do."""


class EngineUnavailable(EngineError):
    """The engine cannot serve for now (its server is down or misbehaves, a device is gone),
    though its config is fine. Raised by `load()` or during synthesis, it makes the engine host
    speak with the fallback engine and ask `probe()` until the engine is back."""


class EngineSettings(BaseModel):
    """The `[engine.<name>]` table; an engine's Settings subclass adds its keys."""

    model_config = ConfigDict(extra="forbid")


class SpeechOptions(BaseModel):
    """Per-request engine options (`say`, `/v1/audio/speech`): the base has what every engine
    honours; an engine's `Options` subclass adds its own (F5: steps, cfg_strength, seed)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    speed: float | None = Field(default=None, ge=0.25, le=4.0, description="speaking rate; 1 is the voice's own")

    @classmethod
    def fields(cls) -> dict[str, dict[str, Any]]:
        """The options for a form: name -> type, minimum, maximum, description."""
        out = {}
        for name, spec in cls.model_json_schema().get("properties", {}).items():
            kind = next((a for a in spec.get("anyOf", [spec]) if a.get("type") != "null"), {})
            out[name] = {k: kind[k] for k in ("type", "minimum", "maximum") if k in kind}
            if "description" in spec:
                out[name]["description"] = spec["description"]
        return out


@dataclass
class Voice:
    """A voice an engine can speak with."""

    id: str
    engine: str
    language: str = ""
    description: str = ""
    reference_audio: str | None = None
    reference_text: str | None = None
    speed: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tuned(self, options: SpeechOptions) -> Voice:
        """This voice with one request's options: speed multiplies, the others go into `options`
        (where the engine reads them, as it reads a `[[voices]]` entry's `options`)."""
        extra = options.model_dump(exclude_none=True)
        speed = extra.pop("speed", 1.0)
        return replace(self, speed=self.speed * speed, options={**self.options, **extra})


@dataclass
class EngineContext:
    config: Config
    state_dir: Path


class Engine:
    """Base class for engines. All methods but `info`/`voices` are blocking: the daemon
    calls them in its one engine worker thread, never on the event loop.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[EngineSettings]] = EngineSettings
    # what a request may set for one utterance (see SpeechOptions)
    Options: ClassVar[type[SpeechOptions]] = SpeechOptions
    # whether `add_voice` clones a voice from `reference_audio` (uploaded voices need it)
    clones: ClassVar[bool] = False
    # how many queued utterances `synthesize_batch` takes in one pass; at 1 the speaker streams
    # each utterance through `synthesize` and never calls `synthesize_batch`
    max_batch: int = 1
    # seconds between `probe()` calls while the engine is unavailable (they grow on each failure)
    retry_s: float = 5.0

    def __init__(self, settings: EngineSettings, ctx: EngineContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.log = logging.getLogger(f"ishowttsd.engine.{self.name}")
        self.sample_rate = 0
        self.loaded = False
        self.warm = False

    def load(self, progress: Progress) -> None:
        """Load models; raise EngineError with advice when something is missing."""
        raise NotImplementedError

    def warmup(self, progress: Progress) -> None:
        """Run a short synthesis so the first real utterance is not slow."""
        for _ in self.synthesize("warm up", self.voices()[0], threading.Event()):
            pass
        self.warm = True

    def voices(self) -> list[Voice]:
        raise NotImplementedError

    def add_voice(self, voice: Voice) -> Voice:
        """Make a configured voice (`[[voices]]`) usable; may do expensive preparation."""
        raise EngineError(f"engine {self.name!r} has no configurable voices")

    def synthesize(self, text: str, voice: Voice, cancel: threading.Event) -> Iterator[AudioChunk]:
        """Yield audio for `text` as it is produced; stop early once `cancel` is set."""
        raise NotImplementedError

    def synthesize_batch(self, texts: list[str], voices: list[Voice], cancel: Cancel) -> list[np.ndarray]:
        """Synthesize several utterances in one pass; one float32 waveform at `sample_rate` per
        text, in order. Stop early (any result) once `cancel.is_set()`. Called only when
        `max_batch` > 1, with at most `max_batch` texts."""
        raise NotImplementedError

    def probe(self) -> None:
        """Raise EngineUnavailable while the engine still cannot serve. The host calls it from a
        thread of its own while the engine is unavailable, possibly while another engine
        synthesizes: it must be thread-safe and leave the model alone. The default knows
        nothing and returns, so the host simply tries the engine again."""

    def health_checks(self) -> list[dict[str, Any]]:
        """The engine's own checks for `health` and `status`: dicts with `check`, `level` (ok,
        warn or fail), `reason`, `fix` and optional `data`. Called on the event loop: report what
        was last measured, never wait on the network."""
        return []

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "loaded": self.loaded, "warm": self.warm, "sample_rate": self.sample_rate}


class SynthesisTally(Protocol):
    """What `stream_synthesis` counts into (`ishowttsd.sink.SynthesisStats` is one)."""

    synth_s: float
    audio_s: float
    first_chunk_s: float | None
    chunks: int


async def stream_synthesis(
    engine: Engine,
    text: str,
    voice: Voice,
    cancel: threading.Event,
    limiter: anyio.CapacityLimiter,
    tally: SynthesisTally,
    emit: Callable[[AudioChunk], None] | None = None,
) -> None:
    """Run `engine.synthesize` chunk by chunk in the engine worker (every call through
    `limiter`), so that the event loop never blocks; the speaker speaks and the health bench
    times through this one path, so their RTFs compare.

    Counts into `tally` as it goes: `synth_s` (time in the engine, the wait for the worker
    included), `first_chunk_s` (from the start to the first chunk), `chunks`, `audio_s`; hands
    each chunk to `emit`. Stops once `cancel` is set and then closes the engine's iterator in
    the worker, so its cleanup runs there. The engine's exceptions propagate.
    """
    t_start = time.perf_counter()
    done = object()
    it = None
    try:
        it = await anyio.to_thread.run_sync(engine.synthesize, text, voice, cancel, limiter=limiter)
        tally.synth_s += time.perf_counter() - t_start
        while not cancel.is_set():
            t0 = time.perf_counter()
            chunk = await anyio.to_thread.run_sync(next, it, done, limiter=limiter)
            tally.synth_s += time.perf_counter() - t0
            if chunk is done:
                break
            if tally.first_chunk_s is None:
                tally.first_chunk_s = time.perf_counter() - t_start
            tally.chunks += 1
            tally.audio_s += chunk.duration
            if emit is not None:
                emit(chunk)
    finally:
        if cancel.is_set() and it is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_close, it, limiter=limiter)


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close:
        close()
