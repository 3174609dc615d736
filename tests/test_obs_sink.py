"""The OBS sink against a fake obs-websocket v5 server on loopback (tests/fakes/obs.py)."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
import wave
from pathlib import Path

import anyio
import numpy as np
import pytest
from fakes.obs import FakeOBS

from ishowttsd.config import Config
from ishowttsd.events import EventBus
from ishowttsd.messages import AudioChunk, Kind, Message, User, Utterance
from ishowttsd.plugins import load_builtin
from ishowttsd.sink import NotPlayed, Playback, SinkContext, SynthesisStats

obs = load_builtin("sinks/obs")
RATE = 22050
PASSWORD = "correct horse battery staple"


def make_sink(tmp_path: Path, url: str, **kw):
    settings = obs.ObsSettings(type="obs", url=url, retry_s=0.05, retry_max_s=0.1, timeout_s=1.0, **kw)
    events = EventBus()
    return obs.ObsSink(settings, SinkContext(events, Config(), tmp_path)), events


def utterance(text="hello there", user="alice") -> Utterance:
    m = Message(platform="twitch", kind=Kind.DANMAKU, text=text, user=User(name=user)) if user else None
    return Utterance(text, message=m)


async def play(sink, seconds: float = 0.3, utt: Utterance | None = None, cut_after: float | None = None) -> Playback:
    send, recv = anyio.create_memory_object_stream[AudioChunk](math.inf)
    x = (0.3 * np.sin(np.arange(int(seconds * RATE)) / 5)).astype(np.float32)
    stats = SynthesisStats(sample_rate=RATE)
    for i in range(0, len(x), 2205):  # the speaker counts audio_s as it streams
        c = AudioChunk(x[i : i + 2205], RATE)
        stats.audio_s += c.duration
        send.send_nowait(c)
    send.close()
    pb = Playback(utt or utterance(), RATE, stats, _stream=recv)
    try:
        with anyio.CancelScope() as scope:
            if cut_after is not None:
                async def cut():
                    await anyio.sleep(cut_after)
                    stats.cut = True  # as the speaker does on skip
                    scope.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(cut)
                    await sink.play(pb)
            else:
                await sink.play(pb)
    except NotPlayed:
        sink.counters["missed"] += 1  # as the speaker counts it: this sink did not deliver the utterance
    finally:
        recv.close()
    return pb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.anyio
async def test_text_shows_while_it_plays_and_is_cleared_after(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OBS_TEST_PASSWORD", PASSWORD)
    async with FakeOBS(password=PASSWORD) as server:
        sink, events = make_sink(tmp_path, server.url, password_env="OBS_TEST_PASSWORD")
        seen = []
        sub = events.subscribe()
        await sink.start()
        assert sink.state == "ok" and server.identified == 1
        t0 = time.monotonic()
        await play(sink, 0.6)
        took = time.monotonic() - t0
        await play(sink, 0.1, utt=utterance("said by the streamer", user=None))
        await sink.close()
        with sub:
            while True:
                with anyio.move_on_after(0.01) as scope:
                    seen.append(await sub.receive())
                if scope.cancelled_caught:
                    break
    texts = server.texts()
    assert [t for _, t in texts] == ["alice: hello there", "", "said by the streamer", ""]
    shown_for = texts[1][0] - texts[0][0]
    assert 0.55 <= shown_for <= 0.8, shown_for  # as long as the sound
    assert 0.55 <= took <= 0.9
    assert all(r.data["overlay"] is True for r in server.of_type("SetInputSettings"))
    # the password never shows up anywhere a user or a log reader could see it
    everything = caplog.text + json.dumps(sink.status()) + json.dumps(seen, default=str)
    assert PASSWORD not in everything


@pytest.mark.anyio
async def test_password_from_a_file_and_the_wrong_one(tmp_path):
    async with FakeOBS(password=PASSWORD) as server:
        pw = tmp_path / "obs-password"
        pw.write_text("not the password\n")
        sink, _ = make_sink(tmp_path, server.url, password_file=str(pw))
        with pytest.raises(RuntimeError, match="4009"):  # the daemon reports a sink that did not start
            await sink.start()
        assert sink.state == "auth_failed"
        assert "4009" in sink.detail and "password" in sink.detail and "retrying" in sink.detail
        assert server.auth_failures == 1
        t0 = time.monotonic()
        await play(sink, 1.0)
        assert time.monotonic() - t0 < 0.3  # sits this one out, holds nothing up
        assert sink.counters["missed"] == 1
        pw.write_text(PASSWORD + "\n")
        sink2, _ = make_sink(tmp_path, server.url, password_file=str(pw))
        await sink2.start()
        assert sink2.state == "ok"
        await sink.close()
        await sink2.close()


@pytest.mark.anyio
async def test_no_password_configured_but_obs_wants_one(tmp_path):
    async with FakeOBS(password=PASSWORD) as server:
        sink, _ = make_sink(tmp_path, server.url)
        with pytest.raises(RuntimeError):
            await sink.start()
        assert sink.state == "auth_failed" and "password_file" in sink.detail
        await sink.close()


@pytest.mark.anyio
async def test_missing_source_is_reported_by_name(tmp_path):
    async with FakeOBS(inputs={"Other": "text_ft2_source_v2"}) as server:
        sink, _ = make_sink(tmp_path, server.url, text_source="TTS Text")
        await sink.start()
        t0 = time.monotonic()
        await play(sink, 0.5)
        assert time.monotonic() - t0 < 0.3
        assert sink.state == "missing_source"
        assert "'TTS Text'" in sink.detail and "add it in OBS" in sink.detail
        assert "600" in sink.last_error
        server.inputs["TTS Text"] = {"kind": "text_ft2_source_v2", "settings": {}}  # the user adds it
        await play(sink, 0.1)
        assert sink.state == "ok"
        await sink.close()


@pytest.mark.anyio
async def test_obs_not_running_is_clear_and_quick(tmp_path):
    port = free_port()
    sink, _ = make_sink(tmp_path, f"ws://127.0.0.1:{port}")
    with pytest.raises(RuntimeError, match="is OBS running"):
        await sink.start()
    assert sink.state == "disconnected"
    assert "is OBS running" in sink.detail and str(port) in sink.detail
    t0 = time.monotonic()
    await play(sink, 1.0)
    await play(sink, 1.0)
    assert time.monotonic() - t0 < 0.5
    assert sink.counters["missed"] == 2
    sink.set_state("ok")  # a stale "ok" from elsewhere
    await play(sink, 0.1)
    assert sink.state == "disconnected"  # still says what is wrong
    await sink.close()


@pytest.mark.anyio
async def test_reconnects_when_obs_restarts_mid_stream(tmp_path):
    server = await FakeOBS(password=PASSWORD).start()
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    sink, _ = make_sink(tmp_path, server.url, password_file=str(pw))
    await sink.start()
    try:
        async with anyio.create_task_group() as tg:
            # OBS quits while the first utterance is on screen, and comes back
            async def restart():
                await anyio.sleep(0.15)
                await server.stop()

            tg.start_soon(restart)
            await play(sink, 0.4, utt=utterance("first"))
        assert sink.state == "disconnected"
        assert [t for _, t in server.texts()] == ["alice: first"]  # the clear could not reach it
        await server.start()  # same port, a fresh OBS
        await anyio.sleep(0.2)
        await play(sink, 0.1, utt=utterance("second"))
        assert sink.state == "ok", sink.detail
        assert server.identified == 2
        assert sink.counters["connects"] == 2
        assert [t for _, t in server.texts()][-2:] == ["alice: second", ""]
    finally:
        await sink.close()
        await server.stop()


@pytest.mark.anyio
async def test_audio_through_obs_media_source(tmp_path):
    async with FakeOBS() as server:
        sink, _ = make_sink(tmp_path, server.url, media_source="TTS Audio", media_dir=str(tmp_path / "media"), media_keep=2)
        await sink.start()
        for _ in range(3):
            await play(sink, 0.2)
        await sink.close()
    sets = [r for r in server.of_type("SetInputSettings") if r.data["inputName"] == "TTS Audio"]
    assert len(sets) == 3
    path = Path(sets[-1].data["inputSettings"]["local_file"])
    assert sets[-1].data["inputSettings"]["is_local_file"] is True
    assert path.is_absolute() and path.exists()
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getnframes() == int(0.2 * RATE)
    actions = server.of_type("TriggerMediaInputAction")
    assert [a.data["mediaAction"] for a in actions] == ["OBS_WEBSOCKET_MEDIA_INPUT_ACTION_RESTART"] * 3
    assert all(a.data["inputName"] == "TTS Audio" for a in actions)
    assert len(list((tmp_path / "media").glob("*.wav"))) == 2  # media_keep
    # order on the wire: text shown, file set, restart, then the text cleared after the sound
    kinds = [(r.request_type, r.data["inputName"]) for r in server.requests[:4]]
    assert kinds == [("SetInputSettings", "TTS Text"), ("SetInputSettings", "TTS Audio"),
                     ("TriggerMediaInputAction", "TTS Audio"), ("SetInputSettings", "TTS Text")]  # fmt: skip


@pytest.mark.anyio
async def test_skip_clears_the_text_and_stops_obs_audio_at_once(tmp_path):
    async with FakeOBS() as server:
        sink, _ = make_sink(tmp_path, server.url, media_source="TTS Audio", media_dir=str(tmp_path / "m"))
        await sink.start()
        t0 = time.monotonic()
        await play(sink, 3.0, cut_after=0.3)
        took = time.monotonic() - t0
        await sink.close()
    assert took < 0.45
    texts = server.texts()
    assert texts[-1][1] == ""
    assert texts[-1][0] - t0 < 0.35  # cleared within 50 ms of the skip
    assert [a.data["mediaAction"] for a in server.of_type("TriggerMediaInputAction")] == [
        "OBS_WEBSOCKET_MEDIA_INPUT_ACTION_RESTART", "OBS_WEBSOCKET_MEDIA_INPUT_ACTION_STOP"]  # fmt: skip



@pytest.mark.anyio
async def test_missing_text_source_does_not_silence_obs_audio(tmp_path):
    async with FakeOBS(inputs={"TTS Audio": "ffmpeg_source"}) as server:
        sink, _ = make_sink(tmp_path, server.url, text_source="TTS Text", media_source="TTS Audio",
                            media_dir=str(tmp_path / "media"))  # fmt: skip
        await sink.start()
        await play(sink, 0.2)
        assert sink.state == "missing_source" and "'TTS Text'" in sink.detail
        await sink.close()
    actions = server.of_type("TriggerMediaInputAction")
    assert [a.data["inputName"] for a in actions] == ["TTS Audio"], "the sound must still go out through OBS"


@pytest.mark.anyio
async def test_a_server_that_is_not_obs_is_reported_and_backed_off(tmp_path):
    from websockets.asyncio.server import serve

    async def not_obs(ws):
        await ws.send("this is not JSON")
        await ws.wait_closed()

    async with serve(not_obs, "127.0.0.1", 0, subprotocols=["obswebsocket.json"]) as server:
        port = server.sockets[0].getsockname()[1]
        sink, _ = make_sink(tmp_path, f"ws://127.0.0.1:{port}")
        with pytest.raises(RuntimeError, match="not an obs-websocket v5 server"):
            await sink.start()
        assert sink.state == "disconnected" and sink.counters["connect_failures"] == 1
        await play(sink, 0.1)  # inside the backoff: no new attempt, the utterance passes
        assert sink.counters["connect_failures"] == 1 and sink.counters["missed"] == 1
        await sink.close()
