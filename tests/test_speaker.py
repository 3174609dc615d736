"""The speaker in-process: real espeak engine, real queue, test sinks that record, raise or hang."""

import threading
import time

import anyio
import pytest

from ishowttsd.config import Config
from ishowttsd.engines.espeak import EspeakEngine
from ishowttsd.engines.host import EngineHost
from ishowttsd.events import EventBus
from ishowttsd.messages import Priority, Utterance
from ishowttsd.queue import SpeechQueue
from ishowttsd.sink import Sink, SinkContext, SinkSettings
from ishowttsd.speaker import Speaker

pytestmark = pytest.mark.anyio


class Recording(Sink):
    type = "recording"

    def __init__(self, *a, pace: float = 0.0, **kw):
        super().__init__(*a, **kw)
        self.pace = pace  # 1.0 = real time
        self.done: list[tuple[int, float]] = []  # (utterance id, seconds of audio)
        self.started: list[int] = []

    async def play(self, pb):
        self.started.append(pb.utterance.id)
        total = 0.0
        async for chunk in pb.chunks():
            total += chunk.duration
            if self.pace:
                await anyio.sleep(chunk.duration * self.pace)
        self.done.append((pb.utterance.id, total))


class Raising(Sink):
    type = "raising"

    async def play(self, pb):
        async for _ in pb.chunks():
            raise OSError("device unplugged")


class HangsForever(Sink):
    type = "hangs"

    async def play(self, pb):
        await anyio.sleep_forever()


class HangsInThread(Sink):
    """Stuck in a blocking call that cancellation cannot interrupt."""

    type = "stuck"

    async def play(self, pb):
        await anyio.to_thread.run_sync(time.sleep, 3.0)


async def make(tmp_path, sinks_spec, slack=0.5):
    cfg = Config()
    events = EventBus()
    host = EngineHost(cfg, {"espeak": EspeakEngine}, events)
    await host.start()
    ctx = SinkContext(events, cfg, tmp_path)
    sinks = [cls(SinkSettings(type=cls.type, name=f"{cls.type}{i}"), ctx, **kw) for i, (cls, kw) in enumerate(sinks_spec)]
    queue = SpeechQueue(50, events)
    return Speaker(queue, host, sinks, events, sink_slack_s=slack), queue, sinks, events


def say(queue, text, prio=Priority.NORMAL):
    u = Utterance(text=text, priority=prio)
    queue.put(u)
    return u


async def wait_until(cond, timeout=10.0):
    with anyio.fail_after(timeout):
        while not cond():
            await anyio.sleep(0.01)


async def test_failing_and_hanging_sinks_do_not_stall_the_good_one(tmp_path):
    speaker, queue, sinks, events = await make(
        tmp_path, [(Recording, {}), (Raising, {}), (HangsForever, {}), (HangsInThread, {})]
    )
    good, raising, hangs, stuck = sinks
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        t0 = time.monotonic()
        for i in range(4):
            say(queue, f"message number {i}")
        await wait_until(lambda: events.counts["spoken"] == 4, timeout=30)
        elapsed = time.monotonic() - t0
        tg.cancel_scope.cancel()
    assert [d[1] > 0.5 for d in good.done] == [True] * 4
    assert raising.counters["errors"] == 4 and raising.state == "error" and "unplugged" in raising.last_error
    assert hangs.counters["timeouts"] >= 1
    assert stuck.counters["timeouts"] + stuck.counters["skipped_busy"] >= 3  # skipped while stuck
    assert events.counts["spoken"] == 4
    # four utterances with a 0.5 s sink slack: the hanging sinks cost at most the slack each
    assert elapsed < 4 * (0.5 + 3.5)


async def test_next_utterance_is_synthesized_while_the_current_plays(tmp_path):
    speaker, queue, sinks, events = await make(tmp_path, [(Recording, {"pace": 1.0})], slack=2)
    rec = sinks[0]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        a = say(queue, "first, a sentence of a few seconds")
        b = say(queue, "second one")
        await wait_until(lambda: rec.started == [a.id])
        await anyio.sleep(0.3)
        prepared = speaker.status()["prepared"]
        assert [p["id"] for p in prepared] == [b.id]
        assert speaker._preparing[0].synth_done.is_set(), "the next utterance should be ready before it is needed"
        tg.cancel_scope.cancel()


