"""Volume, speech rate and default voice changed live, through the real daemon: what the file
sink wrote changes from the next utterance, `status` shows it, and a restart keeps it."""

from __future__ import annotations

import json
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from daemon_process import DaemonProcess, spoken_log
from ishowttsd.live_settings import LiveFile, LiveSettings, apply_gain

CONFIG = """
[daemon]
state_dir = "state"

[engine]
default = "espeak"
default_voice = "en"

[[sinks]]
type = "file"
directory = "out"
"""

TEXT = "The quick brown fox jumps over the lazy dog"


def pcm(path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int32), w.getframerate()


def say(d: DaemonProcess, text: str = TEXT, **params) -> dict:
    """Say `text`, wait until the file sink logged it, return its spoken.jsonl entry."""
    out = d.tmp / "out"
    before = len(spoken_log(out))
    d.request("say", {"text": text, **params})
    d.wait_for(lambda: len(spoken_log(out)) > before, what=f"{text!r} to be spoken")
    return spoken_log(out)[-1]


def peak(x: np.ndarray) -> float:
    return float(np.abs(x).max())


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def samples_of(d: DaemonProcess, entry: dict) -> np.ndarray:
    return pcm(d.tmp / "out" / entry["file"])[0]


def test_volume_rate_and_default_voice_live_and_across_a_restart(tmp_path):
    with DaemonProcess(tmp_path, CONFIG) as d:
        st = d.request("status")["sound"]
        assert st["master"] == 100 and st["rate"] == 1.0
        assert st["sinks"] == {"file": 100, "browser": 100, "history": 100}  # every sink, the web's too
        assert st["default_voice"] == "en" and st["default_voice_chosen"] is None
        loud = samples_of(d, say(d, voice="en"))
        assert np.abs(loud).max() > 3000, "espeak should be audible"

        # master 50: the same (deterministic) speech at half the amplitude, sample for sample
        r = d.ctl("volume", "50")
        assert "master 50%" in r.stdout
        half = samples_of(d, say(d, voice="en"))
        assert abs(len(half) - len(loud)) < len(loud) * 0.01  # espeak's length wobbles by a few samples
        assert peak(half) / peak(loud) == pytest.approx(0.5, abs=0.02)  # measured 0.494 (the waveform wobbles too)
        assert rms(half) / rms(loud) == pytest.approx(0.5, abs=0.01)

        # a sink's own volume multiplies the master: 50% x 0% is silence
        d.ctl("volume", "file", "0")
        assert np.abs(samples_of(d, say(d, voice="en"))).max() == 0
        assert "volume" not in {c["check"] for c in d.request("health")["checks"]}  # an archive muted on purpose
        # 150% (master) x 100% amplifies and clips the loudest peaks, never wraps around
        d.ctl("volume", "file", "100%")
        d.ctl("volume", "master", "150")
        amp = samples_of(d, say(d, voice="en"))
        if peak(loud) * 1.5 > 32767 * 1.05:  # clipped at full scale, never wrapped around
            assert peak(amp) >= 32766 and amp.min() >= -32767
        else:
            assert peak(amp) / peak(loud) == pytest.approx(1.5, abs=0.05)
        assert 1.3 < rms(amp) / rms(loud) <= 1.5
        d.ctl("volume", "0")  # a stream muted live and forgotten is silent but looks healthy: health says so
        check = {c["check"]: c for c in d.request("health")["checks"]}["volume"]
        assert check["level"] == "warn" and "master volume is 0" in check["reason"] and "volume 100" in check["fix"]
        d.ctl("volume", "100")
        assert "volume" not in {c["check"] for c in d.request("health")["checks"]}

        # rate 2.0: the same text takes far less time; 0.5 far more
        normal = say(d, voice="en")["audio_s"]
        d.ctl("rate", "2")
        fast = say(d, voice="en")["audio_s"]
        d.ctl("rate", "0.5")
        slow = say(d, voice="en")["audio_s"]
        assert fast < normal * 0.7 and slow > normal * 1.5, (normal, fast, slow)
        d.ctl("rate", "1.25x")

        # the default voice: the next message that names none speaks with it
        assert say(d, "first")["voice"] == "en"
        r = d.ctl("voice-default", "zh")
        assert "default voice zh" in r.stdout
        d.request("inject", {"platform": "bilibili", "user": "小明", "text": "主播晚上好"})
        d.wait_for(lambda: spoken_log(d.tmp / "out")[-1]["user"] == "小明", what="the chat message")
        assert spoken_log(d.tmp / "out")[-1]["voice"] == "zh"
        assert say(d, "named", voice="en")["voice"] == "en"  # a voice named outright still wins

        # bad input: clear errors, the daemon keeps serving
        for args, code in ((["volume", "151"], "invalid_params"), (["volume", "nosuch", "50"], "not_found"),
                           (["rate", "3"], "invalid_params"), (["voice-default", "nosuch"], "unknown_voice")):  # fmt: skip
            r = d.ctl(*args, check=False)
            assert r.returncode == 1 and code in r.stderr, (args, r.stderr)
        r = d.ctl("voice-default", "nosuch", check=False)
        assert "'en'" in r.stderr and "'zh'" in r.stderr  # the advice lists the known voices
        r = d.ctl("volume", "loud", check=False)
        assert r.returncode == 1 and "whole number" in r.stderr
        r = d.ctl("rate", "fast", check=False)
        assert r.returncode == 1 and "speed multiplier 0.5-2.0" in r.stderr

        human = d.ctl("status").stdout
        assert "sound    volume master 100%  file 100%  browser 100%  history 100%  rate 1.25x  default voice zh" in human
        events = {e["event"] for e in d.request("events")["events"]}
        assert {"volume.changed", "rate.changed", "voice.default_changed"} <= events
        saved = json.loads((tmp_path / "state" / "live.json").read_text())
        assert saved["rate"] == 1.25 and saved["default_voice"] == "zh" and saved["master"] == 100

        # changes in a burst (sliders on several pages): the file ends with the state the daemon has
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda v: d.request("volume", {"percent": v}), range(60, 100, 2)))
        kept = json.loads((tmp_path / "state" / "live.json").read_text())["master"]
        assert kept == d.request("sound")["master"]
        d.ctl("volume", "100")

    # a restart keeps them all
    with DaemonProcess(tmp_path, CONFIG) as d2:
        st = d2.request("status")["sound"]
        assert st["rate"] == 1.25 and st["default_voice"] == "zh" and st["master"] == 100
        d2.ctl("volume", "file", "50")
        shown = d2.ctl("volume").stdout  # no value: show
        assert "master 100%  file 50%" in shown and "rate 1.25x" in shown and "default voice zh" in shown
    with DaemonProcess(tmp_path, CONFIG) as d3:
        assert d3.request("sound")["sinks"]["file"] == 50
        metrics = d3.request("metrics")["text"]  # Prometheus sees the live sound too
        assert 'ishowtts_volume_percent{sink="master"} 100' in metrics and 'ishowtts_volume_percent{sink="file"} 50' in metrics
        assert "ishowtts_speech_rate 1.25" in metrics
        entry = say(d3, "after the restart")
        assert entry["voice"] == "zh"
        assert peak(samples_of(d3, entry)) < 32767 * 0.5 + 1
        assert "default voice en (config)" in d3.ctl("default-voice", "--config").stdout
        assert json.loads((tmp_path / "state" / "live.json").read_text())["default_voice"] is None


