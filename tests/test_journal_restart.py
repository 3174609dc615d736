"""SIGKILL and restart with paid messages pending: each is spoken exactly once, stale ones reported.

The real daemon runs as a subprocess (`python -m ishowttsd --config X --socket Y`) with the
embedded espeak engine and the file sink; the speaker is paused over the control socket so that
paid messages stay pending, they are injected over the socket, and the daemon is killed with
SIGKILL. spoken.jsonl (written by the file sink) is the witness of what was said.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from daemon_process import end_process

from ishowttsd.api import ApiError
from ishowttsd.control import client_request

CONFIG = """
[daemon]
state_dir = "state"
log_level = "info"

[engine]
default = "espeak"
fallback = "espeak"
warmup = false

[[sinks]]
type = "file"
directory = "out"

[queue]
max_pending = 200
flood_threshold = 0
ttl = {{ membership = {membership_ttl} }}
"""


class DaemonProc:
    """One ishowttsd subprocess on a private socket; its log goes to a file."""

    def __init__(self, root: Path, sock: Path) -> None:
        self.root, self.sock = root, sock
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.root / f"daemon{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        self.base = len(spoken(self.root))  # lines written by earlier runs
        env = {**os.environ, "XDG_STATE_HOME": str(self.root / "xdg")}
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ishowttsd", "--config", str(self.root / "d.toml"), "--socket", str(self.sock)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited: {self.log.read_text()}"
            try:
                if client_request(self.sock, "status", timeout=2)["state"] == "running":
                    return
            except (OSError, ApiError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready: {self.log.read_text()}")

    def req(self, method: str, params: dict | None = None):
        return client_request(self.sock, method, params, timeout=10)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            end_process(self.proc)
            self._log.close()


@pytest.fixture
def daemon(tmp_path):
    sockdir = Path(tempfile.mkdtemp(prefix="i6-"))  # a short path: AF_UNIX paths are limited to 108 bytes
    d = DaemonProc(tmp_path, sockdir / "d.sock")
    yield d
    d.stop()
    shutil.rmtree(sockdir, ignore_errors=True)


def spoken(root: Path) -> list[dict]:
    f = root / "out" / "spoken.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def wait_for(pred, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def superchat(i: int) -> dict:
    return {"platform": "bilibili", "kind": "superchat", "user": {"id": str(100 + i), "name": f"老板{i}"},
            "text": f"第{i}条醒目留言", "amount": 30, "currency": "CNY", "id": f"sc-{i}"}  # fmt: skip


def quiet(d: DaemonProc) -> None:
    """Paused, and every utterance a sink finished is marked: nothing between 'written' and 'marked'."""

    def settled():
        s = d.req("status")
        return s["counts"]["spoken"] == s["speaker"]["spoken"] and len(spoken(d.root)) - d.base == s["speaker"]["spoken"]

    wait_for(settled, what="speaker to settle")
    time.sleep(0.3)
    wait_for(settled, what="speaker to settle")


def test_sigkill_with_paid_pending_then_restart_speaks_each_once(daemon):
    root = daemon.root
    (root / "d.toml").write_text(CONFIG.format(membership_ttl=2.0))
    daemon.start()
    daemon.req("pause")
    for i in range(6):
        r = daemon.req("inject", superchat(i))
        assert r["accepted"] and r["priority"] == "paid"
    # a membership with a 2 s time-to-live: it will be stale after the restart
    daemon.req("inject", {"platform": "bilibili", "kind": "guard", "user": {"id": "55", "name": "舰长甲", "membership": "舰长"},
                          "id": "g-1"})  # fmt: skip
    # plain chat is not journaled: after a crash it is gone, as it should be
    daemon.req("inject", {"platform": "twitch", "kind": "danmaku", "user": "chatter", "text": "hello", "id": "t-1"})
    st = daemon.req("status")
    assert st["journal"]["pending"] == 7
    assert (root / "xdg").exists() is False  # state_dir in the config wins over XDG_STATE_HOME
    assert (root / "state" / "journal.sqlite3").exists()
    daemon.kill9()
    assert spoken(root) == []

    time.sleep(2.2)  # the guard's 2 s run out while the daemon is down
    daemon.start()
    wait_for(lambda: len(spoken(root)) >= 6, what="6 super chats spoken after the restart")
    quiet(daemon)
    said = collections.Counter(r["message_id"] for r in spoken(root))
    assert said == {f"sc-{i}": 1 for i in range(6)}
    log = daemon.log.read_text()
    assert "journal_stale" in log and "g-1" in log and "舰长甲" in log
    assert log.count("recovered ") == 6

    # round two: kill in the middle of speaking (paused at a settled point), restart, nothing twice
    daemon.req("pause")
    for i in range(6, 14):
        daemon.req("inject", superchat(i))
    daemon.req("resume")
    wait_for(lambda: len(spoken(root)) >= 8, what="some of round two spoken")
    daemon.req("pause")
    quiet(daemon)
    before = len(spoken(root))
    daemon.kill9()
    daemon.start()
    wait_for(lambda: len(spoken(root)) >= 14, what="all 14 spoken")
    quiet(daemon)
    said = collections.Counter(r["message_id"] for r in spoken(root))
    assert said == {f"sc-{i}": 1 for i in range(14)}, f"spoken before the second kill: {before}"
    # a third restart finds nothing owed
    daemon.stop()
    daemon.start()
    time.sleep(0.5)
    assert daemon.req("status")["journal"]["pending"] == 0
    assert len(spoken(root)) == 14


def test_graceful_stop_keeps_paid_speech_owed(daemon):
    root = daemon.root
    (root / "d.toml").write_text(CONFIG.format(membership_ttl=600))
    daemon.start()
    daemon.req("pause")
    for i in range(3):
        daemon.req("inject", superchat(i))
    daemon.stop()  # SIGTERM: a clean shutdown with speech still owed
    daemon.start()
    wait_for(lambda: len(spoken(root)) >= 3, what="3 spoken after a clean restart")
    quiet(daemon)
    assert collections.Counter(r["message_id"] for r in spoken(root)) == {f"sc-{i}": 1 for i in range(3)}


def test_replayed_message_id_after_restart_is_not_read_twice(daemon):
    root = daemon.root
    (root / "d.toml").write_text(CONFIG.format(membership_ttl=600))
    daemon.start()
    daemon.req("inject", superchat(1))
    wait_for(lambda: len(spoken(root)) == 1, what="spoken")
    daemon.stop()
    daemon.start()
    r = daemon.req("inject", superchat(1))  # a source that reconnected and replayed it
    assert r == {"accepted": False, "reason": "duplicate_id", "detail": "message sc-1 was seen already"}


def test_second_daemon_on_the_same_journal_is_refused(daemon):
    root = daemon.root
    (root / "d.toml").write_text(CONFIG.format(membership_ttl=600))
    daemon.start()
    other = daemon.sock.with_name("other.sock")
    r = subprocess.run([sys.executable, "-m", "ishowttsd", "--config", str(root / "d.toml"), "--socket", str(other)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 78
    assert "in use by another ishowttsd" in r.stderr and "state_dir" in r.stderr
    assert not other.exists()
    assert daemon.req("status")["state"] == "running"
