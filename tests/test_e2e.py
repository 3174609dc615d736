"""The real daemon process, driven through the real socket with the real ishowttsctl."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from daemon_process import REPO, DaemonProcess, spoken_log, wav_info

CONFIG = """
[engine]
default = "espeak"

[[sinks]]
type = "file"
directory = "out"

[moderation]
max_chars = 40
block_words = ["badword"]
"""


@pytest.fixture
def daemon(tmp_path):
    with DaemonProcess(tmp_path, CONFIG) as d:
        yield d


def test_inject_say_and_files(daemon):
    out = daemon.tmp / "out"
    r = daemon.ctl("inject", "主播晚上好", "--user", "小明", "--platform", "bilibili")
    assert "queued" in r.stdout and "小明说：主播晚上好" in r.stdout
    r = daemon.ctl("--json", "inject", "", "--kind", "superchat", "--user", "土豪", "--amount", "30", "--currency", "CNY",
                   "--platform", "bilibili")  # fmt: skip
    assert json.loads(r.stdout)["priority"] == "paid"
    r = daemon.ctl("inject", "this has a badword in it", "--platform", "twitch")
    assert "filtered: blocked_word" in r.stdout
    r = daemon.ctl("inject", "x" * 100, "--platform", "twitch")
    assert "filtered: too_long" in r.stdout
    daemon.ctl("say", "Hello from the operator", "--voice", "en")
    daemon.wait_for(lambda: len(spoken_log(out)) == 3, what="three spoken utterances")
    log = spoken_log(out)
    assert {e["kind"] for e in log} == {"danmaku", "superchat", "say"}
    for e in log:
        wav = out / e["file"]
        seconds, peak = wav_info(wav)
        assert abs(seconds - e["audio_s"]) < 0.01
        assert 0.8 < seconds < 15 and peak > 0.1, f"{wav} should be audible speech"
        assert e["rtf"] > 0 and e["engine"] == "espeak"
    assert not list(out.glob("*.part"))
    st = daemon.request("status")
    assert st["counts"]["received"] == 4 and st["counts"]["filtered"] == 2 and st["counts"]["spoken"] == 3
    assert st["reasons"] == {"filtered:blocked_word": 1, "filtered:too_long": 1}
    human = daemon.ctl("status").stdout
    assert "espeak" in human and "SINKS" in human


def test_watch_streams_events(daemon):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ishowttsd.ctl", "--socket", str(daemon.socket), "--json", "watch"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        daemon.ctl("inject", "watch me", "--platform", "twitch", "--user", "viewer")
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "spoken" not in seen:
            ev = json.loads(proc.stdout.readline())
            seen.append(ev["event"])
        assert seen[:3] == ["received", "queued", "speaking"] and "spoken" in seen
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
    assert daemon.request("status")["state"] == "running"  # a watcher leaving harms nothing


def test_queue_pause_resume_skip_clear(daemon):
    out = daemon.tmp / "out"
    daemon.ctl("pause")
    for i in range(3):
        daemon.ctl("inject", f"message {i}", "--platform", "twitch")
    daemon.ctl("inject", "", "--kind", "bits", "--amount", "100", "--currency", "bits", "--platform", "twitch")
    q = daemon.request("queue")
    pending = q["pending"] + q["prepared"]
    assert q["paused"] and len(pending) == 4
    assert pending[0]["priority"] == "paid"  # bits jump the line
    human = daemon.ctl("queue").stdout
    assert "(paused)" in human and "message 2" in human
    last = q["pending"][-1]["id"]
    daemon.ctl("remove", str(last))
    r = daemon.ctl("remove", "999999", check=False)
    assert r.returncode == 1 and "not_found" in r.stderr
    r = daemon.ctl("--json", "clear", "--class", "normal")
    assert json.loads(r.stdout)["removed"] + json.loads(r.stdout)["cut"] >= 1
    daemon.ctl("resume")
    daemon.wait_for(lambda: daemon.request("status")["speaker"]["spoken"] >= 1, what="speech after resume")
    assert daemon.request("status")["speaker"]["paused"] is False
    assert daemon.ctl("--json", "skip").returncode == 0
    assert {e["kind"] for e in spoken_log(out)} <= {"bits", "danmaku"}


def test_remove_takes_back_a_users_speech_waiting_or_speaking(daemon):
    daemon.ctl("pause")
    for i in range(3):
        daemon.ctl("inject", f"spam {i}", "--platform", "twitch", "--user", "spammer", "--user-id", "66")
    daemon.ctl("inject", "keep me", "--platform", "twitch", "--user", "friend")
    q = daemon.request("queue")
    ahead = q["prepared"] + q["pending"]
    assert [u["user"] for u in ahead].count("spammer") == 3
    r = daemon.ctl("remove", "--user", "SPAMMER", "--platform", "twitch")  # names compare case-insensitively
    assert "removed" in r.stdout
    q = daemon.request("queue")
    left = [u["user"] for u in q["prepared"] + q["pending"]]
    assert left == ["friend"], left
    r = daemon.ctl("remove", check=False)
    assert r.returncode == 1 and "invalid_params" in r.stderr
    daemon.ctl("resume")


def test_event_catalogue_and_filtered_watch(daemon):
    names = {e["event"] for e in daemon.request("events")["events"]}
    assert {"received", "spoken", "filtered", "source.state"} <= names
    assert "spoken" in daemon.ctl("events").stdout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(daemon.socket))
        s.sendall(b'{"id": 1, "method": "events.watch", "params": {"events": ["filtered"]}}\n')
        f = s.makefile("rb")
        assert "status" in json.loads(f.readline())["result"]
        daemon.ctl("inject", "ok line", "--platform", "twitch")
        daemon.ctl("inject", "a badword line", "--platform", "twitch")
        ev = json.loads(f.readline())
        assert ev["event"] == "filtered" and ev["reason"] == "blocked_word"
    r = daemon.ctl("watch", "--event", "nosuch", check=False)
    assert r.returncode == 1 and "unknown event" in r.stderr


def test_voices_and_plugins(daemon):
    voices = daemon.request("voices")["voices"]
    assert {"auto", "zh", "en"} <= {v["id"] for v in voices}
    r = daemon.ctl("voices")
    assert "Mandarin" in r.stdout
    r = daemon.ctl("say", "hi", "--voice", "nosuch", check=False)
    assert r.returncode == 1 and "unknown_voice" in r.stderr
    plugins = daemon.request("plugins")
    assert "replay" in plugins["sources"] and "file" in plugins["sinks"] and "espeak" in plugins["engines"]
    assert "sources/replay" in daemon.ctl("plugins").stdout


def test_health_exit_code(daemon):
    r = daemon.ctl("health", check=False)
    assert r.returncode == 0, r.stdout
    assert "health: OK" in r.stdout


def test_sigterm_stops_cleanly_mid_utterance(tmp_path):
    d = DaemonProcess(tmp_path, CONFIG.replace('directory = "out"', 'directory = "out"\nkeep_cut = false')).start()
    d.request("say", {"text": "a long text " * 30, "priority": "urgent"})
    d.request("say", {"text": "and another long text " * 30, "priority": "urgent"})
    rc = d.stop(signal.SIGTERM)
    assert rc == 0
    assert not d.socket.exists(), "the socket file must be removed"
    assert not list((tmp_path / "out").glob("*.part")), "nothing half-written may be left"
    for e in spoken_log(tmp_path / "out"):
        assert (tmp_path / "out" / e["file"]).exists()
    assert "stopped" in d.log()


def test_ctl_without_daemon_says_how_to_start(tmp_path):
    sock = tmp_path / "nobody.sock"
    r = subprocess.run([sys.executable, "-m", "ishowttsd.ctl", "--socket", str(sock), "status"], capture_output=True, text=True)
    assert r.returncode == 3
    assert str(sock) in r.stderr and "ishowttsd --config" in r.stderr
    r = subprocess.run([sys.executable, "-m", "ishowttsd.ctl", "--socket", str(sock), "health"], capture_output=True, text=True)
    assert r.returncode == 2, "for monitoring, a daemon that is not running is a failure"
    # a socket that accepts but never answers: the check could not run (3 = unknown), with advice
    import socket as _s

    hung = tmp_path / "hung.sock"
    srv = _s.socket(_s.AF_UNIX, _s.SOCK_STREAM)
    srv.bind(str(hung))
    srv.listen(1)
    try:
        r = subprocess.run([sys.executable, "-m", "ishowttsd.ctl", "--socket", str(hung), "--timeout", "1", "health"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    finally:
        srv.close()
    assert r.returncode == 3 and "did not answer in time" in r.stderr


def test_second_daemon_on_same_socket_is_refused(daemon, tmp_path):
    (tmp_path / "second").mkdir()
    d2 = DaemonProcess(tmp_path / "second", CONFIG, wait_ready=False)
    d2.socket = daemon.socket
    d2.start()
    assert d2.wait(30) == 1
    assert "already listening" in d2.log()
    assert daemon.request("status")["state"] == "running"


def test_stale_socket_is_replaced(tmp_path):
    sock = tmp_path / "ctl.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock))
    s.close()  # a socket file nobody listens on, as after a crash
    with DaemonProcess(tmp_path, CONFIG) as d:
        assert d.request("status")["state"] == "running"
        assert oct(os.stat(sock).st_mode & 0o777) == "0o660"


def test_bad_config_exits_78_with_advice(tmp_path):
    d = DaemonProcess(tmp_path, "[[sinks]]\ntype = \"fiel\"\n", wait_ready=False).start()
    assert d.wait(30) == 78
    assert "sinks[0].type" in d.log() and "file" in d.log()


def test_broken_plugin_is_reported_in_status(tmp_path):
    plugdir = tmp_path / "plugins"
    plugdir.mkdir(mode=0o755)
    (plugdir / "broken.py").write_text("raise RuntimeError('this plugin is broken on purpose')\n")
    (plugdir / "broken.py").chmod(0o644)
    with DaemonProcess(tmp_path, f'[daemon]\nplugin_dirs = ["{plugdir}"]\n' + CONFIG) as d:
        st = d.request("status")
        assert [b["name"] for b in st["plugins"]["broken"]] == ["broken"]
        assert "broken on purpose" in d.ctl("status").stdout
        r = d.ctl("health", check=False)
        assert r.returncode == 1 and "plugin:broken" in r.stdout


def test_demo_config_replays_the_recording(tmp_path):
    cfg = (REPO / "config" / "demo.toml").read_text()
    cfg = cfg.replace('path = "recordings/demo.jsonl"', f'path = "{REPO / "config/recordings/demo.jsonl"}"')
    cfg = cfg.replace('directory = "../out/demo"', 'directory = "out"').replace('"../out/demo-state"', '"state"')
    cfg = cfg.replace("speed = 2.0", "speed = 50.0").replace("pace = true", "pace = false")
    d = DaemonProcess(tmp_path, cfg, args=["--exit-when-done", "--summary-json", str(tmp_path / "summary.json")],
                      wait_ready=False).start()  # fmt: skip
    assert d.wait(120) == 0, d.log()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["received"] == 33
    assert summary["reasons"]["filtered:blocked_word"] >= 2
    assert summary["reasons"]["filtered:too_long"] == 1
    assert summary["reasons"]["filtered:emoticon"] == 1
    log = spoken_log(tmp_path / "out")
    assert len(log) == summary["spoken"] > 20
    assert summary["received"] == summary["filtered"] + summary["spoken"] + summary["dropped"] + summary["expired"] + summary["cut"]
    kinds = {e["kind"] for e in log}
    assert {"danmaku", "gift", "superchat", "guard", "bits", "sub", "raid"} <= kinds
