"""The ALSA sink against alsa-lib itself: the `file` PCM plugin records a real WAV of what was
played (slave `null`, so no sound card is needed). An asoundrc written by each test is
selected with ALSA_CONFIG_PATH, which alsa-lib re-reads when it changes."""

from __future__ import annotations

import math
import time
import wave
from pathlib import Path

import anyio
import numpy as np
import pytest

from ishowttsd.config import Config
from ishowttsd.events import EventBus
from ishowttsd.messages import AudioChunk, Utterance
from ishowttsd.plugins import load_builtin
from ishowttsd.sink import NotPlayed, Playback, SinkContext, SynthesisStats

alsa = load_builtin("sinks/alsa")

RATE = 22050


@pytest.fixture
def asoundrc(tmp_path, monkeypatch):
    """Write an alsa config of named recording PCMs; returns (write(extra), wav path of name)."""
    conf = tmp_path / "asound.conf"

    def write(*names: str, stereo: tuple[str, ...] = ()) -> None:
        lines = ["</usr/share/alsa/alsa.conf>"]
        for n in names:
            lines.append(f'pcm.{n} {{ type file slave.pcm "null" file "{tmp_path / n}.wav" format "wav" }}')
        for n in stereo:  # a device that takes exactly two channels, as many cards do
            lines.append(f'pcm.{n} {{ type file slave.pcm "{n}_2ch" file "{tmp_path / n}.wav" format "wav" }}')
            lines.append(
                f'pcm.{n}_2ch {{ type multi slaves.a.pcm "null" slaves.a.channels 2 '
                f"bindings.0 {{ slave a channel 0 }} bindings.1 {{ slave a channel 1 }} }}"
            )
        conf.write_text("\n".join(lines) + "\n")
        # alsa-lib notices a changed file by its mtime; make sure a rewrite is seen
        t = time.time() + len(lines)
        import os

        os.utime(conf, (t, t))

    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    return write, lambda n: tmp_path / f"{n}.wav"


def make_sink(tmp_path: Path, **kw):
    events = EventBus()
    settings = alsa.AlsaSettings(type="alsa", **kw)
    return alsa.AlsaSink(settings, SinkContext(events, Config(), tmp_path))


