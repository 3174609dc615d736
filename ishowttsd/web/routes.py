"""The HTTP routes: a thin transport over the API object, plus the pages and their streams.

Every verb is ``/api/<verb>``: GET (query parameters) for those that only read, POST (a JSON
object) for all; errors keep the API's shape and codes, mapped to statuses by :data:`ishowttsd.web.http.STATUS`.
Events stream over the WebSocket ``/api/events`` or as server-sent events. The pages and the
overlay are files shipped in ``static/``; nothing comes from a CDN.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ishowttsd.api import ApiError
from ishowttsd.control import parse_json
from ishowttsd.web.auth import OVERLAY_COOKIE, SESSION_COOKIE, Credentials
from ishowttsd.web.http import JSON_LIMIT, TooLarge, dumps, error_response, json_response, read_body
from ishowttsd.web.speech import speech_routes

log = logging.getLogger("ishowttsd.web")

STATIC = Path(__file__).parent / "static"
# the files a page may load, with their types; anything else is not served
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml"}  # fmt: skip
_OVERLAY_FILES = ("overlay.js", "overlay.css")
_SEND_TIMEOUT_S = 10.0  # a client that takes longer to accept one message is dropped
OVERLAY_EVENTS = ["speaking", "spoken", "cut", "failed", "paused", "resumed"]
CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; media-src 'self' blob:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")  # fmt: skip


class Clients:
    """How many streams (event sockets, SSE, overlays) are open, against `[web] max_clients`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


