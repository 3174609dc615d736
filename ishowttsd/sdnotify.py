"""sd_notify(3) written directly: one AF_UNIX datagram per message to $NOTIFY_SOCKET.

systemd's `Type=notify` waits for READY=1, shows STATUS= in `systemctl status`, restarts the
service when WATCHDOG=1 stops arriving within WatchdogSec, and knows a stop is deliberate
after STOPPING=1. Outside systemd (no $NOTIFY_SOCKET) every call is a cheap no-op.

The watchdog is fed by a task on the event loop (`watchdog_loop`), not by a thread: a loop
that hangs stops feeding it, and systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping

import anyio

log = logging.getLogger("ishowttsd.sdnotify")


def _address(raw: str) -> str | bytes:
    # "@name" is Linux's abstract namespace: a leading NUL byte instead of a file
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class Notifier:
    """Talks to the service manager; every method is safe to call when not under systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET") or ""
        self.address: str | bytes | None = _address(raw) if raw and raw[0] in "/@" else None
        self.watchdog_usec: int | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process that must feed it; a child that inherited it must not
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self._sock: socket.socket | None = None
        self.sent = 0
        self.errors = 0

    @classmethod
    def from_environment(cls) -> Notifier:
        """Read the variables and remove them, so child processes (jetson_clocks, nvpmodel)
        cannot talk to systemd on our behalf."""
        n = cls(dict(os.environ))
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            os.environ.pop(key, None)
        return n

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WatchdogSec, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` lines as one datagram. Returns False (and logs once) on failure."""
        if self.address is None:
            return False
        msg = "\n".join(a.replace("\n", " ") for a in assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, self.address)
        except OSError as e:
            self.errors += 1
            if self.errors == 1:
                log.warning("sd_notify to %r failed: %s (systemd may think we are hung)", self.address, e)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            lines.append(f"STATUS={status}")
        return self.notify(*lines)

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    async def watchdog_loop(self) -> None:
        """Feed the watchdog from the event loop until cancelled; returns at once if disabled."""
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        log.info("systemd watchdog enabled: pinging every %.3f s", interval)
        while True:
            self.watchdog()
            await anyio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
