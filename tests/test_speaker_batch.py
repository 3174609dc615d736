"""The speaker batches queued utterances for an engine that can (`max_batch` > 1).

A fake engine records its calls and makes audio whose length follows the text; the real tiny
F5 engine checks that batched utterances come out as long as their solo runs.
"""

from __future__ import annotations

import json
import threading
import wave

import anyio
import numpy as np
import pytest

from ishowttsd.config import Config, VoiceConfig
from ishowttsd.engines.base import Engine, Voice
from ishowttsd.engines.host import EngineHost
from ishowttsd.events import EventBus
from ishowttsd.messages import AudioChunk, Priority, Utterance
from ishowttsd.queue import SpeechQueue
from ishowttsd.sink import Sink, SinkContext, SinkSettings
from ishowttsd.speaker import Speaker

RATE = 8000
PER_CHAR_S = 0.005  # the fake engine's audio: 5 ms per character of text


def audio_s(text: str) -> float:
    return len(text) * PER_CHAR_S


class Batchy(Engine):
    """Synthesizes silence-free noise as long as the text; records every call in `log`."""

    name = "batchy"
    max_batch = 4

    def __init__(self, settings, ctx) -> None:
        super().__init__(settings, ctx)
        self.log: list[tuple] = []  # ("batch" | "solo", texts, voice ids)
        self.gate = threading.Event()  # synthesis waits for it (tests hold it to act meanwhile)
        self.gate.set()
        self.saw_cancel = False

    def load(self, progress) -> None:
        self.sample_rate = RATE
        self.loaded = True

    def warmup(self, progress) -> None:
        self.warm = True

    def voices(self) -> list[Voice]:
        return [Voice(id="a", engine=self.name), Voice(id="b", engine=self.name)]

    def add_voice(self, voice: Voice) -> Voice:
        return voice

    def _wave(self, text: str) -> np.ndarray:
        if "boom" in text:
            raise RuntimeError("the model fell over")
        return np.random.default_rng(len(text)).uniform(-0.5, 0.5, int(audio_s(text) * RATE)).astype(np.float32)

    def _wait(self, cancel) -> bool:
        while not self.gate.wait(0.01):
            if cancel.is_set():
                self.saw_cancel = True
                return False
        return True

    def synthesize(self, text, voice, cancel):
        self.log.append(("solo", [text], [voice.id]))
        if not self._wait(cancel):
            return
        w = self._wave(text)
        step = RATE // 20  # streams in 50 ms chunks
        for i in range(0, len(w), step):
            if cancel.is_set():
                return
            yield AudioChunk(w[i : i + step], RATE)

    def synthesize_batch(self, texts, voices, cancel):
        self.log.append(("batch", list(texts), [v.id for v in voices]))
        if not self._wait(cancel):
            return []
        return [self._wave(t) for t in texts]


class Other(Batchy):
    name = "other"
    max_batch = 1

    def voices(self) -> list[Voice]:
        return []

    def synthesize_batch(self, texts, voices, cancel):
        raise AssertionError("an engine with max_batch = 1 is never asked for a batch")


class Recording(Sink):
    type = "recording"

    def __init__(self, *a, log: list, pace: float = 0.0, **kw):
        super().__init__(*a, **kw)
        self.pace = pace
        self.log = log  # shared with the engine: what happened in which order
        self.started: list[int] = []
        self.done: list[tuple[int, float, int]] = []  # (utterance id, seconds of audio, chunks)

    async def play(self, pb):
        self.started.append(pb.utterance.id)
        total, n = 0.0, 0
        async for chunk in pb.chunks():
            total += chunk.duration
            n += 1
            if self.pace:
                await anyio.sleep(chunk.duration * self.pace)
        self.done.append((pb.utterance.id, total, n))
        self.log.append(("done", pb.utterance.id))


