"""sd_notify on a real AF_UNIX datagram socket: the notifier alone, then the real daemon."""

import os
import signal
import socket
import statistics
import time

import anyio
import pytest

from daemon_process import DaemonProcess
from ishowttsd.sdnotify import Notifier

# A source plugin that blocks the event loop once, as a buggy plugin might: the watchdog
# must stop while the loop is stuck (under systemd, that is what gets us restarted).
HANG_PLUGIN = '''
import time

import anyio

from ishowttsd.hookspecs import hookimpl
from ishowttsd.source import Source, SourceSettings


class HangSettings(SourceSettings):
    after_s: float = 1.0
    block_s: float = 2.0


class HangSource(Source):
    type = "hang"
    Settings = HangSettings

    async def run(self):
        await anyio.sleep(self.settings.after_s)
        time.sleep(self.settings.block_s)  # blocks the whole event loop on purpose
        await anyio.sleep_forever()


@hookimpl
def ishowtts_register_sources(register):
    register(HangSource)
'''


class Listener:
    """The service manager's side: a datagram socket that timestamps what arrives."""

    def __init__(self, address) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        msg = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.messages.append((time.monotonic(), msg))
        return msg

    def until(self, pred, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.receive(max(0.01, deadline - time.monotonic()))
            if msg is not None and pred(msg):
                return msg
        raise AssertionError(f"no such message within {timeout} s; got {[m for _, m in self.messages][-10:]}")

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.receive(max(0.01, deadline - time.monotonic()))

    def close(self) -> None:
        self.sock.close()


def test_notifier_without_systemd_is_a_no_op():
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready() is False and n.watchdog() is False
    anyio.run(n.watchdog_loop)  # returns at once


def test_notifier_path_socket(tmp_path):
    lst = Listener(str(tmp_path / "notify"))
    try:
        n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "3000000"})
        assert n.watchdog_interval == 1.5
        assert n.ready(status="loading\nengine")
        msg = lst.receive(2)
        assert msg["READY"] == "1" and msg["MAINPID"] == str(os.getpid()) and msg["STATUS"] == "loading engine"
        n.stopping()
        assert lst.receive(2) == {"STOPPING": "1", "STATUS": "stopping"}
        n.close()
    finally:
        lst.close()


def test_notifier_abstract_namespace():
    name = f"ishowtts-test-{os.getpid()}-{time.monotonic_ns()}"
    lst = Listener(b"\0" + name.encode())
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.address == b"\0" + name.encode()
        assert n.watchdog() and lst.receive(2) == {"WATCHDOG": "1"}
    finally:
        n.close()
        lst.close()


def test_watchdog_pid_of_another_process_is_ignored(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.watchdog_interval is None


def test_unreachable_socket_is_reported_not_raised(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert n.ready() is False and n.errors == 1
    n.close()


def test_watchdog_cadence_from_the_loop(tmp_path):
    lst = Listener(str(tmp_path / "notify"))
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000"})

    async def main():
        with anyio.move_on_after(0.5):
            await n.watchdog_loop()

    try:
        anyio.run(main)
        lst.collect(0.2)
        pings = [m for _, m in lst.messages if m == {"WATCHDOG": "1"}]
        assert 5 <= len(pings) <= 12  # every 50 ms for half a second (a loaded machine sleeps longer)
    finally:
        n.close()
        lst.close()


@pytest.mark.parametrize("abstract", [False, True])
def test_daemon_ready_status_watchdog_and_stopping(tmp_path, abstract):
    plugdir = tmp_path / "plugins"
    plugdir.mkdir(mode=0o755)
    (plugdir / "hang.py").write_text(HANG_PLUGIN)
    (plugdir / "hang.py").chmod(0o644)
    if abstract:
        addr_env = f"@ishowtts-test-{os.getpid()}-{time.monotonic_ns()}"
        bind = b"\0" + addr_env[1:].encode()
    else:
        addr_env = bind = str(tmp_path / "notify.sock")
    lst = Listener(bind)
    block_s = 1.5
    config = f"""
[daemon]
plugin_dirs = ["{plugdir}"]

[engine]
default = "espeak"

[hardware]
telemetry_interval_s = 0.3

[[sources]]
type = "hang"
after_s = 1.5
block_s = {block_s}

[[sinks]]
type = "file"
directory = "out"
"""
    d = DaemonProcess(tmp_path, config, env={"NOTIFY_SOCKET": addr_env, "WATCHDOG_USEC": "200000"}, wait_ready=False)
    d.start()
    try:
        ready = lst.until(lambda m: m.get("READY") == "1", timeout=30)
        t_ready = time.monotonic()
        # READY means the socket is bound and plugins are loaded: a request works at once
        st = d.request("status")
        assert st["pid"] == int(ready["MAINPID"]) == d.proc.pid
        assert "hang" in d.request("plugins")["sources"]
        lst.until(lambda m: m.get("STATUS", "").startswith("running:"), timeout=30)
        lst.collect(max(0.0, t_ready + 1.5 + block_s + 1.5 - time.monotonic()))
        rc = d.stop(signal.SIGTERM)
        lst.until(lambda m: m.get("STOPPING") == "1", timeout=5)
    finally:
        if d.proc.poll() is None:
            d.stop()
        lst.close()
    assert rc == 0
    pings = [t for t, m in lst.messages if m.get("WATCHDOG") == "1"]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert len(pings) >= 10, lst.messages
    # WATCHDOG=1 every WATCHDOG_USEC/2 = 0.1 s while the loop is free ...
    assert 0.05 <= statistics.median(gaps) <= 0.2, gaps
    # ... none while the plugin blocks the loop (systemd would kill and restart us here) ...
    assert max(gaps) >= block_s * 0.9, gaps
    hang_end = pings[gaps.index(max(gaps)) + 1]
    # ... and they come back once the loop runs again
    assert sum(1 for t in pings if t > hang_end) >= 3
    statuses = [m["STATUS"] for _, m in lst.messages if "STATUS" in m]
    assert statuses[0].startswith("loading engine espeak")
    assert any(s.startswith("running: espeak") and "health" in s for s in statuses)