def test_a_corrupt_file_is_moved_aside_and_defaults_are_used(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "live.json").write_text('{"master": 80, "rate": 9}')
    with DaemonProcess(tmp_path, CONFIG) as d:
        st = d.request("sound")
        assert st["master"] == 100 and st["rate"] == 1.0 and "moved aside" in st["problem"]
        aside = list(state.glob("live.json.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_text() == '{"master": 80, "rate": 9}'
        assert "live.json" in d.log() and "moved aside" in d.log()
        d.ctl("volume", "70")  # a change writes a good file again
        assert json.loads((state / "live.json").read_text())["master"] == 70
        assert d.request("sound")["problem"] is None


def test_a_chosen_default_voice_that_is_gone_falls_back(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "live.json").write_text(LiveFile(default_voice="gone").model_dump_json())
    with DaemonProcess(tmp_path, CONFIG + '\n[moderation]\ndefault_voice = "en"\n') as d:
        st = d.request("sound")
        assert st["default_voice"] == "en" and st["default_voice_chosen"] == "gone"
        assert any("'gone' is not available" in n for n in st["notes"])
        assert say(d, "who speaks")["voice"] == "en"
        assert "voice.fallback" in d.log() and "chosen live" in d.log()


def test_a_default_voice_chosen_live_comes_before_the_configs_for_chat(tmp_path):
    with DaemonProcess(tmp_path, CONFIG + '\n[moderation]\ndefault_voice = "en"\n') as d:
        out = tmp_path / "out"

        def chat(text: str) -> dict:
            before = len(spoken_log(out))
            d.request("inject", {"platform": "twitch", "user": "viewer", "text": text})
            d.wait_for(lambda: len(spoken_log(out)) > before, what=f"{text!r} to be spoken")
            return spoken_log(out)[-1]

        assert chat("hello there")["voice"] == "en"  # [moderation] default_voice
        d.ctl("voice-default", "zh")
        assert chat("hello again")["voice"] == "zh"  # the streamer's live choice, also for chat
        d.ctl("voice-default", "--config")
        assert chat("hello once more")["voice"] == "en"


# -- the parts -----------------------------------------------------------------------------------


def test_apply_gain_is_clipping_safe():
    x = np.array([0.0, 0.5, -0.5, 0.9, -1.0], dtype=np.float32)
    assert apply_gain(x, 1.0) is x
    assert not apply_gain(x, 0.0).any()
    np.testing.assert_allclose(apply_gain(x, 0.5), x / 2)
    loud = apply_gain(x, 1.5)
    assert loud.dtype == np.float32 and loud.max() == 1.0 and loud.min() == -1.0
    assert x[3] == np.float32(0.9)  # the input is untouched


def test_settings_file_is_written_atomically_and_read_back(tmp_path):
    live = LiveSettings(tmp_path / "sub" / "live.json")
    live.load()
    assert live.gain("alsa") == 1.0
    assert live.set_volume(None, 50) == 100
    assert live.set_volume("alsa", 120) == 100
    assert live.gain("alsa") == pytest.approx(0.6) and live.gain("file") == 0.5
    assert live.save()
    assert not list((tmp_path / "sub").glob("*.tmp"))
    again = LiveSettings(tmp_path / "sub" / "live.json")
    again.load()
    assert again.data == live.data and again.problem is None
    live.set_volume("alsa", 100)  # back to 100: nothing to keep for it
    assert live.data.sinks == {}


def test_an_unwritable_state_folder_keeps_the_change_for_this_run(tmp_path):
    (tmp_path / "file").write_text("")
    live = LiveSettings(tmp_path / "file" / "live.json")  # its folder is a file
    live.set_rate(1.5)
    assert not live.save() and "cannot write" in live.problem and live.rate == 1.5