async def make(tmp_path, pace=0.0):
    cfg = Config(voices=[VoiceConfig(id="o", engine="other")])
    cfg.engine.default = "batchy"
    cfg.engine.fallback = None
    cfg.engine.default_voice = "a"
    events = EventBus()
    host = EngineHost(cfg, {"batchy": Batchy, "other": Other}, events)
    await host.start()
    engine = host.engines["batchy"]
    host.engines["other"].log = engine.log  # one record of every engine call, in order
    rec = Recording(SinkSettings(type="recording"), SinkContext(events, cfg, tmp_path), log=engine.log, pace=pace)
    queue = SpeechQueue(50, events)
    speaker = Speaker(queue, host, [rec], events, sink_slack_s=2)
    spoken = []
    speaker.on_spoken.append(lambda u, st: spoken.append((u, st)))
    return speaker, queue, engine, rec, events, spoken


def say(queue, text, prio=Priority.NORMAL, voice=None) -> Utterance:
    u = Utterance(text=text, priority=prio, voice=voice)
    queue.put(u)
    return u


def calls(engine) -> list[tuple]:
    return [c for c in engine.log if c[0] != "done"]


async def wait_until(cond, timeout=10.0):
    with anyio.fail_after(timeout):
        while not cond():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_queued_utterances_go_as_one_batch_and_are_spoken_in_order(tmp_path):
    speaker, queue, engine, rec, events, spoken = await make(tmp_path)
    utts = [say(queue, f"message number {i}" + "!" * i * 10) for i in range(5)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(rec.done) == 5)
        tg.cancel_scope.cancel()
    texts = [u.text for u in utts]
    # four in one batch; the fifth, alone, streams through synthesize()
    assert calls(engine) == [("batch", texts[:4], ["a"] * 4), ("solo", texts[4:], ["a"])]
    assert [d[0] for d in rec.done] == [u.id for u in utts]
    for (uid, secs, chunks), u in zip(rec.done, utts):
        assert secs == pytest.approx(audio_s(u.text), abs=1 / RATE)
        assert chunks >= 1
    stats = [st for _, st in spoken]
    assert [st.batch for st in stats] == [4, 4, 4, 4, 1]
    assert [st.to_dict()["batch"] for st in stats] == [4, 4, 4, 4, 1]
    # every member waited for the whole batch; each carries its share of its time, by audio length
    assert len({st.first_chunk_s for st in stats[:4]}) == 1
    assert sum(st.synth_s for st in stats[:4]) == pytest.approx(stats[0].first_chunk_s)
    assert stats[3].synth_s > stats[0].synth_s
    assert stats[0].rtf == pytest.approx(stats[3].rtf)
    assert events.counts["spoken"] == 5


@pytest.mark.anyio
async def test_a_batch_holds_one_slot_until_its_last_member_has_played(tmp_path):
    speaker, queue, engine, rec, events, spoken = await make(tmp_path, pace=1.0)
    utts = [say(queue, f"utterance {i} " + "x" * 20) for i in range(9)]  # about 0.15 s each
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: rec.started == [utts[0].id])
        await anyio.sleep(0.1)
        # one batch playing, the next one prepared, the ninth still waits in the queue
        assert [len(c[1]) for c in calls(engine)] == [4, 4] and len(queue) == 1
        assert [p["id"] for p in speaker.status()["prepared"]] == [u.id for u in utts[1:8]]
        await wait_until(lambda: len(rec.done) == 9)
        tg.cancel_scope.cancel()
    assert [len(c[1]) for c in calls(engine)] == [4, 4, 1]
    third = engine.log.index(calls(engine)[2])
    assert ("done", utts[3].id) in engine.log[:third], "the slot came back before the first batch had played"
    assert [d[0] for d in rec.done] == [u.id for u in utts]


@pytest.mark.anyio
async def test_paid_speech_and_other_engines_are_never_in_a_batch_of_others(tmp_path):
    speaker, queue, engine, rec, events, spoken = await make(tmp_path)
    n1 = say(queue, "normal one")
    n2 = say(queue, "normal two", voice="b")  # another voice of the same engine: same batch
    p1 = say(queue, "paid one", Priority.PAID)
    n3 = say(queue, "normal three")
    p2 = say(queue, "paid two", Priority.PAID)
    o = say(queue, "another engine", voice="o")
    n4 = say(queue, "normal four")
    n5 = say(queue, "normal five")
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(rec.done) == 8)
        tg.cancel_scope.cancel()
    assert calls(engine) == [
        ("batch", [p1.text, p2.text], ["a", "a"]),
        ("batch", [n1.text, n2.text, n3.text], ["a", "b", "a"]),
        ("solo", [o.text], ["o"]),  # the other engine's, in queue order: nothing jumps ahead of it
        ("batch", [n4.text, n5.text], ["a", "a"]),
    ]
    assert [d[0] for d in rec.done] == [u.id for u in (p1, p2, n1, n2, n3, o, n4, n5)]
    by_id = {u.id: st for u, st in spoken}
    assert by_id[o.id].engine == "other" and by_id[o.id].batch == 1