async def test_skip_cuts_at_once_and_the_next_plays(tmp_path):
    speaker, queue, sinks, events = await make(tmp_path, [(Recording, {"pace": 1.0})], slack=2)
    rec = sinks[0]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        a = say(queue, "this is a long message that nobody wants to hear until the very end of it")
        b = say(queue, "short")
        await wait_until(lambda: rec.started == [a.id])
        await anyio.sleep(0.2)
        t0 = time.monotonic()
        assert speaker.skip().id == a.id
        await wait_until(lambda: rec.started == [a.id, b.id], timeout=2)
        assert time.monotonic() - t0 < 0.2
        await wait_until(lambda: [d[0] for d in rec.done] == [b.id])
        tg.cancel_scope.cancel()
    assert events.counts["cut"] == 1 and events.counts["spoken"] == 1


async def test_pause_holds_and_resume_goes_on(tmp_path):
    speaker, queue, sinks, events = await make(tmp_path, [(Recording, {})])
    rec = sinks[0]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await speaker.pause()
        say(queue, "held back")
        await anyio.sleep(0.5)
        assert rec.done == [] and speaker.status()["paused"]
        await speaker.resume()
        await wait_until(lambda: len(rec.done) == 1)
        tg.cancel_scope.cancel()


async def test_higher_priority_goes_first(tmp_path):
    speaker, queue, sinks, events = await make(tmp_path, [(Recording, {})])
    rec = sinks[0]
    low = say(queue, "normal chat", Priority.NORMAL)
    paid = say(queue, "a super chat", Priority.PAID)
    member = say(queue, "a new member", Priority.MEMBERSHIP)
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(rec.done) == 3)
        tg.cancel_scope.cancel()
    assert [d[0] for d in rec.done] == [paid.id, member.id, low.id]


async def test_deleting_what_is_playing_cuts_it(tmp_path):
    speaker, queue, sinks, events = await make(tmp_path, [(Recording, {"pace": 1.0})], slack=2)
    rec = sinks[0]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        a = say(queue, "a message a moderator is about to delete, long enough to be playing")
        await wait_until(lambda: rec.started == [a.id])
        cut = speaker.cut_where(lambda u: u.id == a.id, "deleted")
        assert [u.id for u in cut] == [a.id]
        await wait_until(lambda: events.counts["cut"] == 1, timeout=1)
        tg.cancel_scope.cancel()
    assert rec.done == []


async def test_an_engine_that_raises_fails_one_utterance_not_the_speaker(tmp_path):
    speaker, queue, sinks, events = await make(tmp_path, [(Recording, {})])
    rec = sinks[0]
    engine = speaker.engines.engines["espeak"]
    real = engine.synthesize

    def synthesize(text, voice, cancel):
        if "boom" in text:
            raise RuntimeError("the model fell over")  # raised at call time, not while iterating
        return real(text, voice, cancel)

    engine.synthesize = synthesize
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        say(queue, "boom")
        ok = say(queue, "still speaking")
        await wait_until(lambda: [d[0] for d in rec.done] == [ok.id])
        tg.cancel_scope.cancel()
    assert events.counts["failed"] == 1 and events.counts["spoken"] == 1


async def test_ttfa_is_near_zero_for_an_utterance_prepared_ahead(tmp_path):
    speaker, queue, sinks, events = await make(tmp_path, [(Recording, {"pace": 1.0})], slack=2)
    stats = []
    speaker.on_spoken.append(lambda u, st: stats.append(st))
    speaker.on_spoken.insert(0, lambda u, st: 1 / 0)  # a broken callback harms nothing
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        say(queue, "one two three")
        say(queue, "four")
        await wait_until(lambda: len(stats) == 2)
        tg.cancel_scope.cancel()
    assert stats[1].ttfa_s < 0.05 and stats[1].first_chunk_s > 0


async def test_skipping_before_the_first_chunk_is_a_cut_not_an_engine_failure(tmp_path):
    speaker, queue, sinks, events = await make(tmp_path, [(Recording, {})])
    engine = speaker.engines.engines["espeak"]
    real = engine.synthesize
    gate = threading.Event()

    def synthesize(text, voice, cancel):
        while not gate.wait(0.01) and not cancel.is_set():  # a slow model, before its first chunk
            pass
        yield from real(text, voice, cancel)

    engine.synthesize = synthesize
    ended = []
    speaker.on_ended.append(lambda u, outcome, reason: ended.append((u.id, outcome, reason)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        u = say(queue, "a super chat the streamer skips at once")
        await wait_until(lambda: speaker.current is not None)
        assert speaker.skip().id == u.id
        await wait_until(lambda: ended)
        gate.set()
        tg.cancel_scope.cancel()
    # as "failed", the journal would queue a skipped super chat again
    assert ended == [(u.id, "cut", "skipped")] and events.counts["failed"] == 0
