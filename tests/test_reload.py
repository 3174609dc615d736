"""Filter reload without a restart: SIGHUP and `ishowttsctl reload` on the real daemon.

A good new config swaps moderation and queue policy at once; a bad one is refused with the
reason and the old one stays in force; parts that need a restart are named.
"""

from __future__ import annotations

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

BASE = """
[daemon]
state_dir = "state"

[engine]
default = "espeak"
fallback = "espeak"
warmup = false

[[sinks]]
type = "file"
directory = "out"
"""


@pytest.fixture
def daemon(tmp_path):
    sockdir = Path(tempfile.mkdtemp(prefix="i6r-"))  # AF_UNIX paths are limited to 108 bytes
    sock = sockdir / "d.sock"
    cfg = tmp_path / "d.toml"
    procs = []

    def start(text: str):
        cfg.write_text(text)
        log = open(tmp_path / "daemon.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "ishowttsd", "--config", str(cfg), "--socket", str(sock)],
                             stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        procs.append((p, log))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert p.poll() is None, (tmp_path / "daemon.log").read_text()
            try:
                if client_request(sock, "status", timeout=2)["state"] == "running":
                    return p
            except (OSError, ApiError):
                time.sleep(0.05)
        raise AssertionError("daemon not ready")

    def req(method, params=None):
        return client_request(sock, method, params, timeout=10)

    def ctl(*args):
        return subprocess.run([sys.executable, "-m", "ishowttsd.ctl", "--socket", str(sock), *args],
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    ns = type("D", (), {})()
    ns.start, ns.req, ns.ctl, ns.cfg, ns.log = start, req, ctl, cfg, tmp_path / "daemon.log"
    yield ns
    for p, log in procs:
        end_process(p)
        log.close()
    shutil.rmtree(sockdir, ignore_errors=True)


def say(d, text, user="甲", **kw):
    return d.req("inject", {"platform": "bilibili", "kind": "danmaku", "user": {"name": user, "id": user}, "text": text,
                            **kw})  # fmt: skip


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_sighup_and_ctl_reload_swap_filters_and_refuse_bad_configs(daemon):
    proc = daemon.start(BASE + '\n[moderation]\nblock_words = ["坏"]\n')
    assert say(daemon, "坏话")["reason"] == "blocked_word"
    assert say(daemon, "好话", user="乙")["accepted"]

    # SIGHUP: the new filter is in force without a restart
    daemon.cfg.write_text(BASE + '\n[moderation]\nblock_patterns = ["^好"]\nuser_cooldown_s = 60\n')
    os.kill(proc.pid, signal.SIGHUP)
    assert wait_for(lambda: say(daemon, "好人", user="丙").get("reason") == "blocked_pattern")
    assert say(daemon, "坏话", user="丁")["accepted"]
    # the moderation state carried over: 乙's line before the reload still counts for the cooldown
    assert say(daemon, "又来了", user="乙")["reason"] == "cooldown"

    # a bad regex through `ishowttsctl reload`: refused with the reason, exit 1, old config in force
    daemon.cfg.write_text(BASE + '\n[moderation]\nblock_patterns = ["(unclosed"]\n')
    r = daemon.ctl("reload")
    assert r.returncode == 1
    assert "block_patterns[0]" in r.stderr and "old config stays in force" in r.stderr
    assert say(daemon, "好人", user="戊")["reason"] == "blocked_pattern"

    # broken TOML by SIGHUP: logged, the daemon keeps serving with the old filter
    daemon.cfg.write_text("[moderation\n")
    os.kill(proc.pid, signal.SIGHUP)
    assert wait_for(lambda: "not valid TOML" in daemon.log.read_text())
    assert "reload refused" in daemon.log.read_text()
    assert proc.poll() is None
    assert say(daemon, "好人", user="己")["reason"] == "blocked_pattern"
    status = daemon.req("status")
    assert status["reasons"]["filtered:blocked_pattern"] >= 2 and status["state"] == "running"

    # valid TOML and valid moderation, but a file the daemon could not start with: refused too,
    # or the next restart would go silent
    for bad in ('\n[[sources]]\ntype = "youtube"\n', '\n[[sinks]]\ntype = "file"\ncolour = 1\n',
                '\n[engine.nosuch]\nx = 1\n'):
        daemon.cfg.write_text(BASE + bad + '\n[moderation]\nblock_words = ["好话"]\n')
        r = daemon.ctl("reload")
        assert r.returncode == 1, bad
        assert say(daemon, "好人", user="辛")["reason"] == "blocked_pattern"  # the old filter still

    # a good file again, through the control method: what changed and what needs a restart
    daemon.cfg.write_text(BASE.replace('fallback = "espeak"', 'fallback = "espeak"\ndefault_voice = "x"')
                          + '\n[moderation]\nblock_words = ["好人"]\n')  # fmt: skip
    r = daemon.req("reload")
    assert r["changed"] == ["moderation"] and r["restart_needed"] == ["engine"]
    assert say(daemon, "好人啊", user="庚")["reason"] == "blocked_word"
    r = daemon.ctl("reload")
    assert r.returncode == 0 and "nothing changed" in r.stdout and "restart to apply: engine" in r.stdout


def test_reload_shrinks_the_queue_bound_and_ttl(daemon):
    daemon.start(BASE + "\n[queue]\nmax_pending = 20\nflood_threshold = 0\n")
    daemon.req("pause")
    for i in range(10):
        say(daemon, f"第{i}句", user=f"u{i}")
    # the paused speaker holds two utterances prepared; the rest wait in the queue
    assert wait_for(lambda: len(daemon.req("queue")["prepared"]) == 2)
    daemon.req("inject", {"platform": "bilibili", "kind": "superchat", "user": "老板", "text": "醒目", "amount": 30,
                          "currency": "CNY"})  # fmt: skip
    pending = len(daemon.req("queue")["pending"])
    daemon.cfg.write_text(BASE + '\n[queue]\nmax_pending = 3\nflood_threshold = 0\nttl = { normal = 5 }\n')
    r = daemon.req("reload")
    # the bound is on chat (the super chat is owed: never dropped for space)
    assert r["changed"] == ["queue"] and r["dropped"] == pending - 1 - 3
    q = daemon.req("queue")["pending"]
    assert len(q) == 4 and q[0]["priority"] == "paid"  # chat went, the super chat stayed
    st = daemon.req("status")
    assert st["queue"]["max_pending"] == 3 and st["reasons"]["dropped:queue_full"] == pending - 1 - 3


def test_an_empty_file_is_refused_and_a_reload_says_what_changed(daemon):
    proc = daemon.start(BASE + '\n[moderation]\nblock_words = ["a1", "a2", "a3"]\n')
    daemon.cfg.write_text("")  # an editor that truncated the file before writing it
    os.kill(proc.pid, signal.SIGHUP)
    assert wait_for(lambda: "is empty" in daemon.log.read_text())
    assert say(daemon, "我说a1", user="x")["reason"] == "blocked_word"  # before: every rule was dropped
    daemon.cfg.write_text(BASE + '\n[moderation]\nblock_words = ["a1"]\nmax_chars = 50\n')
    r = daemon.ctl("reload")
    assert "moderation.block_words: 3 → 1 entries" in r.stdout and "moderation.max_chars: 80 → 50" in r.stdout
    assert "moderation.block_words: 3 → 1 entries" in daemon.log.read_text()
