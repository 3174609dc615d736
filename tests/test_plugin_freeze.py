"""No plugin can freeze the daemon: a plugin that blocks its import, spins on the event loop,
or never lets go is named, reported, and the daemon stays in charge (or exits for systemd)."""

from __future__ import annotations

import signal
import time

from daemon_process import DaemonProcess

SPINNER = '''
import time

import anyio

from ishowttsd.hookspecs import hookimpl
from ishowttsd.source import Source, SourceSettings


class SpinSettings(SourceSettings):
    after_s: float = 0.5
    spin_s: float = 3.0   # 0: forever


class SpinSource(Source):
    """Spins without awaiting, as a buggy plugin's busy loop would."""

    type = "spin"
    Settings = SpinSettings

    async def run(self):
        await anyio.sleep(self.settings.after_s)
        end = time.monotonic() + (self.settings.spin_s or 1e9)
        while time.monotonic() < end:
            pass
        await anyio.sleep_forever()


@hookimpl
def ishowtts_register_sources(register):
    register(SpinSource)
'''

SLOW_IMPORT = '''
import time

time.sleep(3600)  # waits on something that never comes (a network call at import, a lock)
'''


def _daemon(tmp_path, extra: str, spin_s: float, **kw) -> DaemonProcess:
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o700, exist_ok=True)
    (plugins / "spinner.py").write_text(SPINNER)
    config = f"""
[daemon]
plugin_dirs = ["plugins"]
{extra}
[engine]
warmup = false
[[sources]]
type = "spin"
spin_s = {spin_s}
"""
    return DaemonProcess(tmp_path, config, **kw)


def test_a_plugin_that_blocks_the_loop_is_named_and_reported(tmp_path):
    with _daemon(tmp_path, "stall_warn_s = 1.0", spin_s=3.0) as d:
        d.wait_for(lambda: "loop.stalled" in d.log(), timeout=30, what="the stall to end and be published")
        log = d.log()
        assert "blocked for" in log and "plugin spinner" in log and "spinner.py" in log and "in run" in log
        check = next(c for c in d.request("health")["checks"] if c["check"] == "event_loop")
        assert check["level"] == "warn" and "plugin spinner" in check["reason"], check
        assert d.request("status")["state"] == "running"


def test_a_plugin_that_never_lets_go_ends_the_daemon_for_systemd_to_restart(tmp_path):
    d = _daemon(tmp_path, "stall_warn_s = 0.5\nstall_exit_s = 3.0", spin_s=0)
    d.start()
    t0 = time.monotonic()
    rc = d.wait(30)
    assert rc == 70 and time.monotonic() - t0 < 15, d.log()  # before: it hung until killed
    log = d.log()
    assert "exiting so that systemd restarts the daemon" in log and "plugin spinner" in log


def test_sigterm_ends_a_daemon_whose_loop_is_stuck(tmp_path):
    d = _daemon(tmp_path, "stall_warn_s = 0.5\nstall_exit_s = 300\nstop_timeout_s = 2", spin_s=0)
    d.start()
    d.wait_for(lambda: "blocked for" in d.log(), timeout=30, what="the loop to be stuck")
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    rc = d.wait(20)  # the unit's TimeoutStopSec is 20 s; before: SIGTERM was ignored
    assert time.monotonic() - t0 < 8 and rc == 70, d.log()
    assert "asked to stop" in d.log()


def test_a_plugin_whose_import_hangs_is_skipped(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o700)
    (plugins / "slow.py").write_text(SLOW_IMPORT)
    config = '[daemon]\nplugin_dirs = ["plugins"]\nplugin_load_timeout_s = 1\n[engine]\nwarmup = false\n'
    t0 = time.monotonic()
    with DaemonProcess(tmp_path, config) as d:  # before: start-up hung before the socket existed
        assert time.monotonic() - t0 < 30
        broken = d.request("status")["plugins"]["broken"]
        assert [b["name"] for b in broken] == ["slow"] and "did not finish within 1 s" in broken[0]["error"]
        check = next(c for c in d.request("health")["checks"] if c["check"] == "plugin:slow")
        assert check["level"] == "warn"
