"""Fault isolation, end to end: the real ishowttsd with a sink that raises and one that hangs,
loaded from a plugin folder named in `[daemon] plugin_dirs`, next to the file sink and the
ALSA sink (recording through alsa-lib's file plugin). Every utterance must still reach the
healthy sinks, whole, and the hanging sink may cost the queue its grace time once, not on
every utterance."""

from __future__ import annotations

import time
import wave

from daemon_process import DaemonProcess, spoken_log

BAD_SINKS = '''
import anyio
from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import Sink


class Hangs(Sink):
    """Never returns from play(), like a sink stuck on a dead network peer."""

    type = "test_hangs"

    async def play(self, pb):
        await anyio.sleep_forever()


class Raises(Sink):
    type = "test_raises"

    async def play(self, pb):
        async for _ in pb.chunks():
            raise RuntimeError("this sink is broken on purpose")


@hookimpl
def ishowtts_register_sinks(register):
    register(Hangs)
    register(Raises)
'''

TEXTS = ["first line", "second line", "third line", "fourth line"]


def test_a_raising_and_a_hanging_sink_do_not_stall_the_others(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o755)
    (plugins / "bad_sinks.py").write_text(BAD_SINKS)
    (plugins / "bad_sinks.py").chmod(0o644)
    rec = tmp_path / "alsa.wav"
    asound = tmp_path / "asound.conf"
    asound.write_text(
        "</usr/share/alsa/alsa.conf>\n"
        f'pcm.rec {{ type file slave.pcm "null" file "{rec}" format "wav" }}\n'
    )
    config = f"""
[daemon]
plugin_dirs = ["{plugins}"]
state_dir = "{tmp_path / 'state'}"

[engine]
default = "espeak"

[[sinks]]
type = "test_hangs"

[[sinks]]
type = "test_raises"

[[sinks]]
type = "alsa"
device = "rec"

[[sinks]]
type = "file"
directory = "{tmp_path / 'out'}"
"""
    with DaemonProcess(tmp_path, config, env={"ALSA_CONFIG_PATH": str(asound)}) as d:
        t0 = time.monotonic()
        for text in TEXTS:
            d.request("say", {"text": text})
        d.wait_for(lambda: len(spoken_log(tmp_path / "out")) == len(TEXTS), timeout=60, what="every WAV in the file sink")
        d.wait_for(lambda: d.request("status")["counts"]["spoken"] == len(TEXTS), timeout=30, what="all spoken")
        took = time.monotonic() - t0
        status = d.request("status")
        health = d.request("health")
    sinks = {s["name"]: s for s in status["sinks"]}
    log = spoken_log(tmp_path / "out")
    assert [e["said"] for e in log] == TEXTS
    audio_s = sum(e["audio_s"] for e in log)
    # the hanging sink is given the utterance's length plus the speaker's slack (5 s) once;
    # after that it is not waited for
    assert took < audio_s + 5 + 3, (took, audio_s)
    print(f"4 utterances, {audio_s:.2f} s of audio, all spoken after {took:.2f} s")

    assert sinks["test_raises"]["state"] == "error"
    assert "broken on purpose" in sinks["test_raises"]["last_error"]
    assert sinks["test_raises"]["counters"]["errors"] == len(TEXTS)
    assert sinks["test_hangs"]["state"] == "stalled"
    assert sinks["test_hangs"]["counters"]["timeouts"] >= 1
    assert sinks["file"]["counters"]["files"] == len(TEXTS)
    assert sinks["alsa"]["state"] == "ok" and sinks["alsa"]["counters"]["played"] == len(TEXTS)
    checks = {c["check"]: c["level"] for c in health["checks"]}
    assert checks["sink:test_raises"] == "warn" and checks["sink:file"] == "ok"

    # the sound card got every utterance whole, back to back: the same frames as the files
    with wave.open(str(rec)) as w:
        played = w.getnframes()
        rate = w.getframerate()
    frames = 0
    for e in log:
        with wave.open(str(tmp_path / "out" / e["file"])) as w:
            frames += w.getnframes()
            assert w.getframerate() == rate
    assert played == frames
