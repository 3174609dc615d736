"""Who may do what over HTTP: the token, login codes, session cookies, the overlay key, and
the Host and Origin checks.

A loopback port is reachable by every local user and, through the browser, by any page the
streamer visits. So every route but the login page needs a credential:

- ``Authorization: Bearer <token>``: scripts, Stream Deck, OpenAI clients (the token is the
  API key). The token lives in a file (mode 0600), never in a page, a log or an answer;
- the session cookie that a one-time login code grants (``ishowttsctl web`` prints one):
  HttpOnly, SameSite=Strict, signed with a key derived from the token, so it survives a
  restart and rotating the token signs everyone out;
- the overlay key (derived from the token, so the OBS URL stays valid across restarts):
  read-only, accepted only by the overlay's page, assets and stream.

Requests whose Host is neither an IP address, ``localhost`` nor a name in ``[web]
allowed_hosts`` are refused (DNS rebinding), and so are state changes and WebSocket
handshakes from another Origin. No CORS header is ever sent.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import stat
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("ishowttsd.web")

SESSION_COOKIE = "ishowtts_session"
OVERLAY_COOKIE = "ishowtts_overlay"
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: it is read off a terminal
_CODE_LEN = 10
_SAFE_METHODS = ("GET", "HEAD")


class TokenError(Exception):
    """The token file cannot be used; the message says why and what to do."""


def load_token(path: Path) -> str:
    """The token in `path`, created (random, mode 0600) when the file does not exist."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise TokenError(f"cannot create the web token file {path} ({e.strerror}); check the folder or set [web] token_file") from None
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        log.info("web token created path=%s", path)
    try:
        st = path.stat()
        token = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise TokenError(f"cannot read the web token file {path} ({e.strerror})") from None
    if st.st_mode & stat.S_IROTH:
        raise TokenError(f"the web token file {path} is readable by every user; chmod 600 {path}")
    if len(token) < 16:
        raise TokenError(f"the web token in {path} is shorter than 16 characters; put a long random one there "
                         "(or delete the file: a new one is made)")  # fmt: skip
    return token


def _derive(token: str, purpose: str) -> bytes:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).digest()


class Credentials:
    """The token, what is derived from it, and the one-time login codes."""

    def __init__(self, token: str, session_days: float, code_ttl_s: float, clock=time.time) -> None:
        self._token = token
        self._session_key = _derive(token, "ishowtts session v1")
        self.overlay_key = _derive(token, "ishowtts overlay v1").hex()[:32]
        self.session_s = session_days * 86400
        self.code_ttl_s = code_ttl_s
        self.clock = clock
        self._codes: dict[str, float] = {}  # code -> expiry
        self._failures: list[float] = []  # times of wrong codes (brute force is throttled)

    def __repr__(self) -> str:  # never print a secret by accident
        return "Credentials(...)"

    def is_token(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(), self._token.encode())

    def is_overlay_key(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(), self.overlay_key.encode())

    # -- login codes --------------------------------------------------------------------------

    def new_code(self) -> str:
        now = self.clock()
        self._codes = {c: exp for c, exp in self._codes.items() if exp > now}
        while len(self._codes) >= 20:  # a forgotten terminal does not pile up live codes
            self._codes.pop(next(iter(self._codes)))
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LEN))
        self._codes[code] = now + self.code_ttl_s
        return code

    def throttled(self) -> bool:
        """True after 10 wrong codes within a minute (until the minute passes)."""
        now = self.clock()
        self._failures = [t for t in self._failures if now - t < 60]
        return len(self._failures) >= 10

    def redeem(self, code: str) -> bool:
        """Spend a login code: True once, for a live code; a wrong one counts toward throttling."""
        code = "".join(code.split()).upper()[:64]
        now = self.clock()
        for known, exp in list(self._codes.items()):
            if hmac.compare_digest(known.encode(), code.encode()):
                del self._codes[known]
                if exp > now:
                    return True
        self._failures.append(now)
        return False

    # -- sessions -----------------------------------------------------------------------------

    def new_session(self) -> str:
        body = f"{int(self.clock() + self.session_s)}.{secrets.token_urlsafe(12)}"
        return body + "." + hmac.new(self._session_key, body.encode(), hashlib.sha256).hexdigest()

    def valid_session(self, cookie: str) -> bool:
        body, _, sig = cookie.rpartition(".")
        if not body or len(cookie) > 200:
            return False
        want = hmac.new(self._session_key, body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want.encode(), sig.encode()):
            return False
        try:
            return int(body.split(".", 1)[0]) > self.clock()
        except ValueError:
            return False


def host_name(host_header: str) -> str:
    """The host part of a Host header ("[::1]:8765" -> "::1", "LocalHost:80" -> "localhost")."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Guard:
    """Pure ASGI middleware: Host and Origin checks, then who is asking (scope["role"]).

    Roles: "admin" (token or session), "overlay" (the overlay key), None (nobody). Routes
    decide what each role may do; this layer refuses what no route may allow.
    """

    def __init__(self, app, creds: Credentials, allowed_hosts: list[str]) -> None:
        self.app = app
        self.creds = creds
        self.allowed = {"localhost", *(h.lower() for h in allowed_hosts)}
        self.refused = 0

    def host_ok(self, host: str) -> bool:
        # an IP literal cannot be rebound: DNS rebinding needs a name the attacker controls
        name = host_name(host)
        return bool(name) and (name in self.allowed or _is_ip(name))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.host_ok(host):
            return await self._refuse(scope, send, 403, "forbidden", f"Host {host[:100]!r} is not this daemon's address; "
                                      "open it as http://127.0.0.1:PORT or add the name to [web] allowed_hosts")  # fmt: skip
        origin = headers.get("origin")
        changes = scope["type"] == "websocket" or scope["method"] not in _SAFE_METHODS
        if changes and origin is not None and not self._same_origin(origin, host):
            return await self._refuse(scope, send, 403, "forbidden",
                                      "requests from another site may not control this daemon")  # fmt: skip
        if changes and headers.get("sec-fetch-site") == "cross-site":
            return await self._refuse(scope, send, 403, "forbidden", "requests from another site may not control this daemon")
        scope["role"] = self._role(scope, headers)
        await self.app(scope, receive, send)

    @staticmethod
    def _same_origin(origin: str, host: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()

    def _role(self, scope, headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return "admin" if self.creds.is_token(auth[7:].strip()) else None
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no credential, not an error
            cookies = SimpleCookie()
        if SESSION_COOKIE in cookies and self.creds.valid_session(cookies[SESSION_COOKIE].value):
            return "admin"
        key = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key", [""])[0]
        if not key and OVERLAY_COOKIE in cookies:
            key = cookies[OVERLAY_COOKIE].value
        if key and self.creds.is_overlay_key(key):
            return "overlay"
        return None

    async def _refuse(self, scope, send, status: int, code: str, message: str) -> None:
        self.refused += 1
        log.warning("web request refused status=%d path=%s reason=%s", status, scope.get("path", "")[:100], code)
        await refuse(scope, send, status, code, message)


async def refuse(scope, send, status: int, code: str, message: str) -> None:
    """Answer an error in the API's shape (a WebSocket handshake is closed instead)."""
    import json

    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
