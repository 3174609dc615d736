"""File sink: retention by count, age and size, log rotation, and a full disk that is not fatal.

The full-disk tests use a real tiny tmpfs when this process may mount one (root in a
container), and /dev/full (a real ENOSPC from the kernel) otherwise."""

from __future__ import annotations

import json
import math
import os
import subprocess
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

filesink = load_builtin("sinks/file")
RATE = 22050


def make_sink(directory: Path, **kw):
    settings = filesink.FileSettings(type="file", directory=str(directory), **kw)
    return filesink.FileSink(settings, SinkContext(EventBus(), Config(), directory))


async def play(sink, seconds: float = 0.5, text: str = "hello", played: bool | None = None) -> Utterance:
    """Play one utterance on the sink; `played`: assert it was (True) or was not (False) delivered."""
    send, recv = anyio.create_memory_object_stream[AudioChunk](math.inf)
    x = (0.3 * np.sin(np.arange(int(seconds * RATE)) / 5)).astype(np.float32)
    for i in range(0, len(x), 2205):
        send.send_nowait(AudioChunk(x[i : i + 2205], RATE))
    send.close()
    utt = Utterance(text)
    try:
        await sink.play(Playback(utt, RATE, SynthesisStats(sample_rate=RATE), _stream=recv))
        delivered = True
    except NotPlayed:
        delivered = False
    finally:
        recv.close()
    assert played is None or played == delivered
    return utt


def wavs(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.wav"))


@pytest.mark.anyio
async def test_count_retention_keeps_the_newest(tmp_path):
    sink = make_sink(tmp_path, max_files=3)
    await sink.start()
    ids = [(await play(sink, 0.1)).id for _ in range(5)]
    names = wavs(tmp_path)
    assert len(names) == 3
    assert [int(n.split("_")[1]) for n in names] == ids[-3:]
    assert sink.counters["removed"] == 2
    assert len((tmp_path / "spoken.jsonl").read_text().splitlines()) == 5


@pytest.mark.anyio
async def test_age_retention_removes_only_our_old_files(tmp_path):
    old = time.time() - 3 * 3600
    ours = tmp_path / "20260101-120000_000001_viewer.wav"
    foreign = tmp_path / "my-intro-music.wav"
    for p in (ours, foreign):
        p.write_bytes(b"RIFF")
        os.utime(p, (old, old))
    sink = make_sink(tmp_path, max_age_hours=1)
    await sink.start()  # prunes what a previous run left
    assert not ours.exists()
    assert foreign.exists()
    await play(sink, 0.1)
    assert len(wavs(tmp_path)) == 2


@pytest.mark.anyio
async def test_size_retention_bounds_the_folder(tmp_path):
    sink = make_sink(tmp_path, max_total_mb=0.1)  # each 0.5 s WAV is about 22 kB
    await sink.start()
    for _ in range(10):
        await play(sink, 0.5)
    total = sum(p.stat().st_size for p in tmp_path.glob("*.wav"))
    assert total <= 100_000
    assert len(wavs(tmp_path)) == 4
    assert sink.counters["files"] == 10


@pytest.mark.anyio
async def test_log_rotates_and_keeps_only_log_keep(tmp_path):
    sink = make_sink(tmp_path, log_max_mb=0.002, log_keep=2)  # about 4 lines per file
    await sink.start()
    for i in range(20):
        await play(sink, 0.01, text=f"line {i}")
    logs = sorted(p.name for p in tmp_path.glob("spoken.jsonl*"))
    assert logs == ["spoken.jsonl", "spoken.jsonl.1", "spoken.jsonl.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.glob("spoken.jsonl*"))
    assert sink.counters["log_rotations"] >= 4
    newest = (tmp_path / "spoken.jsonl").read_text().splitlines()
    assert '"said": "line 19"' in newest[-1]


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 256 kB filesystem, when this process may mount one."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the /dev/full test covers ENOSPC")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.anyio
async def test_full_disk_is_reported_not_fatal_and_recovers(tiny_fs):
    sink = make_sink(tiny_fs, max_total_mb=None, min_free_mb=0)
    await sink.start()
    for _ in range(8):  # 8 x 44 kB does not fit in 256 kB
        await play(sink, 1.0)
    assert sink.state == "disk_full"
    await play(sink, 1.0, played=False)  # a write that failed is not a delivery
    assert "no space left" in sink.detail and "max_total_mb" in sink.detail
    assert "No space left on device" in (sink.last_error or "")
    assert sink.counters["disk_full"] >= 1
    assert not list(tiny_fs.glob("*.part"))  # no half-written file left behind
    for p in tiny_fs.glob("*.wav"):
        with wave.open(str(p)) as w:  # every WAV that exists is whole
            assert w.getnframes() == RATE
    for p in tiny_fs.glob("*.wav"):
        p.unlink()
    await play(sink, 1.0, played=True)
    assert sink.state == "ok"


@pytest.mark.anyio
async def test_min_free_space_removes_old_wavs_first(tiny_fs):
    sink = make_sink(tiny_fs, max_total_mb=None, min_free_mb=0.1)
    await sink.start()
    for _ in range(10):
        await play(sink, 1.0)
    assert sink.state == "ok", sink.detail
    assert sink.counters["disk_full"] == 0
    assert sink.counters["removed"] >= 5
    assert sink.counters["files"] == 10


@pytest.mark.anyio
async def test_enospc_from_the_kernel_is_reported(tmp_path, monkeypatch):
    # /dev/full fails every write with ENOSPC: the real error, on any machine
    monkeypatch.setattr(filesink, "_open_wav", lambda path, rate: _wav_on_dev_full(rate))
    sink = make_sink(tmp_path)
    await sink.start()
    await play(sink, 1.0, played=False)
    assert sink.state == "disk_full"
    assert sink.counters["disk_full"] == 1
    assert sink.counters["files"] == 0


def _wav_on_dev_full(rate: int) -> wave.Wave_write:
    w = wave.open("/dev/full", "wb")
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    return w


def test_example_sinks_config_validates_against_every_sink():
    """config/example-sinks.toml documents real keys: each table passes its plugin's Settings."""
    from ishowttsd.config import load_config, validate_table

    path = Path(__file__).resolve().parent.parent / "config" / "example-sinks.toml"
    cfg = load_config(path)
    settings = {"alsa": load_builtin("sinks/alsa").AlsaSettings, "file": filesink.FileSettings,
                "obs": load_builtin("sinks/obs").ObsSettings}  # fmt: skip
    assert sorted(t.type for t in cfg.sinks) == ["alsa", "file", "obs"]
    for i, t in enumerate(cfg.sinks):
        validate_table(settings[t.type], t.model_dump(exclude_unset=True), f"sinks[{i}]", path)


@pytest.mark.anyio
async def test_an_utterance_written_whole_is_not_written_again_even_after_a_restart(tmp_path):
    # the daemon may die after the sink wrote an utterance and before it knew: played again
    # after the restart, the sink recognises its key and does not write it twice
    sink = make_sink(tmp_path)
    await sink.start()
    utt = await play(sink, 0.3, played=True)
    again = make_sink(tmp_path)
    await again.start()
    send, recv = anyio.create_memory_object_stream[AudioChunk](math.inf)
    send.close()
    same = Utterance("hello", key=utt.key)
    await again.play(Playback(same, RATE, SynthesisStats(sample_rate=RATE), _stream=recv))
    recv.close()
    assert again.counters["already_written"] == 1 and len(wavs(tmp_path)) == 1
    lines = (tmp_path / "spoken.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["key"] == utt.key