@pytest.mark.anyio
async def test_a_paid_utterance_arriving_during_a_batch_is_not_added_to_it(tmp_path):
    speaker, queue, engine, rec, events, spoken = await make(tmp_path)
    engine.gate.clear()
    n = [say(queue, f"normal {i}") for i in range(3)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(calls(engine)) == 1)
        p = say(queue, "paid, while the batch runs", Priority.PAID)
        n3 = say(queue, "normal 3")
        engine.gate.set()
        await wait_until(lambda: len(rec.done) == 5)
        tg.cancel_scope.cancel()
    assert calls(engine) == [("batch", [u.text for u in n], ["a"] * 3), ("solo", [p.text], ["a"]), ("solo", [n3.text], ["a"])]
    assert [d[0] for d in rec.done] == [u.id for u in (*n, p, n3)]


@pytest.mark.anyio
async def test_cutting_or_skipping_one_member_plays_the_others(tmp_path):
    speaker, queue, engine, rec, events, spoken = await make(tmp_path, pace=1.0)
    engine.gate.clear()
    a = say(queue, "the first one, long enough to be playing when it is skipped " + "y" * 100)
    b = say(queue, "the second, deleted by a moderator while it is synthesized")
    c = say(queue, "the third, heard in full")
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(calls(engine)) == 1)
        assert [u.id for u in speaker.cut_where(lambda u: u.id == b.id, "deleted")] == [b.id]
        engine.gate.set()
        await wait_until(lambda: rec.started == [a.id])
        await anyio.sleep(0.1)
        assert speaker.skip().id == a.id
        await wait_until(lambda: len(rec.done) == 1)
        tg.cancel_scope.cancel()
    assert not engine.saw_cancel
    assert rec.started == [a.id, c.id]
    assert rec.done[0][0] == c.id and rec.done[0][1] == pytest.approx(audio_s(c.text), abs=1 / RATE)
    assert events.counts["cut"] == 2 and events.counts["spoken"] == 1


@pytest.mark.anyio
async def test_a_batch_whose_members_are_all_cut_cancels_the_engine(tmp_path):
    speaker, queue, engine, rec, events, spoken = await make(tmp_path)
    engine.gate.clear()
    batch = [say(queue, f"spam {i}") for i in range(3)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(calls(engine)) == 1)
        speaker.cut_where(lambda u: u.id == batch[0].id, "deleted")
        await anyio.sleep(0.1)
        assert not engine.saw_cancel  # two members still want their audio
        assert len(speaker.cut_where(lambda u: True, "cleared")) == 2
        await wait_until(lambda: engine.saw_cancel, timeout=2)
        await wait_until(lambda: events.counts["cut"] == 3)
        assert events.counts["failed"] == 0
        engine.gate.set()
        later = say(queue, "spoken after the clear")
        await wait_until(lambda: len(rec.done) == 1)
        tg.cancel_scope.cancel()
    assert rec.done[0][0] == later.id and rec.started == [later.id]


