"""The web server as a part of the daemon: uvicorn serving the Starlette app in the daemon's own
event loop (no second process), on a socket we bind ourselves (so the port is known even when
`[web] listen` asks for port 0, and a port in use is reported, not fatal).

uvicorn's WebSockets are websockets' sans-I/O protocol, with back-pressure on every send and
without per-message compression: overlay audio is PCM, which deflate cannot shrink, and
compressing it for 20 overlays cost more CPU than everything else the server did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from ishowttsd.config import Config, is_loopback, listen_address
from ishowttsd.web.auth import Credentials, Guard, TokenError, load_token
from ishowttsd.web.routes import Routes, SecurityHeaders

log = logging.getLogger("ishowttsd.web")
# uvicorn's own info lines repeat `web.listening`, and name request paths with their query
# strings (a login code, the overlay key): only its warnings and errors are logged
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
_SNDBUF = 256 * 1024


class WebServer:
    """Serves the control room, the overlay, the HTTP API and `/v1/audio/speech`."""

    def __init__(self, cfg: Config, events, channels) -> None:
        self.cfg = cfg
        self.web = cfg.web
        self.events = events
        self.channels = channels
        self.api = None  # set by the daemon once the API is built
        self.url: str | None = None
        self.error: str | None = None
        self.creds: Credentials | None = None
        self.routes: Routes | None = None
        self.guard: Guard | None = None

    def token_path(self) -> Path:
        return self.cfg.resolve(self.web.token_file) if self.web.token_file else self.cfg.state_dir() / "web-token"

    def overlay_css_path(self) -> Path:
        return self.cfg.resolve(self.web.overlay_css) if self.web.overlay_css else self.cfg.state_dir() / "overlay.css"

    def _bind(self) -> socket.socket:
        host, port = listen_address(self.web.listen)
        host = "127.0.0.1" if host == "localhost" else host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # connections inherit this: a client that stops reading can park at most this much in
            # the kernel (not the 4 MB autotuning allows) before its backlog bound drops it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        bound = sock.getsockname()[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # the address to open on this machine
        self.url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{bound}/"
        return sock

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. A failure to start is reported (`web.failed`) and the daemon goes on."""
        try:
            self.cfg.state_dir().mkdir(parents=True, exist_ok=True)
            token = load_token(self.token_path())
            self.creds = Credentials(token, self.web.session_days, self.web.login_code_ttl_s)
            self.routes = Routes(self.api, self.channels, self.creds, self.web, self.overlay_css_path())
            self.guard = Guard(self.routes.app(), self.creds, self.web.allowed_hosts)
        except Exception as e:  # the web side failing to start must never stop the daemon speaking
            return self._failed(str(e) if isinstance(e, TokenError) else f"{type(e).__name__}: {e}", task_status)
        try:
            sock = self._bind()
        except OSError as e:
            return self._failed(f"cannot listen on {self.web.listen} ({e.strerror}); set [web] listen to a free port, "
                                "or enabled = false", task_status)  # fmt: skip
        config = uvicorn.Config(
            SecurityHeaders(self.guard), log_config=None, access_log=False, lifespan="off", proxy_headers=False,
            server_header=False, ws="websockets-sansio", ws_per_message_deflate=False, ws_max_size=64 * 1024,
            h11_max_incomplete_event_size=16 * 1024, timeout_keep_alive=30, timeout_graceful_shutdown=3,
            # streams plus ordinary requests; past this, connections are answered 503 at once
            limit_concurrency=self.web.max_clients * 2 + 32,
        )  # fmt: skip
        server = _Server(config)
        remote = not is_loopback(listen_address(self.web.listen)[0])
        if remote:
            log.warning("web listening on %s: other machines can reach the control room; keep the token secret",
                        self.web.listen)  # fmt: skip
        # a plain asyncio task: uvicorn shuts down by its flag, not by anyio's cancellation
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            sock.close()
            return self._failed(f"the web server did not start: {serving.exception()!r}", task_status)
        self.events.publish("web.listening", url=self.url, remote=remote)
        task_status.started()
        try:
            await asyncio.shield(serving)
        except Exception as e:  # the web side failing must never take speech down with it
            self.error = f"the web server stopped: {type(e).__name__}: {e}"
            self.events.publish("web.failed", listen=self.web.listen, error=self.error)
        finally:
            self.routes.closing.set()  # streams say goodbye (1001) before the server closes
            server.should_exit = True
            with anyio.CancelScope(shield=True):
                await asyncio.wait({serving}, timeout=5)
            sock.close()

    def _failed(self, error: str, task_status) -> None:
        self.error, self.creds, self.url = error, None, None
        self.events.publish("web.failed", listen=self.web.listen, error=error)
        task_status.started()

    # -- what the API asks ----------------------------------------------------------------------

    def login_link(self) -> dict[str, Any]:
        """A new one-time login code with the link that spends it, and the overlay's address."""
        if self.creds is None or self.url is None:
            return {"enabled": True, "listening": False, "error": self.error or "the web server is starting"}
        code = self.creds.new_code()
        return {
            "enabled": True, "listening": True, "url": self.url, "code": code,
            "login_url": f"{self.url}login?code={code}", "expires_s": int(self.web.login_code_ttl_s),
            "overlay_url": f"{self.url}overlay?key={self.creds.overlay_key}",
            "speech_url": f"{self.url}v1/audio/speech", "token_file": str(self.token_path()),
        }  # fmt: skip

    def status(self) -> dict[str, Any]:
        r = self.routes
        return {
            "enabled": True, "url": self.url, "error": self.error,
            "clients": r.clients.open if r else 0, "clients_refused": r.clients.refused if r else 0,
            "refused": self.guard.refused if self.guard else 0,
        }  # fmt: skip



class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: the daemon owns SIGTERM, SIGINT and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield
