"""The one engine-streaming path that the speaker and the health bench share."""

import threading

import anyio
import numpy as np
import pytest

from ishowttsd.engines.base import Engine, Voice, stream_synthesis
from ishowttsd.messages import AudioChunk
from ishowttsd.sink import SynthesisStats

pytestmark = pytest.mark.anyio


class CountingEngine(Engine):
    """Three 0.1 s chunks, each after 20 ms of work; records the threads it ran on and whether
    its generator was closed."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__(None, None)
        self.sample_rate = 16_000
        self.threads: set[int] = set()
        self.closed_on: int | None = None

    def synthesize(self, text, voice, cancel):
        self.threads.add(threading.get_ident())
        return self._chunks(cancel)

    def _chunks(self, cancel):
        try:
            for _ in range(3):
                self.threads.add(threading.get_ident())
                threading.Event().wait(0.02)
                yield AudioChunk(np.zeros(1600, np.float32), self.sample_rate)
        finally:
            self.closed_on = threading.get_ident()


VOICE = Voice(id="v", engine="counting")


async def test_counts_and_emits_every_chunk_off_the_event_loop():
    engine, tally, got = CountingEngine(), SynthesisStats(), []
    await stream_synthesis(engine, "hi", VOICE, threading.Event(), anyio.CapacityLimiter(1), tally, got.append)
    assert len(got) == tally.chunks == 3 and tally.audio_s == pytest.approx(0.3)
    assert tally.synth_s >= 0.06 and 0 < tally.first_chunk_s <= tally.synth_s
    assert threading.get_ident() not in engine.threads  # the engine never runs on the event loop


async def test_cancel_stops_and_closes_the_engine_in_its_worker():
    engine, tally, cancel = CountingEngine(), SynthesisStats(), threading.Event()
    await stream_synthesis(engine, "hi", VOICE, cancel, anyio.CapacityLimiter(1), tally, lambda _: cancel.set())
    assert tally.chunks == 1 and engine.closed_on is not None and engine.closed_on != threading.get_ident()


async def test_the_engine_waits_for_its_one_worker():
    limiter = anyio.CapacityLimiter(1)
    engine, tally = CountingEngine(), SynthesisStats()
    async with anyio.create_task_group() as tg:
        await limiter.acquire()  # another engine call holds the worker for 0.2 s
        tg.start_soon(stream_synthesis, engine, "hi", VOICE, threading.Event(), limiter, tally)
        await anyio.sleep(0.2)
        assert tally.chunks == 0
        limiter.release()
    assert tally.chunks == 3 and tally.first_chunk_s >= 0.2