class SecurityHeaders:
    """Adds the headers every answer carries: CSP, no sniffing, no referrer to other sites, no caching of the API."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]  # fmt: skip
                if b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Routes:
    """The app: pages, API routes and streams, given the API and what they need of the daemon."""

    def __init__(self, api, channels, creds: Credentials, web_cfg, overlay_css: Path) -> None:
        self.api = api
        self.channels = channels
        self.creds = creds
        self.cfg = web_cfg
        self.overlay_css = overlay_css
        self.clients = Clients(web_cfg.max_clients)
        self.closing = anyio.Event()  # set at shutdown: streams say goodbye instead of being cut
        self.files = {p.name: p.read_bytes() for p in STATIC.iterdir() if p.suffix in _TYPES}

    def app(self) -> Starlette:
        routes = [
            Route("/", self.index),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/static/{name}", self.static),
            Route("/api", self.verbs),
            Route("/api/events/sse", self.events_sse),
            WebSocketRoute("/api/events", self.events_ws),
            Route("/api/voices/{id}/upload", self.upload, methods=["POST"]),
            Route("/api/voices/{id}/preview.wav", self.preview),
            Route("/api/history/{id:int}.wav", self.history_wav),
            Route("/api/{verb}", self.call, methods=["GET", "POST"]),
            Route("/overlay", self.overlay),
            Route("/overlay/custom.css", self.overlay_custom_css),
            Route("/overlay/{name}", self.overlay_asset),
            WebSocketRoute("/overlay/ws", self.overlay_ws),
            *speech_routes(self),
        ]
        return Starlette(routes=routes)

    # -- who may ------------------------------------------------------------------------------

    @staticmethod
    def admin(conn) -> None:
        role = conn.scope.get("role")
        if role == "overlay":
            raise ApiError("forbidden", "the overlay key can only read the overlay; sign in to control the daemon")
        if role != "admin":
            raise ApiError("unauthorized", "sign in (`ishowttsctl web` prints a login link) or send Authorization: Bearer <token>")

    # -- the API ------------------------------------------------------------------------------

    async def verbs(self, request: Request) -> Response:
        try:
            self.admin(request)
        except ApiError as e:
            return error_response(e)
        return json_response({"verbs": [{"name": v.name, "doc": v.doc, "mutates": v.mutates, "stream": v.stream,
                                         "params": v.params.model_json_schema()} for v in self.api.verbs.values()]})  # fmt: skip

    async def call(self, request: Request) -> Response:
        name = request.path_params["verb"]
        try:
            self.admin(request)
            v = self.api.verbs.get(name)
            if v is None:
                raise ApiError("method_not_found", f"no verb {name!r}; GET /api lists them")
            if v.stream:
                raise ApiError("invalid_request", f"{name} streams: open the WebSocket /api/events or GET /api/events/sse")
            if request.method == "GET":
                if v.mutates:
                    return json_response({"error": {"code": "invalid_request", "message": f"{name} changes state: POST it"}},
                                         405, {"Allow": "POST"})  # fmt: skip
                params: Any = _query_params(request)
            else:
                body = await read_body(request, JSON_LIMIT if name != "voices.upload" else self._upload_limit() * 2)
                try:
                    params = parse_json(body) if body.strip() else {}
                except (ValueError, RecursionError) as e:
                    raise ApiError("parse_error", f"the body is not valid JSON: {e if isinstance(e, ValueError) else 'nested too deeply'}")
            return json_response(await self.api.call(name, params))
        except ApiError as e:
            return error_response(e)
        except Exception as e:  # one bad request must never take the server down
            log.exception("web verb %s failed", name)
            return error_response(ApiError("internal_error", f"{type(e).__name__}: {e}"))

    def _upload_limit(self) -> int:
        return int(self.cfg.upload_max_mb * 1024 * 1024)

    async def upload(self, request: Request) -> Response:
        """A multipart form (file, transcript, engine, language), streamed and cut off at the bound."""
        try:
            self.admin(request)
            limit = self._upload_limit() + 64 * 1024  # the form's own fields and boundaries
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise ApiError("too_large", f"the upload is over {self.cfg.upload_max_mb:g} MB ([web] upload_max_mb)")
            seen = 0

            async def bounded():
                nonlocal seen
                msg = await request.receive()
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise TooLarge
                return msg

            part_limit = self.cfg.transcript_max_chars * 4 + 4096  # a transcript in UTF-8, with room
            try:
                form = await Request(request.scope, bounded).form(max_files=1, max_fields=8, max_part_size=part_limit)
            except TooLarge:
                raise ApiError("too_large", f"the upload is over {self.cfg.upload_max_mb:g} MB ([web] upload_max_mb)") from None
            except Exception as e:  # starlette's own refusals: not multipart, too many parts, a part too long
                if "maximum size" in str(e):
                    raise ApiError("too_large", f"transcript: longer than {self.cfg.transcript_max_chars} characters "
                                   "([web] transcript_max_chars): the words of the recording, nothing more") from None  # fmt: skip
                raise ApiError("invalid_request", f"send a multipart form with file and transcript ({e})") from None
            try:
                file = form.get("file")
                if file is None or isinstance(file, str):
                    raise ApiError("invalid_params", "file: attach the recording as the form field `file`")
                data = await file.read()
                params = {"id": request.path_params["id"], "transcript": str(form.get("transcript") or ""),
                          "audio_b64": base64.b64encode(data).decode()}  # fmt: skip
                for key in ("engine", "language"):
                    if form.get(key):
                        params[key] = str(form.get(key))
            finally:
                await form.close()
            return json_response(await self.api.call("voices.upload", params))
        except ApiError as e:
            return error_response(e)

    async def _audio(self, request: Request, verb: str, params: dict, filename: str) -> Response:
        try:
            self.admin(request)
            r = await self.api.call(verb, params)
        except ApiError as e:
            return error_response(e)
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'} if "download" in request.query_params else None
        return Response(base64.b64decode(r["audio_b64"]), media_type="audio/wav", headers=headers)

    async def history_wav(self, request: Request) -> Response:
        uid = request.path_params["id"]
        return await self._audio(request, "history.audio", {"id": uid}, f"ishowtts-{uid}.wav")

    async def preview(self, request: Request) -> Response:
        params = {"id": request.path_params["id"], **({"text": request.query_params["text"]} if "text" in request.query_params else {})}
        return await self._audio(request, "voices.preview", params, "preview.wav")

    # -- streams ------------------------------------------------------------------------------

    async def _watch(self, names: str | None):
        params = {"events": [n for n in names.split(",") if n]} if names else {}
        return await self.api.call("events.watch", params)

    async def _admit(self, ws: WebSocket, roles: tuple[str, ...], advice: str) -> bool:
        """Refuse a socket without one of `roles`; accept it, then close it if max_clients are open."""
        if ws.scope.get("role") not in roles:
            await ws.close(code=1008, reason=advice)
            return False
        await ws.accept()
        if not self.clients.take():
            await ws.close(code=1013, reason=f"too many clients ([web] max_clients = {self.clients.limit})")
            return False
        return True

    async def events_ws(self, ws: WebSocket) -> None:
        if not await self._admit(ws, ("admin",), "sign in, or send Authorization: Bearer <token>"):
            return
        try:
            try:
                snapshot, stream = await self._watch(ws.query_params.get("events"))
            except ApiError as e:
                await ws.send_text(dumps({"error": {"code": e.code, "message": e.message}}))
                await ws.close(code=1008)
                return
            await ws.send_text(dumps(snapshot))
            await _pump(ws, [stream], self.closing)
        finally:
            self.clients.release()

    async def events_sse(self, request: Request) -> Response:
        try:
            self.admin(request)
            if not self.clients.take():
                raise ApiError("busy", f"too many clients ([web] max_clients = {self.clients.limit})", retry_after=5)
        except ApiError as e:
            return error_response(e)
        try:
            snapshot, stream = await self._watch(request.query_params.get("events"))
        except ApiError as e:
            self.clients.release()
            return error_response(e)

        async def body():
            try:
                yield f"event: status\ndata: {dumps(snapshot)}\n\n"
                while not self.closing.is_set():
                    ev = None
                    with anyio.move_on_after(0.5):  # so that a shutdown ends the stream
                        ev = await stream.__anext__()
                    if ev is not None:
                        yield f"event: {ev['event']}\ndata: {dumps(ev)}\n\n"
            finally:
                self.clients.release()
                await stream.aclose()

        return StreamingResponse(body(), media_type="text/event-stream")

    async def overlay_ws(self, ws: WebSocket) -> None:
        """Overlay events and, with `audio=1` (the default), the browser sink's audio frames."""
        if not await self._admit(ws, ("admin", "overlay"), "add ?key=... (`ishowttsctl web` prints the overlay URL)"):
            return
        try:
            snapshot, events = await self._watch(",".join(OVERLAY_EVENTS))
            sp = snapshot["status"]["speaker"]
            await ws.send_text(dumps({"event": "hello", "speaking": sp.get("speaking"), "paused": sp.get("paused")}))
            streams = [events]
            sub = None
            if ws.query_params.get("audio", "1") != "0":
                channel = self.channels.get("audio." + ws.query_params.get("sink", "browser")[:64])
                sub = channel.subscribe(max_bytes=int(self.cfg.client_backlog_mb * 1024 * 1024))
                streams.append(sub)
            try:
                await _pump(ws, streams, self.closing)
            finally:
                if sub is not None:
                    sub.close()
                    if sub.dropped:
                        log.info("overlay dropped: it fell %.0f MB behind", self.cfg.client_backlog_mb)
        finally:
            self.clients.release()

    # -- pages --------------------------------------------------------------------------------

    def _file(self, name: str, status: int = 200) -> Response:
        return Response(self.files[name], status_code=status, media_type=_TYPES[Path(name).suffix],
                        headers={"Cache-Control": "no-cache"})  # fmt: skip

    async def index(self, request: Request) -> Response:
        if request.scope.get("role") != "admin":
            return RedirectResponse("/login", status_code=303)
        return self._file("index.html")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if request.scope.get("role") != "admin" and name not in _OVERLAY_FILES:
            return error_response(ApiError("unauthorized", "sign in first"))
        if request.scope.get("role") is None or name not in self.files:
            return error_response(ApiError("not_found" if request.scope.get("role") else "unauthorized", f"no file {name[:80]!r}"))
        return self._file(name)

    async def login(self, request: Request) -> Response:
        code = request.query_params.get("code")
        if request.method == "POST":
            try:
                body = await read_body(request, 4096)
            except ApiError:
                body = b""
            code = parse_qs(body.decode("utf-8", "replace")).get("code", [""])[0]
        if code is None:
            return self._login_page("")
        if self.creds.throttled():
            return self._login_page("Too many wrong codes: wait a minute. / 错误次数太多，请一分钟后再试。", 429)
        if not self.creds.redeem(code):
            log.warning("web login refused: a wrong or expired code")
            return self._login_page("This code is wrong, used or expired: run `ishowttsctl web` for a new one. "
                                    "/ 登录码无效或已过期：运行 `ishowttsctl web` 获取新的。", 401)  # fmt: skip
        log.info("web login: a session was granted")
        r = RedirectResponse("/", status_code=303)
        r.set_cookie(SESSION_COOKIE, self.creds.new_session(), max_age=int(self.creds.session_s), httponly=True,
                     samesite="strict", path="/")  # fmt: skip
        return r

    def _login_page(self, error: str, status: int = 200) -> Response:
        page = self.files["login.html"].decode().replace("{{error}}", html.escape(error))
        return Response(page, status_code=status, media_type=_TYPES[".html"])

    async def logout(self, request: Request) -> Response:
        r = RedirectResponse("/login", status_code=303)
        r.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return r

    async def overlay(self, request: Request) -> Response:
        if request.scope.get("role") not in ("admin", "overlay"):
            return Response("Add ?key=... to this address: `ishowttsctl web` prints the overlay URL.\n"
                            "请使用 `ishowttsctl web` 打印的叠加层地址（带 ?key=...）。\n", status_code=401,
                            media_type="text/plain; charset=utf-8")  # fmt: skip
        r = self._file("overlay.html")
        key = request.query_params.get("key")
        if key and self.creds.is_overlay_key(key):  # its assets and stream then need no key in their URLs
            r.set_cookie(OVERLAY_COOKIE, key, max_age=365 * 86400, httponly=True, samesite="strict", path="/")
        return r

    async def overlay_asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if request.scope.get("role") not in ("admin", "overlay"):
            return error_response(ApiError("unauthorized", "add ?key=... to the overlay's address"))
        if name not in _OVERLAY_FILES:
            return error_response(ApiError("not_found", f"no file {name[:80]!r}"))
        return self._file(name)

    async def overlay_custom_css(self, request: Request) -> Response:
        """The streamer's own overlay style ([web] overlay_css), loaded after ours."""
        if request.scope.get("role") not in ("admin", "overlay"):
            return error_response(ApiError("unauthorized", "add ?key=... to the overlay's address"))
        try:
            css = await anyio.to_thread.run_sync(self.overlay_css.read_bytes) if self.overlay_css.is_file() else b""
        except OSError:
            css = b""
        return Response(css[:256 * 1024], media_type=_TYPES[".css"], headers={"Cache-Control": "no-cache"})


