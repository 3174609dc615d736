"""The control room's parts on their own: channels, speech for callers behind paid chat, the
history sink's bounds, uploaded voices' ids, sources stopped, started and added over HTTP."""

from __future__ import annotations

import time

import anyio
import httpx
import numpy as np
import pytest
from fakes import twitch as tf
from fakes.twitch import FakeTwitch
from web_daemon import WebDaemon

from ishowttsd.channels import Channel
from ishowttsd.config import Config, WebConfig
from ishowttsd.direct import DirectRefused, DirectSynthesis
from ishowttsd.engines.base import Engine, Voice
from ishowttsd.events import EventBus
from ishowttsd.messages import AudioChunk, Priority, Utterance
from ishowttsd.queue import SpeechQueue
from ishowttsd.sink import Playback, SinkContext, SynthesisStats
from ishowttsd.voicestore import VoiceStore, check_voice_id

# -- channels --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_channel_drops_a_reader_that_falls_behind_and_never_waits():
    ch = Channel("audio.test")
    fast, slow = ch.subscribe(max_bytes=10_000), ch.subscribe(max_bytes=10_000)
    got = []
    for i in range(30):
        ch.publish(bytes(1000))
        got.append(await fast.__anext__())  # the fast reader keeps up
    assert slow.dropped and slow.closed and ch.subscribers == 1 and ch.dropped == 1
    assert len(got) == 30 and fast.backlog == 0
    with pytest.raises(StopAsyncIteration):
        await slow.__anext__()
    ch.publish({"type": "end"})
    assert await fast.__anext__() == {"type": "end"}
    fast.close()
    assert ch.subscribers == 0 and ch.publish(b"x") == 0


# -- speech for callers ----------------------------------------------------------------------------


class _Tone(Engine):
    """A stand-in engine: 10 chunks of 0.1 s each per text, counted."""

    name = "tone"

    def __init__(self) -> None:
        self.sample_rate = 16000
        self.chunks = 0

    def synthesize(self, text, voice, cancel):
        for _ in range(10):
            if cancel.is_set():
                return
            self.chunks += 1
            time.sleep(0.005)
            yield AudioChunk(np.full(1600, 0.1, np.float32), self.sample_rate)


class _Host:
    def __init__(self) -> None:
        self.engine = _Tone()
        self.limiter = anyio.CapacityLimiter(1)

    def resolve(self, voice_id, options=None):
        return self.engine, Voice(id="v", engine="tone")


class _Speaker:
    def __init__(self) -> None:
        self.prepared: list[dict] = []

    def status(self):
        return {"prepared": self.prepared}