def tone(seconds: float, freq: float = 440.0, rate: int = RATE, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


async def play(sink, samples: np.ndarray, rate: int = RATE, chunk_s: float = 0.1) -> None:
    """Play samples as an engine would deliver them: chunks, all ready at once."""
    send, recv = anyio.create_memory_object_stream[AudioChunk](math.inf)
    n = int(chunk_s * rate)
    for i in range(0, len(samples), n):
        send.send_nowait(AudioChunk(samples[i : i + n], rate))
    send.close()
    pb = Playback(Utterance("test"), rate, SynthesisStats(sample_rate=rate), _stream=recv)
    try:
        await sink.play(pb)
    finally:
        recv.close()


def read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.reshape(-1, w.getnchannels()), w.getframerate(), w.getnchannels()


def pcm16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.mark.anyio
async def test_whole_utterance_plays_in_real_time_and_is_recorded_exactly(tmp_path, asoundrc):
    write, wav = asoundrc
    write("rec")
    sink = make_sink(tmp_path, device="rec")
    await sink.start()
    x = tone(1.0)
    t0 = time.monotonic()
    await play(sink, x)
    took = time.monotonic() - t0
    assert sink.state == "ok", sink.detail
    await sink.close()
    data, rate, ch = read_wav(wav("rec"))
    assert (rate, ch) == (RATE, 1)
    assert len(data) == len(x)  # every frame, no padding, nothing lost
    assert data.tobytes() == pcm16(x)
    # paced to the sound: returns once the last frames are in the (40 ms) buffer
    buffer_s = sink._info["buffer"] / RATE if sink._info else 0.04
    assert 1.0 - buffer_s - 0.03 <= took <= 1.0 + 0.3, took


@pytest.mark.anyio
async def test_next_utterance_is_gapless_on_the_open_device(tmp_path, asoundrc):
    write, wav = asoundrc
    write("rec")
    sink = make_sink(tmp_path, device="rec")
    await sink.start()
    a, b = tone(0.5, 440), tone(0.5, 660)
    t0 = time.monotonic()
    await play(sink, a)
    await play(sink, b)
    took = time.monotonic() - t0
    assert sink.counters["xruns"] == 0
    assert sink.counters["drops"] == 0
    await sink.close()
    data, _, _ = read_wav(wav("rec"))
    assert data.tobytes() == pcm16(a) + pcm16(b)
    assert took >= 0.9


@pytest.mark.anyio
async def test_skip_stops_the_sound_within_50_ms_and_the_next_one_plays_whole(tmp_path, asoundrc):
    write, wav = asoundrc
    write("rec")
    sink = make_sink(tmp_path, device="rec")
    await sink.start()
    long, nxt = tone(3.0, 440), tone(0.4, 660)
    with anyio.move_on_after(0.6):
        t0 = time.monotonic()
        await play(sink, long)
    played_for = time.monotonic() - t0
    assert sink.counters["drops"] == 1
    await play(sink, nxt)
    await sink.close()
    data, _, _ = read_wav(wav("rec"))
    recorded = data.tobytes()
    cut_frames = len(recorded) // 2 - len(nxt)
    cut_s = cut_frames / RATE
    # what reached the device before the skip is what had played by then, give or take 50 ms
    assert abs(cut_s - played_for) <= 0.05, (cut_s, played_for)
    assert recorded[: cut_frames * 2] == pcm16(long)[: cut_frames * 2]
    assert recorded[cut_frames * 2 :] == pcm16(nxt)


@pytest.mark.anyio
async def test_pause_holds_the_sound_and_resume_continues_it(tmp_path, asoundrc):
    write, wav = asoundrc
    write("rec")
    sink = make_sink(tmp_path, device="rec")
    await sink.start()
    x = tone(0.8)
    written_at_pause = []

    async def pauser():
        await anyio.sleep(0.3)
        await sink.pause()
        frames = sink.counters["frames"]
        await anyio.sleep(0.5)
        written_at_pause.append((frames, sink.counters["frames"]))
        await sink.resume()

    t0 = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(pauser)
        await play(sink, x)
    took = time.monotonic() - t0
    await sink.close()
    before, after = written_at_pause[0]
    assert before == after  # nothing was written while paused
    assert 1.2 <= took <= 1.3 + 0.3, took
    data, _, _ = read_wav(wav("rec"))
    assert data.tobytes() == pcm16(x)


@pytest.mark.anyio
async def test_device_rate_channels_and_volume_are_converted(tmp_path, asoundrc):
    write, wav = asoundrc
    write(stereo=("st",))
    sink = make_sink(tmp_path, device="st", rate=48000, volume=0.5)
    await sink.start()
    assert sink._info["channels"] == 2 and sink._info["rate"] == 48000  # we asked for mono: the device said 2
    x = tone(0.5, 440, amp=0.8)
    await play(sink, x)
    await sink.close()
    data, rate, ch = read_wav(wav("st"))
    assert (rate, ch) == (48000, 2)
    assert abs(len(data) - 24000) <= 48  # 0.5 s at the new rate, within 1 ms
    assert np.array_equal(data[:, 0], data[:, 1])
    left = data[:, 0].astype(np.float64) / 32767
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
    peak_hz = np.argmax(spectrum) * rate / len(left)
    assert abs(peak_hz - 440) < 3
    rms = np.sqrt(np.mean(left[2400:-2400] ** 2))
    assert abs(rms - 0.8 * 0.5 / math.sqrt(2)) < 0.01


@pytest.mark.anyio
async def test_missing_device_is_reported_and_retried_without_stalling(tmp_path, asoundrc):
    write, wav = asoundrc
    write("rec")
    sink = make_sink(tmp_path, device="late", retry_s=0.2, retry_max_s=0.2)
    with pytest.raises(RuntimeError, match="late"):  # the daemon shows why it did not start
        await sink.start()
    t0 = time.monotonic()
    with pytest.raises(NotPlayed, match="aplay -L"):  # nothing was heard: the speaker must not count it as said
        await play(sink, tone(1.0))
    assert time.monotonic() - t0 < 0.5  # does not hold up the speaker
    assert sink.state == "unavailable"
    assert "late" in sink.detail and "aplay -L" in sink.detail and "retrying" in sink.detail
    sink.set_state("ok")  # a stale "ok" from elsewhere
    with pytest.raises(NotPlayed):
        await play(sink, tone(0.1))
    assert sink.state == "unavailable"  # still says what is wrong
    write("rec", "late")  # the device appears (plugged in, or the config fixed)
    await anyio.sleep(0.5)
    x = tone(0.3)
    await play(sink, x)
    assert sink.state == "ok", sink.detail
    await sink.close()
    data, _, _ = read_wav(wav("late"))
    assert data.tobytes() == pcm16(x)
    assert sink.status()["format"] == {"rate": RATE, "channels": 1, "format": "S16_LE"}
