"""Paid speech is said, or it stays owed: under a missing sound card, a full queue and SIGKILLs.

The real daemon runs as a subprocess with espeak. Sinks are the real ALSA sink (recording
through alsa-lib's file plugin), the real file sink, and drop-in plugins that play in real time
or always fail. What each sink wrote down is the witness of what was played, and how often.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon_process import DaemonProcess, end_process, spoken_log, wav_info

from ishowttsd.control import client_request

SINKS = '''
import json
import anyio
from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import NotPlayed, Sink, SinkSettings


class RecordSettings(SinkSettings):
    record: str
    speed: float = 1.0


class PacedSink(Sink):
    """Plays at `speed` times real time, like a sound card, and writes down each utterance it
    played to the end. It cannot tell a replay from a first play: only the daemon can."""

    type = "paced"
    Settings = RecordSettings
    realtime = True
    audible = True

    async def play(self, pb):
        async for chunk in pb.chunks():
            await anyio.sleep(chunk.duration / self.settings.speed)
        if not pb.stats.cut:
            m = pb.utterance.message
            with open(self.settings.record, "a") as f:
                f.write(json.dumps({"message_id": m.id if m else None, "key": pb.key}) + "\\n")


class BrokenSink(Sink):
    """A sound output that never works."""

    type = "broken"
    Settings = RecordSettings
    audible = True

    async def play(self, pb):
        async for chunk in pb.chunks():
            pass
        with open(self.settings.record, "a") as f:
            f.write("tried\\n")
        raise NotPlayed("the cable is unplugged")


@hookimpl
def ishowtts_register_sinks(register):
    register(PacedSink)
    register(BrokenSink)
'''


def superchat(i: int, text: str = "") -> dict:
    return {"platform": "bilibili", "kind": "superchat", "user": {"id": f"u{i}", "name": f"老板{i}"},
            "text": text or f"第{i}条醒目留言", "amount": 30, "currency": "CNY", "id": f"sc-{i}"}  # fmt: skip


def wait_for(cond, timeout: float = 60.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_super_chat_nobody_heard_stays_owed_until_a_sound_card_plays_it(tmp_path):
    conf = tmp_path / "asound.conf"

    def devices(*names: str) -> None:
        lines = ["</usr/share/alsa/alsa.conf>"]
        lines += [f'pcm.{n} {{ type file slave.pcm "null" file "{tmp_path / n}.wav" format "wav" }}' for n in names]
        conf.write_text("\n".join(lines) + "\n")
        t = time.time() + 10 * len(lines)  # alsa-lib notices a rewrite by its mtime
        os.utime(conf, (t, t))

    devices("other")
    config = """
[daemon]
state_dir = "state"
[engine]
warmup = false
[journal]
retry_owed_s = 1
[[sinks]]
type = "alsa"
device = "card"
retry_s = 0.2
retry_max_s = 0.5
[[sinks]]
type = "file"
directory = "out"
"""
    with DaemonProcess(tmp_path, config, env={"ALSA_CONFIG_PATH": str(conf)}) as d:
        r = d.request("inject", superchat(1, "主播加油"))
        assert r["accepted"] and r["priority"] == "paid"
        st = wait_for(lambda: (s := d.request("status"))["journal"]["waiting_for_sink"] == 1 and s, what="owed speech")
        # synthesized, written to the archive, heard by nobody: not said
        assert st["counts"]["spoken"] == 0 and st["reasons"].get("failed:not_played", 0) >= 1
        assert st["journal"]["pending"] == 1
        health = d.request("health")
        paid = next(c for c in health["checks"] if c["check"] == "paid")
        assert paid["level"] != "ok" and "owed" in paid["reason"] and "card" in paid["reason"], paid
        assert "owed" in d.ctl("status").stdout
        assert len(spoken_log(tmp_path / "out")) == 1  # the archive got it once
        devices("other", "card")  # the sound card comes back
        wait_for(lambda: d.request("status")["counts"]["spoken"] == 1, what="the owed super chat to be said")
        st = d.request("status")
        assert st["journal"]["waiting_for_sink"] == 0 and st["journal"]["pending"] == 0
        log = spoken_log(tmp_path / "out")
        assert [e["message_id"] for e in log] == ["sc-1"], "the archive already had it: not written twice"
        assert next(c for c in d.request("health")["checks"] if c["check"] == "paid")["level"] == "ok"
    seconds, peak = wav_info(tmp_path / "card.wav")  # alsa-lib's file plugin completes the WAV on close
    assert seconds > 0.5 and peak > 0.05, "the sound card played it"


def test_an_archive_that_cannot_write_does_not_count_as_said(tmp_path):
    # the only sink is a file archive whose folder cannot exist: nothing delivered, still owed
    config = '[engine]\nwarmup = false\n[[sinks]]\ntype = "file"\ndirectory = "/proc/no/such/dir"\n'
    with DaemonProcess(tmp_path, config) as d:
        d.request("inject", superchat(2))
        st = wait_for(lambda: (s := d.request("status"))["journal"]["waiting_for_sink"] == 1 and s, what="owed speech")
        assert st["counts"]["spoken"] == 0 and st["journal"]["pending"] == 1


def test_a_burst_of_paid_messages_past_the_bound_loses_none(tmp_path):
    n = 156
    config = """
