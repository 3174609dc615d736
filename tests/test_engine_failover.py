"""Run-time failover in the engine host, for any engine: one that raises EngineUnavailable is
replaced by the fallback (the same utterance too, when none of its audio was out yet) and
taken back once its probe answers; one unavailable at start is loaded once it answers."""

from __future__ import annotations

import threading

import anyio
import numpy as np
import pytest

from ishowttsd.config import Config, VoiceConfig
from ishowttsd.engines.base import Engine, EngineError, EngineUnavailable, Voice
from ishowttsd.engines.espeak import EspeakEngine
from ishowttsd.engines.host import EngineHost
from ishowttsd.events import EventBus
from ishowttsd.messages import AudioChunk, Priority, Utterance
from ishowttsd.queue import SpeechQueue
from ishowttsd.sink import Sink, SinkContext, SinkSettings
from ishowttsd.speaker import Speaker

pytestmark = pytest.mark.anyio


class Flaky(Engine):
    """Speaks two 0.1 s chunks at 16 kHz; `broken` makes it unavailable before its first chunk,
    `break_after_first` after it; `down_at_load` makes `load` itself unavailable."""

    name = "flaky"
    retry_s = 0.05
    down_at_load = False

    def __init__(self, settings, ctx) -> None:
        super().__init__(settings, ctx)
        self.sample_rate = 16_000
        self.broken = False
        self.break_after_first = False
        self.loads = 0
        self.probes = 0
        self.spoken: list[str] = []

    def load(self, progress) -> None:
        self.loads += 1
        if type(self).down_at_load:
            raise EngineUnavailable("flaky: the server is down")
        self.loaded = True

    def warmup(self, progress) -> None:
        self.warm = True

    def voices(self) -> list[Voice]:
        return [Voice(id="f", engine="flaky", language="en")]

    def add_voice(self, voice: Voice) -> Voice:
        return voice

    def probe(self) -> None:
        self.probes += 1
        if self.broken or type(self).down_at_load:
            raise EngineUnavailable("flaky: still down")

    def synthesize(self, text, voice, cancel):
        if self.broken:
            raise EngineUnavailable("flaky: connection refused")
        yield AudioChunk(np.full(1600, 0.1, np.float32), self.sample_rate)
        if self.break_after_first:
            self.broken = True
            raise EngineUnavailable("flaky: the server died mid-utterance")
        yield AudioChunk(np.full(1600, 0.1, np.float32), self.sample_rate)
        self.spoken.append(text)

    def health_checks(self):
        return [{"check": "flaky:server", "level": "fail" if self.broken else "ok", "reason": "as measured", "fix": ""}]


class Recording(Sink):
    type = "recording"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.played: list[tuple[str, int, float]] = []  # (text, sample rate, seconds)

    async def play(self, pb):
        total = 0.0
        async for chunk in pb.chunks():
            assert chunk.sample_rate == pb.sample_rate, "one utterance, one rate"
            total += chunk.duration
        self.played.append((pb.utterance.text, pb.sample_rate, total))


async def make(tmp_path, voices=()):
    cfg = Config(voices=list(voices))
    cfg.engine.default = "flaky"
    cfg.engine.fallback = "espeak"
    events = EventBus()
    host = EngineHost(cfg, {"flaky": Flaky, "espeak": EspeakEngine}, events)
    await host.start()
    sink = Recording(SinkSettings(type="recording"), SinkContext(events, cfg, tmp_path))
    queue = SpeechQueue(50, events)
    return host, Speaker(queue, host, [sink], events, sink_slack_s=1), queue, sink, events


async def wait_until(cond, timeout=20.0):
    with anyio.fail_after(timeout):
        while not cond():
            await anyio.sleep(0.01)