def _query_params(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        out[key] = values if len(values) > 1 or key == "classes" else values[0]
    return out


async def _pump(ws: WebSocket, streams: list, closing: anyio.Event) -> None:
    """Send every stream's items until the client leaves, falls behind, a stream ends, or the
    server closes (then the client hears 1001, going away, and reconnects later).

    Dicts go as JSON text, bytes as binary messages. A send that takes over
    `_SEND_TIMEOUT_S` means the client stopped reading: it is dropped."""
    lock = anyio.Lock()

    async def forward(stream) -> None:
        try:
            async for item in stream:
                async with lock:
                    with anyio.fail_after(_SEND_TIMEOUT_S):
                        if isinstance(item, (bytes, bytearray)):
                            await ws.send_bytes(bytes(item))
                        else:
                            await ws.send_text(dumps(item))
        except (TimeoutError, WebSocketDisconnect, OSError, RuntimeError):
            pass  # the client left or stopped reading
        tg.cancel_scope.cancel()  # a stream that ends (a dropped overlay) ends the connection

    async def until_gone() -> None:
        try:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        tg.cancel_scope.cancel()

    async def until_closing() -> None:
        await closing.wait()
        tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(until_gone)
            tg.start_soon(until_closing)
            for s in streams:
                tg.start_soon(forward, s)
    finally:
        with anyio.move_on_after(1, shield=True):
            for s in streams:
                if hasattr(s, "aclose"):
                    await s.aclose()
            try:
                await ws.close(code=1001 if closing.is_set() else 1000)
            except Exception:  # already closed, or stuck: nothing more to say to it
                pass