[daemon]
state_dir = "state"
[engine]
warmup = false
[journal]
owed_in_memory = 30
[queue]
max_pending = 50
flood_threshold = 0
[[sinks]]
type = "file"
directory = "out"
"""
    with DaemonProcess(tmp_path, config) as d:
        d.request("pause")
        for i in range(n):
            assert d.request("inject", superchat(i))["accepted"]
        for i in range(60):  # chat beyond the bound is dropped as before
            d.request("inject", {"platform": "twitch", "user": f"c{i}", "text": f"chat line {i}", "id": f"c{i}"})
        st = d.request("status")
        assert st["reasons"].get("dropped:queue_full") == 10  # 60 chat lines, a bound of 50
        assert not any(k.startswith("dropped:") and k != "dropped:queue_full" for k in st["reasons"])
        j = st["journal"]
        # memory holds at most owed_in_memory; the rest waits in the journal, in order
        assert j["owed_in_queue"] <= 30 and j["parked"] >= n - 30 - 2, j
        d.request("clear", {"classes": ["normal"]})
        d.request("resume")
        wait_for(lambda: d.request("status")["counts"]["spoken"] >= n, timeout=240, what="every super chat")
        said = collections.Counter(e["message_id"] for e in spoken_log(tmp_path / "out") if e["kind"] == "superchat")
        assert said == {f"sc-{i}": 1 for i in range(n)}
        order = [e["message_id"] for e in spoken_log(tmp_path / "out") if e["kind"] == "superchat"]
        assert order == [f"sc-{i}" for i in range(n)], "first come, first said"
        st = d.request("status")
        assert st["journal"]["parked"] == 0 and st["journal"]["pending"] == 0


CHAOS_CONFIG = """
[daemon]
state_dir = "state"
plugin_dirs = ["plugins"]
[engine]
warmup = false
[journal]
synchronous = "normal"   # survives SIGKILL (not a power cut), and keeps the test quick
retry_owed_s = 1
owed_in_memory = 8
[queue]
flood_threshold = 0
[moderation]
max_chars = 200
[[sinks]]
type = "file"
directory = "out"
[[sinks]]
type = "paced"
record = "{root}/paced.jsonl"
speed = 3.0
[[sinks]]
type = "paced"
name = "fast"           # an archive that cannot tell a replay either: only the daemon's journal can
record = "{root}/fast.jsonl"
speed = 1000.0
audible = false
[[sinks]]
type = "broken"
record = "{root}/broken.log"
"""


def test_chaos_kills_during_a_paid_burst_play_each_once_per_sink(tmp_path):
    """SIGKILL at random points during a burst of paid speech, with fast sinks (files, and an
    archive that keeps no memory of its own), a slow one that plays in real time, and one that
    always fails: after the restarts every paid message was played to its end exactly once by
    each sink that plays, and none is owed."""
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o700)
    (plugins / "test_sinks.py").write_text(SINKS)
    (tmp_path / "d.toml").write_text(CHAOS_CONFIG.format(root=tmp_path))
    sock = tmp_path / "d.sock"
    n, rng = 24, random.Random(16)
    env = {**os.environ, "ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    kills = 0
    logs = []

    def start(run: int) -> subprocess.Popen:
        log = open(tmp_path / f"daemon{run}.log", "wb")
        logs.append(log)
        p = subprocess.Popen([sys.executable, "-m", "ishowttsd", "--config", str(tmp_path / "d.toml"), "--socket", str(sock)],
                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)  # fmt: skip
        wait_for(lambda: _running(sock, p), what=f"daemon run {run}")
        return p

    proc = start(0)
    try:
        for i in range(n):  # the burst, in three waves with a kill in between
            client_request(sock, "inject", superchat(i, f"谢谢老板{i}号的醒目留言，祝你天天开心"))
            if i in (7, 15):
                time.sleep(rng.uniform(0.2, 1.5))
                proc.kill()
                proc.wait(10)
                kills += 1
                proc = start(kills)
        while kills < 6:  # and more kills while it works through them
            time.sleep(rng.uniform(0.5, 2.5))
            proc.kill()
            proc.wait(10)
            kills += 1
            proc = start(kills)
        wait_for(lambda: _done(sock, n, tmp_path), timeout=180, what="every paid message to be said")
    finally:
        end_process(proc)
        for log in logs:
            log.close()
    paced = collections.Counter(json.loads(x)["message_id"] for x in (tmp_path / "paced.jsonl").read_text().splitlines())
    files = collections.Counter(e["message_id"] for e in spoken_log(tmp_path / "out") if not e["cut"])
    want = {f"sc-{i}": 1 for i in range(n)}
    fast = collections.Counter(json.loads(x)["message_id"] for x in (tmp_path / "fast.jsonl").read_text().splitlines())
    assert paced == want, f"the real-time sink: {paced}"
    assert fast == want, f"the fast archive: {fast}"
    assert files == want, f"the file sink: {files}"
    assert (tmp_path / "broken.log").read_text().count("tried") >= n  # it was tried, and never counted
    assert kills == 6


def _running(sock: Path, proc: subprocess.Popen) -> bool:
    assert proc.poll() is None, f"the daemon exited with {proc.returncode}"
    try:
        return client_request(sock, "status", timeout=2)["state"] == "running"
    except (OSError, ValueError):
        return False


def _done(sock: Path, n: int, root: Path) -> bool:
    try:
        st = client_request(sock, "status", timeout=5)
    except OSError:
        return False
    j = st["journal"]
    if j["pending"] or j["parked"] or j["waiting_for_sink"]:
        return False
    paced = root / "paced.jsonl"
    return paced.exists() and len({json.loads(x)["message_id"] for x in paced.read_text().splitlines()}) >= n