@pytest.mark.anyio
async def test_a_failed_batch_is_retried_one_by_one_so_only_the_bad_member_fails(tmp_path):
    speaker, queue, engine, rec, events, spoken = await make(tmp_path)
    ended = []
    speaker.on_ended.append(lambda u, outcome, reason: ended.append((u.id, outcome, reason)))
    fine, bad, also = say(queue, "fine"), say(queue, "boom"), say(queue, "also fine")
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(ended) == 1 and len(rec.done) == 2)
        later = [say(queue, "still speaking"), say(queue, "and again")]
        await wait_until(lambda: len(rec.done) == 4)
        tg.cancel_scope.cancel()
    assert ended == [(bad.id, "failed", "engine")]
    assert events.counts["failed"] == 1 and events.counts["batch_failed"] == 1
    assert [d[0] for d in rec.done] == [fine.id, also.id, *(u.id for u in later)]
    assert calls(engine) == [
        ("batch", ["fine", "boom", "also fine"], ["a"] * 3),
        ("solo", ["fine"], ["a"]), ("solo", ["boom"], ["a"]), ("solo", ["also fine"], ["a"]),
        ("batch", [u.text for u in later], ["a", "a"]),
    ]  # fmt: skip
    by_id = {u.id: st for u, st in spoken}
    assert by_id[fine.id].batch == 1 and by_id[later[0].id].batch == 2


@pytest.mark.anyio
async def test_an_engine_without_batching_still_streams(tmp_path):
    speaker, queue, engine, rec, events, spoken = await make(tmp_path)
    other = speaker.engines.engines["other"]
    utts = [say(queue, f"said by the other engine, number {i}", voice="o") for i in range(3)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(rec.done) == 3)
        tg.cancel_scope.cancel()
    assert calls(other) == [("solo", [u.text], ["o"]) for u in utts]
    for (uid, secs, chunks), (u, st) in zip(rec.done, spoken):
        assert chunks == st.chunks and chunks == int(np.ceil(audio_s(u.text) * 20))  # its own 50 ms chunks
        assert st.batch == 1 and st.first_chunk_s < st.synth_s + 1e-3


def test_take_more_keeps_order_and_expiry():
    now = [100.0]
    events = EventBus()
    q = SpeechQueue(50, events, clock=lambda: now[0])
    stale = Utterance(text="stale", deadline=now[0] + 1)
    stale.created = now[0]
    q.put(stale)
    a, b, c, d = (Utterance(text=t) for t in "abcd")
    for u in (a, b, c, d):
        u.created = now[0]
        q.put(u)
    q.put(Utterance(text="paid", priority=Priority.PAID))
    now[0] += 2
    head = q.get_nowait()
    assert head.text == "paid" and events.counts["expired"] == 1
    assert q.take_more(lambda u: u.priority == Priority.PAID, 3) == []  # stops at the first miss
    assert q.take_more(lambda u: u.text != "c", 5) == [a, b]  # never skips over one
    assert q.take_more(lambda u: True, 1) == [c]  # at most `limit`
    assert [u.text for u in q.pending()] == ["d"] and len(q) == 1 and c.id not in q
    assert list(q.waits)[-3:] == [2.0, 2.0, 2.0]


@pytest.mark.anyio
async def test_f5_batches_queued_utterances_as_long_as_their_solo_runs(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("f5_tts")
    import f5_tiny

    from ishowttsd.engines.f5 import F5Engine
    from ishowttsd.plugins import load_builtin

    filesink = load_builtin("sinks/file")
    tiny = f5_tiny.build(tmp_path / "tiny")
    cfg = Config.model_validate({
        "daemon": {"state_dir": str(tmp_path / "state")},
        "engine": {"default": "f5", "fallback": None, "default_voice": "me",
                   "f5": {"model": "tiny", "arch": f5_tiny.TINY_ARCH, "checkpoint": str(tiny["safetensors"]),
                          "vocab": str(tiny["vocab"]), "vocoder": str(tiny["vocos"]), "device": "cpu",
                          "queue_batch": 3}},
        "voices": [{"id": "me", "engine": "f5", "reference_audio": str(tiny["ref"]), "reference_text": f5_tiny.REF_TEXT}],
    })  # fmt: skip
    events = EventBus()
    host = EngineHost(cfg, {"f5": F5Engine}, events)
    await host.start()
    engine = host.engines["f5"]
    assert engine.max_batch == 3
    texts = ["Hello there, how are you?", "Good game! Well played, everyone.", "ni3 hao3 zhu3 bo1, see you tomorrow."]
    voice = engine.voices()[0]
    solo = [sum(len(c.samples) for c in engine.synthesize(t, voice, threading.Event())) for t in texts]
    assert len(set(solo)) == 3

    batches = []
    real = engine.synthesize_batch

    def spy(texts, voices, cancel):
        batches.append(list(texts))
        return real(texts, voices, cancel)

    engine.synthesize_batch = spy
    out = tmp_path / "out"
    sink = filesink.FileSink(filesink.FileSettings(type="file", directory=str(out)), SinkContext(events, cfg, tmp_path))
    await sink.start()
    queue = SpeechQueue(50, events)
    speaker = Speaker(queue, host, [sink], events)
    utts = [say(queue, t) for t in texts]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: events.counts["spoken"] == 3, timeout=120)
        tg.cancel_scope.cancel()
    assert batches == [texts]
    assert len(list(out.glob("*.wav"))) == 3
    said = [json.loads(line) for line in (out / "spoken.jsonl").read_text().splitlines()]
    assert [r["id"] for r in said] == [u.id for u in utts]
    assert [r["batch"] for r in said] == [3, 3, 3]
    for r, n in zip(said, solo):
        with wave.open(str(out / r["file"])) as f:
            assert f.getframerate() == 24000 and f.getnframes() == n
    await sink.close()


