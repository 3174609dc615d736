"""Speech for a caller instead of the stream: `/v1/audio/speech`, `synthesize`, voice previews.

It runs the engine through the same worker as the speaker (one worker owns the model), chunk
by chunk, and before each chunk it yields to the stream: while speech of a higher class than
`[web] speech_priority` is waiting or being prepared, it waits. So a caller never delays paid
chat by more than the one chunk already in the engine. It is bounded by size, concurrency and
rate (`[web] speech_*`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import anyio
import numpy as np

from ishowttsd.engines.base import stream_synthesis
from ishowttsd.messages import AudioChunk, Priority
from ishowttsd.sink import SynthesisStats

_POLL_S = 0.02


class DirectRefused(Exception):
    """A request the bounds refuse: `code` is an API error code, `retry_after` seconds or None."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass
class Speech:
    samples: np.ndarray
    sample_rate: int
    stats: SynthesisStats
    waited_s: float  # time spent yielding to the stream


class DirectSynthesis:
    """Synthesis for callers, bounded and behind the stream's higher classes."""

    def __init__(self, engines, queue, speaker, web, clock=time.monotonic) -> None:
        self.engines = engines
        self.queue = queue
        self.speaker = speaker
        self.cfg = web  # the [web] table
        self.clock = clock
        self.in_flight = 0
        self.served = 0
        self._tokens = float(web.speech_per_minute)
        self._refilled = clock()

    @property
    def priority(self) -> Priority:
        return Priority.parse(self.cfg.speech_priority)

    def _take_token(self) -> None:
        now = self.clock()
        rate = self.cfg.speech_per_minute / 60.0
        self._tokens = min(float(self.cfg.speech_per_minute), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1.0:
            wait = (1.0 - self._tokens) / rate
            raise DirectRefused("rate_limited", f"more than {self.cfg.speech_per_minute} requests a minute "
                                f"([web] speech_per_minute); retry in {wait:.0f} s", retry_after=wait)  # fmt: skip
        self._tokens -= 1.0

    def stream_comes_first(self) -> bool:
        """Is speech of a higher class than ours waiting or being prepared?"""
        mine = self.priority
        if any(u.priority < mine for u in self.queue.pending()):
            return True
        return any(Priority.parse(p["priority"]) < mine for p in self.speaker.status()["prepared"])

    async def synthesize(self, text: str, voice_id: str | None, options: dict | None = None) -> Speech:
        """The whole utterance as one waveform. Raises DirectRefused, or the engine's error."""
        if len(text) > self.cfg.speech_max_chars:
            raise DirectRefused("too_large", f"the text is {len(text)} characters; at most "
                                f"{self.cfg.speech_max_chars} ([web] speech_max_chars)")  # fmt: skip
        if self.in_flight >= self.cfg.speech_concurrency:
            raise DirectRefused("busy", f"{self.in_flight} speech requests are running ([web] speech_concurrency); "
                                "retry in a moment", retry_after=1.0)  # fmt: skip
        self._take_token()
        engine, voice = self.engines.resolve(voice_id, options)
        stats = SynthesisStats(engine=engine.name, voice=voice.id, sample_rate=engine.sample_rate)
        chunks: list[np.ndarray] = []
        cancel = threading.Event()
        gate = _Gate(self)
        self.in_flight += 1
        try:
            with anyio.fail_after(self.cfg.speech_timeout_s):
                await gate.wait()

                def keep(chunk: AudioChunk) -> None:
                    chunks.append(chunk.samples)

                await stream_synthesis(engine, text, voice, cancel, _GatedLimiter(self.engines.limiter, gate), stats, keep)
        except TimeoutError:
            cancel.set()
            raise DirectRefused("busy", f"no turn within {self.cfg.speech_timeout_s:g} s: the stream's own speech "
                                "goes first ([web] speech_timeout_s)", retry_after=5.0) from None  # fmt: skip
        finally:
            self.in_flight -= 1
        self.served += 1
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return Speech(samples, engine.sample_rate, stats, gate.waited)

    def status(self) -> dict:
        return {"in_flight": self.in_flight, "served": self.served, "priority": self.cfg.speech_priority}


class _Gate:
    """Waits while the stream has speech of a higher class; adds up the time waited."""

    def __init__(self, direct: DirectSynthesis) -> None:
        self.direct = direct
        self.waited = 0.0

    async def wait(self) -> None:
        t0 = time.perf_counter()
        while self.direct.stream_comes_first():
            await anyio.sleep(_POLL_S)
        self.waited += time.perf_counter() - t0


class _GatedLimiter:
    """The engine worker's limiter, entered only once the stream has nothing more important.

    `stream_synthesis` runs every engine call through its limiter; this one checks the gate
    first, so the caller's synthesis pauses between chunks while paid chat is synthesized."""

    def __init__(self, limiter: anyio.CapacityLimiter, gate: _Gate) -> None:
        self._limiter = limiter
        self._gate = gate

    async def __aenter__(self):
        await self._gate.wait()
        return await self._limiter.__aenter__()

    async def __aexit__(self, *exc):
        return await self._limiter.__aexit__(*exc)

    def __getattr__(self, name):
        return getattr(self._limiter, name)
