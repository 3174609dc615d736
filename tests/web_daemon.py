"""The real ishowttsd with its web front door on a free loopback port, for the web tests."""

from __future__ import annotations

import io
import socket
import wave
from pathlib import Path

import httpx
from daemon_process import DaemonProcess

WEB = """
[daemon]
state_dir = "state"

[web]
listen = "127.0.0.1:0"
"""


class WebDaemon(DaemonProcess):
    """A DaemonProcess whose config enables `[web]` on port 0; `url`, `token`, `client()`."""

    url = ""
    token = ""

    def __init__(self, tmp: Path, config: str = "", web: str = "", ready_timeout: float = 180.0, **kw) -> None:
        super().__init__(tmp, WEB + web + "\n" + config, wait_ready=False, **kw)
        self.ready_timeout = ready_timeout  # an F5 engine loads torch first: slow on a busy machine

    def start(self) -> WebDaemon:
        super().start()
        try:
            self.wait_for(lambda: self.request("status")["state"] == "running", timeout=self.ready_timeout,
                          what="the daemon to be ready")  # fmt: skip
            link = self.request("web")
            assert link.get("listening"), link
        except BaseException:  # no daemon is left behind by a test that failed to start one
            self.stop()
            raise
        self.url = link["url"].rstrip("/")
        self.token = (self.tmp / "state" / "web-token").read_text().strip()
        return self

    @property
    def host(self) -> str:
        return self.url.split("//", 1)[1]

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    def client(self, auth: bool = True, headers: dict | None = None, **kw) -> httpx.Client:
        h = {"Authorization": f"Bearer {self.token}"} if auth else {}
        return httpx.Client(base_url=self.url, headers={**h, **(headers or {})}, timeout=30, follow_redirects=False,
                            trust_env=False, **kw)  # fmt: skip

    def login_code(self) -> str:
        return self.request("web")["code"]


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


def raw_http(port: int, head: bytes, body_chunks=(), timeout: float = 20.0) -> tuple[bytes, int]:
    """Send a request by hand (to stream a body the server should refuse early); returns (the
    response's first bytes, how many body bytes were sent before the server answered or closed)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        s.setblocking(False)
        got = b""
        for chunk in body_chunks:
            try:
                got += s.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if got:
                break
            try:
                s.setblocking(True)
                s.settimeout(timeout)
                s.sendall(chunk)
                sent += len(chunk)
                s.setblocking(False)
            except OSError:
                break
        s.setblocking(True)
        s.settimeout(timeout)
        while b"\r\n\r\n" not in got:
            try:
                data = s.recv(65536)
            except OSError:
                break
            if not data:
                break
            got += data
    return got, sent