def test_f5_queue_batch_auto_batches_on_cuda_only(tmp_path):
    torch = pytest.importorskip("torch")
    from pydantic import ValidationError

    from ishowttsd.engines.base import EngineContext
    from ishowttsd.engines.f5 import F5Engine, F5Settings

    e = F5Engine(F5Settings(), EngineContext(config=None, state_dir=tmp_path))
    assert e.max_batch == 1  # not loaded yet
    e.device = torch.device("cpu")
    assert e.max_batch == 1  # a batch costs the sum of its utterances there
    e.device = torch.device("cuda")  # only looked at, never used
    assert e.max_batch == 8
    e.settings = F5Settings(queue_batch=2)
    assert e.max_batch == 2
    for bad in (0, "many"):
        with pytest.raises(ValidationError):
            F5Settings(queue_batch=bad)


@pytest.mark.anyio
async def test_batches_only_while_synthesis_is_the_bottleneck(tmp_path):
    """With batch_min_rtf set, utterances go one at a time until recent speech shows synthesis
    slow next to playback; then the queue behind the next one is batched."""
    speaker, queue, engine, rec, events, spoken = await make(tmp_path)
    speaker.batch_min_rtf = 0.5
    fast = [say(queue, f"quick one {i}") for i in range(3)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(rec.done) == 3)
        assert [c[0] for c in calls(engine)] == ["solo"] * 3  # no RTF yet, then a fast engine: no batch
        speaker.solo_rtfs.extend([0.8] * 20)  # synthesis now takes 0.8 s per second of speech
        slow = [say(queue, f"slow one {i}") for i in range(4)]
        await wait_until(lambda: len(rec.done) == 7)
        tg.cancel_scope.cancel()
    assert calls(engine)[3:] == [("batch", [u.text for u in slow], ["a"] * 4)]
    assert [d[0] for d in rec.done] == [u.id for u in fast + slow]


@pytest.mark.anyio
async def test_batched_rtfs_do_not_switch_batching_off(tmp_path):
    """The decision rests on utterances synthesized alone: a batch member's RTF is its share of
    a shared pass, and counting it would end batching while the backlog is still there."""
    speaker, queue, engine, rec, events, spoken = await make(tmp_path)
    speaker.batch_min_rtf = 0.5
    speaker.solo_rtfs.extend([0.8] * 20)
    speaker.rtfs.extend([0.01] * 200)  # what batches report
    first = [say(queue, f"first {i}") for i in range(4)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(speaker.run)
        await wait_until(lambda: len(rec.done) == 4)
        second = [say(queue, f"second {i}") for i in range(4)]
        await wait_until(lambda: len(rec.done) == 8)
        tg.cancel_scope.cancel()
    assert [c[0] for c in calls(engine)] == ["batch", "batch"]
    assert list(speaker.solo_rtfs) == [0.8] * 20  # batch members never enter the solo window
    assert [d[0] for d in rec.done] == [u.id for u in first + second]