async def test_unavailable_before_audio_the_fallback_speaks_it_and_the_engine_comes_back(tmp_path):
    host, speaker, queue, sink, events = await make(tmp_path)
    flaky = host.engines["flaky"]
    assert "espeak" in host.engines and host.active == "flaky"
    assert host.resolve(None)[0].name == "flaky"
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        queue.put(Utterance(text="first, by flaky", priority=Priority.NORMAL))
        await wait_until(lambda: len(sink.played) == 1)
        flaky.broken = True
        queue.put(Utterance(text="second, while flaky is down", priority=Priority.NORMAL))
        await wait_until(lambda: len(sink.played) == 2)
        assert events.counts["engine.down"] == 1 and events.counts["failed"] == 0
        # said by espeak in flaky's stream: resampled to flaky's 16 kHz, and seconds long
        text, rate, seconds = sink.played[1]
        assert text.startswith("second") and rate == 16_000 and seconds > 0.5
        st = host.status()
        assert st["active"] == "espeak" and "flaky is unavailable: flaky: connection refused" in st["fallback_reason"]
        assert st["down"]["flaky"]["error"] == "flaky: connection refused"
        checks = {c["check"]: c for c in host.health_checks()}
        assert checks["engine:flaky"]["level"] == "warn" and "espeak speaks meanwhile" in checks["engine:flaky"]["reason"]
        assert checks["flaky:server"]["level"] == "fail"
        # while it is down its voices go straight to the fallback
        engine, voice = host.resolve("f")
        assert engine.name == "espeak" and voice.engine == "espeak"
        await wait_until(lambda: flaky.probes >= 2)
        assert "flaky" in host.down
        flaky.broken = False
        await wait_until(lambda: events.counts["engine.back"] == 1)
        assert host.active == "flaky" and host.fallback_reason is None and not host.down
        queue.put(Utterance(text="third, by flaky again", priority=Priority.NORMAL))
        await wait_until(lambda: len(sink.played) == 3)
        tg.cancel_scope.cancel()
    assert flaky.spoken == ["first, by flaky", "third, by flaky again"]
    assert events.counts["spoken"] == 3


async def test_unavailable_after_audio_fails_the_utterance_and_the_next_goes_to_the_fallback(tmp_path):
    host, speaker, queue, sink, events = await make(tmp_path)
    flaky = host.engines["flaky"]
    flaky.break_after_first = True
    ended = []
    speaker.on_ended.append(lambda u, outcome, reason: ended.append((u.text, outcome)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        queue.put(Utterance(text="cut short", priority=Priority.PAID))
        await wait_until(lambda: ended)
        # audio already played cannot be taken back: it fails (the daemon retries owed speech)
        assert ended == [("cut short", "failed")] and "flaky" in host.down
        queue.put(Utterance(text="said by espeak", priority=Priority.PAID))
        await wait_until(lambda: any(t == "said by espeak" for t, _, _ in sink.played))
        tg.cancel_scope.cancel()
    text, rate, _ = sink.played[-1]
    assert text == "said by espeak" and rate == host.engines["espeak"].sample_rate  # espeak's own, not resampled


async def test_unavailable_at_start_is_loaded_once_it_answers(tmp_path):
    Flaky.down_at_load = True
    try:
        host, speaker, queue, sink, events = await make(tmp_path, [VoiceConfig(id="mine", engine="flaky")])
    finally:
        Flaky.down_at_load = False
    assert host.active == "espeak" and "flaky" not in host.engines
    assert host.fallback_reason == "flaky failed: flaky: the server is down; retrying"
    assert "flaky" in host.down and "not loaded" in host.voice_errors["mine"]
    assert host.resolve("mine")[0].name == "espeak"
    await wait_until(lambda: events.counts["engine.back"] == 1)
    flaky = host.engines["flaky"]
    assert flaky.loads == 2 and host.active == "flaky" and not host.voice_errors
    assert host.resolve("mine")[0].name == "flaky"


async def test_no_working_fallback_says_so(tmp_path):
    cfg = Config()
    cfg.engine.default, cfg.engine.fallback = "flaky", None
    host = EngineHost(cfg, {"flaky": Flaky}, EventBus())
    await host.start()
    flaky = host.engines["flaky"]
    flaky.broken = True
    engine, voice = host.resolve(None)
    with pytest.raises(EngineUnavailable, match="no working fallback"):
        await anyio.to_thread.run_sync(lambda: list(engine.synthesize("hi", voice, threading.Event())))
    await wait_until(lambda: "flaky" in host.down)
    with pytest.raises(EngineError, match="'flaky' is unavailable .* no working fallback"):
        host.resolve(None)