@pytest.mark.anyio
async def test_speech_for_callers_waits_while_paid_chat_is_queued():
    events = EventBus()
    queue, host, speaker = SpeechQueue(50, events), _Host(), _Speaker()
    direct = DirectSynthesis(host, queue, speaker, WebConfig())
    paid = Utterance(text="a super chat", priority=Priority.PAID)
    queue.put(paid)
    result = {}

    async def ask():
        result["speech"] = await direct.synthesize("for a caller", None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        await anyio.sleep(0.3)
        assert host.engine.chunks == 0  # nothing runs while paid speech waits
        queue.remove_where(lambda u: u is paid, "removed")
        speaker.prepared = [{"priority": "membership"}]  # ...or is being prepared
        await anyio.sleep(0.2)
        assert host.engine.chunks == 0
        speaker.prepared = []
    speech = result["speech"]
    assert len(speech.samples) == 16000 and speech.waited_s >= 0.4
    # lower classes do not hold it back
    queue.put(Utterance(text="chat", priority=Priority.NORMAL))
    assert len((await direct.synthesize("again", None)).samples) == 16000


@pytest.mark.anyio
async def test_speech_for_callers_is_bounded_by_size_rate_and_concurrency():
    now = [0.0]
    direct = DirectSynthesis(_Host(), SpeechQueue(50, EventBus()), _Speaker(),
                             WebConfig(speech_per_minute=2, speech_max_chars=10), clock=lambda: now[0])  # fmt: skip
    with pytest.raises(DirectRefused) as e:
        await direct.synthesize("x" * 11, None)
    assert e.value.code == "too_large"
    await direct.synthesize("one", None)
    await direct.synthesize("two", None)
    with pytest.raises(DirectRefused) as e:
        await direct.synthesize("three", None)
    assert e.value.code == "rate_limited" and e.value.retry_after == pytest.approx(30)
    now[0] += 30
    await direct.synthesize("three", None)
    direct.in_flight = 1  # one is running; the bound is one
    with pytest.raises(DirectRefused) as e:
        await direct.synthesize("four", None)
    assert e.value.code == "busy"


# -- history ---------------------------------------------------------------------------------------


def _playback(text: str, seconds: float, rate: int = 16000):
    send, recv = anyio.create_memory_object_stream(100)
    stats = SynthesisStats(engine="tone", voice="v", sample_rate=rate, synth_s=0.1, audio_s=seconds)
    utt = Utterance(text=text, priority=Priority.NORMAL)
    for _ in range(int(seconds * 10)):
        send.send_nowait(AudioChunk(np.full(rate // 10, 0.2, np.float32), rate))
    send.close()
    return Playback(utterance=utt, sample_rate=rate, stats=stats, _stream=recv)


async def _play(sink, pb) -> None:
    with pb._stream:
        await sink.play(pb)


@pytest.mark.anyio
async def test_history_keeps_the_last_utterances_within_its_budget(tmp_path):
    from ishowttsd.builtin_plugins.sinks.history import HistorySink, HistorySettings

    sink = HistorySink(HistorySettings(type="history", keep=3, max_mb=0.1), SinkContext(EventBus(), Config(), tmp_path))
    for i in range(5):
        await _play(sink, _playback(f"line {i}", 1.0))  # 32 KB of audio each
    assert [e["text"] for e in sink.entries()] == ["line 4", "line 3", "line 2"]
    pcm, rate = sink.audio(sink.entries()[0]["id"])
    assert rate == 16000 and len(pcm) == 32000
    await _play(sink, _playback("too long to keep its audio", 4.0))  # 128 KB > the 100 KB budget
    newest = sink.entries()[0]
    assert newest["text"].startswith("too long") and not newest["has_audio"] and sink.audio(newest["id"]) is None
    assert sink.status()["audio_mb"] <= 0.1


# -- uploaded voices -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../etc/passwd", "..", ".hidden", "a/b", "a\\b", "", "x" * 65, "_x", "con", "a b", "a\x00b"])
def test_a_voice_id_cannot_name_a_path(bad):
    with pytest.raises(ValueError):
        check_voice_id(bad)


@pytest.mark.parametrize("good", ["streamer", "主播", "voice-2", "My_Voice"])
def test_a_voice_id_is_a_plain_name(good):
    assert check_voice_id(good) == good


def test_uploaded_voices_are_stored_whole_and_replaced_atomically(tmp_path):
    store = VoiceStore(tmp_path / "voices")
    tone = np.sin(np.arange(16000) / 10).astype(np.float32) * 0.3
    vc = store.save("主播", tone, 16000, "我的声音", "f5", "zh")
    assert vc.reference_text == "我的声音" and vc.engine == "f5" and vc.reference_audio.endswith("主播/reference.wav")
    store.save("主播", tone[:8000], 16000, "新的", "f5", "zh")
    [again] = store.entries()
    assert again.reference_text == "新的" and store.info("主播")["seconds"] == 0.5
    assert sorted(p.name for p in (tmp_path / "voices").iterdir()) == ["主播"]  # no temporary folders left
    assert store.remove("主播") and not store.has("主播") and store.entries() == []


# -- sources over HTTP -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sources_stop_start_and_add_for_this_run(tmp_path):
    fake = FakeTwitch()
    await fake.start()
    try:
        config = f'[[sources]]\ntype = "twitch"\nname = "tw"\nchannel = "{fake.channel}"\nurl = "{fake.url}"\n'
        d = await anyio.to_thread.run_sync(lambda: WebDaemon(tmp_path, config).start())
        try:
            async with httpx.AsyncClient(base_url=d.url, headers={"Authorization": f"Bearer {d.token}"}, trust_env=False) as c:

                async def state(name: str) -> str:
                    st = (await c.get("/api/status")).json()
                    return next(s["state"] for s in st["sources"] if s["name"] == name)

                async def wait_state(name: str, want: str) -> None:
                    with anyio.fail_after(20):
                        while await state(name) != want:
                            await anyio.sleep(0.05)

                await fake.wait_joined()
                await wait_state("tw", "connected")
                r = await c.post("/api/sources.stop", json={"name": "tw"})
                assert r.status_code == 200 and r.json()["state"] == "stopped"
                with anyio.fail_after(10):
                    while fake.conns:  # the connection is really closed
                        await fake.send("PING :tmi.twitch.tv")
                        await anyio.sleep(0.1)
                assert (await c.post("/api/sources.stop", json={"name": "tw"})).status_code == 503
                joins = len(fake.joins)
                assert (await c.post("/api/sources.start", json={"name": "tw"})).status_code == 200
                await wait_state("tw", "connected")
                assert len(fake.joins) == joins + 1
                # a channel added for this run speaks like a configured one
                fake2 = FakeTwitch(channel="other")
                await fake2.start()
                try:
                    r = await c.post("/api/sources.add", json={"type": "twitch", "settings": {"name": "guest", "channel": "other", "url": fake2.url}})
                    assert r.status_code == 200, r.text
                    await fake2.wait_joined()
                    await wait_state("guest", "connected")
                    await fake2.send(tf.privmsg("other", "visitor", "hello from the added channel"))
                    with anyio.fail_after(30):
                        while not any(e["text"].endswith("hello from the added channel") for e in (await c.get("/api/history")).json()["history"]):
                            await anyio.sleep(0.1)
                    dup = await c.post("/api/sources.add", json={"type": "twitch", "settings": {"name": "guest", "channel": "x", "url": fake2.url}})
                    assert dup.status_code == 503 and "exists" in dup.json()["error"]["message"]
                    bad = await c.post("/api/sources.add", json={"type": "twitch", "settings": {"channel": "no spaces allowed"}})
                    assert bad.status_code == 400 and "channel" in bad.json()["error"]["message"]
                finally:
                    await fake2.stop()
        finally:
            await anyio.to_thread.run_sync(d.stop)
    finally:
        await fake.stop()


def test_the_overlay_sink_and_history_come_with_the_web_and_can_be_switched_off():
    from ishowttsd.daemon import Daemon

    on = Daemon(Config(), "/tmp/unused.sock")
    on.build()
    assert {s.type for s in on.sinks} == {"browser", "history"} and on.api.history is not None
    from ishowttsd.config import parse_config

    off = Daemon(parse_config({"web": {"overlay_audio": False, "history": 0}}), "/tmp/unused.sock")
    off.build()
    assert off.sinks == [] and off.api.history is None
    mine = Daemon(parse_config({"sinks": [{"type": "history", "keep": 7}]}), "/tmp/unused.sock")
    mine.build()
    assert [s.settings.keep for s in mine.sinks if s.type == "history"] == [7]
