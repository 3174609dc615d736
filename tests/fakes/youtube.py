"""A fake YouTube on loopback: the web pages and InnerTube endpoints the web client reads chat
with, and the Data API v3 routes, in their real shapes.

- ``GET /@handle/live``, ``/channel/UC.../live``: the watch page of the channel's live stream,
  or its channel page when it is not live; ``GET /watch?v=ID``: a watch page (live, ended, or
  "Video unavailable"). Watch pages carry ``ytcfg.set({...})`` (INNERTUBE_API_KEY and
  INNERTUBE_CONTEXT), ``var ytInitialPlayerResponse = {...};`` and ``var ytInitialData = {...};``
  with the chat's reload continuations (Top chat, Live chat).
- ``GET /live_chat?continuation=...``: the chat frame, ``window["ytInitialData"]`` holding the
  first liveChatContinuation (recent history and an invalidation continuation with timeoutMs).
- ``POST /youtubei/v1/live_chat/get_live_chat?key=...``: checks the key, the client context and
  that the continuation is the one it issued last; answers the actions pushed since, a new
  continuation, and, once the stream ended, a liveChatContinuation with no continuation.
- ``GET /youtube/v3/videos`` and ``/youtube/v3/liveChat/messages``: the Data API, checking the
  ``x-goog-api-key`` header, with its error bodies (quotaExceeded, liveChatEnded, a bad key).

``faults`` scripts what goes wrong, per route, one entry per request: an HTTP status (429 with
Retry-After, 5xx), "drop" (the connection closes with no answer), "junk" (not JSON), "hostile"
(JSON nested 100 000 deep), "huge" (50 MB streamed with no length), "huge_declared" (a
Content-Length of 50 MB), "changed" (a page without its embedded data), "loop" (the same
continuation and the same actions again), "quota" (Data API quotaExceeded).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

HUGE = 50 * 1024 * 1024
_ids = itertools.count(1)


def _usec() -> str:
    return str(time.time_ns() // 1000)


@dataclass
class Request:
    at: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    fault: Any = None  # what the script made of this request


@dataclass
class Video:
    video_id: str
    title: str
    live: bool = True
    chat: bool = True
    chat_closed: bool = False  # live, but its chat hands out no continuation
    history: list[dict] = field(default_factory=list)  # actions said before the chat frame first opened
    pending: list[dict] = field(default_factory=list)  # actions for the next get_live_chat
    delivered: list[dict] = field(default_factory=list)  # what chat showed since (a frame opened later shows it)
    last: list[dict] = field(default_factory=list)  # the last answer that had actions (for "loop")
    issued: str = ""  # the continuation handed out last
    api_history: list[dict] = field(default_factory=list)
    api_pending: list[dict] = field(default_factory=list)
    api_issued: str = ""

    @property
    def live_chat_id(self) -> str:
        return f"Cg0KC{self.video_id}KicKGFVD"


@dataclass
class FakeYouTube:
    handle: str = "@fakestreamer"
    channel_id: str = "UCfakeChannel0000000000a"
    innertube_key: str = "AIzaSyFAKEinnertubeKEY000000000000000000"
    client_version: str = "2.20250101.01.00"
    data_api_key: str = "data-api-key-3f9c27"
    timeout_ms: int = 300
    api_interval_ms: int = 300
    retry_after: str = "1"
    faults: dict[str, list[Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    videos: dict[str, Video] = field(default_factory=dict)
    current: str | None = None  # the channel's live video

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self.port = 0
        self.context_errors: list[str] = []
        self.huge_sent = 0  # bytes of the last "huge" answer written before the client hung up
        self._handlers: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._http, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # a client cancelled mid-request leaves its handler waiting: end each, closing its socket
            # (a connection accepted just now gets its handler on the next turns of the loop)
            for _ in range(10):
                await asyncio.sleep(0.01)
                if not self._handlers:
                    break
                for task in list(self._handlers):
                    task.cancel()
                await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base}/youtube/v3"

    # -- scripting ---------------------------------------------------------------------------

    def start_stream(self, video_id: str, title: str = "Live now", history: list[dict] | None = None,
                     api_history: list[dict] | None = None) -> Video:  # fmt: skip
        v = Video(video_id, title, history=list(history or []), api_history=list(api_history or []))
        self.videos[video_id] = v
        self.current = video_id
        return v

    def end_stream(self) -> None:
        if self.current:
            self.videos[self.current].live = False
        self.current = None

    def push(self, *actions: dict) -> None:
        """Actions for the live video's next get_live_chat."""
        assert self.current, "no stream is live"
        self.videos[self.current].pending.extend(actions)

    def push_api(self, *items: dict) -> None:
        """liveChatMessage resources for the live video's next Data API list."""
        assert self.current, "no stream is live"
        self.videos[self.current].api_pending.extend(items)

    def fault(self, route: str, *what: Any) -> None:
        self.faults.setdefault(route, []).extend(what)

    def polls(self, route: str = "/youtubei/v1/live_chat/get_live_chat") -> list[Request]:
        return [r for r in self.requests if r.path == route]

    # -- HTTP --------------------------------------------------------------------------------

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            url = urllib.parse.urlsplit(target)
            query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            req = Request(time.monotonic(), method, urllib.parse.unquote(url.path), query, headers, body)
            self.requests.append(req)
            route = self._route_name(req)
            queue = self.faults.get(route) or []
            fault = req.fault = queue.pop(0) if queue else None
            if fault == "drop":
                writer.transport.abort()
                return
            if fault in ("huge", "huge_declared"):
                await self._huge(writer, declared=fault == "huge_declared")
                return
            status, ctype, data, extra = self._answer(req, route, fault)
            head_out = f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
            head_out += "".join(f"{k}: {v}\r\n" for k, v in extra.items()) + "Connection: close\r\n\r\n"
            writer.write(head_out.encode() + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()  # the socket is really closed before the loop may end
            except (ConnectionError, OSError):
                pass
            self._handlers.discard(task)

    async def _huge(self, writer: asyncio.StreamWriter, declared: bool) -> None:
        length = f"Content-Length: {HUGE}\r\n" if declared else ""
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n".encode())
        chunk = b'{"padding": "' + b"x" * (64 * 1024)
        self.huge_sent = 0
        try:
            while self.huge_sent < HUGE:
                writer.write(chunk)
                await writer.drain()
                self.huge_sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass

    @staticmethod
    def _route_name(req: Request) -> str:
        p = req.path
        if p.endswith("/live") or p == "/watch":
            return "watch"
        return {"/live_chat": "live_chat", "/youtubei/v1/live_chat/get_live_chat": "get_live_chat",
                "/youtube/v3/videos": "videos", "/youtube/v3/liveChat/messages": "messages"}.get(p, p)  # fmt: skip

    def _answer(self, req: Request, route: str, fault: Any) -> tuple[int, str, bytes, dict[str, str]]:
        if isinstance(fault, int):
            extra = {"Retry-After": self.retry_after} if fault == 429 else {}
            if route in ("videos", "messages", "get_live_chat"):
                return fault, "application/json", _json(_api_error(fault, "rateLimitExceeded" if fault == 429
                                                                   else "backendError")), extra  # fmt: skip
            return fault, "text/html", b"<html><body>Error</body></html>", extra
        if fault == "junk":
            return 200, "application/json", b"<html>this is not json {", {}
        if fault == "hostile":
            return 200, "application/json", b"[" * 100_000 + b"]" * 100_000, {}
        if fault == "quota":
            return 403, "application/json", _json(_api_error(403, "quotaExceeded", "The request cannot be completed "
                                                             "because you have exceeded your quota.")), {}  # fmt: skip
        if route == "watch":
            return 200, "text/html; charset=utf-8", self._watch(req, fault).encode(), {}
        if route == "live_chat":
            return 200, "text/html; charset=utf-8", self._chat_frame(req, fault).encode(), {}
        if route == "get_live_chat":
            status, payload = self._get_live_chat(req, fault)
            return status, "application/json", _json(payload), {}
        if route in ("videos", "messages"):
            status, payload = self._data_api(req, route)
            return status, "application/json", _json(payload), {}
        return 404, "text/html", b"<html>404</html>", {}

    # -- the web pages ----------------------------------------------------------------------

    def _cfg(self) -> dict:
        return {"INNERTUBE_API_KEY": self.innertube_key, "INNERTUBE_CLIENT_VERSION": self.client_version,
                "INNERTUBE_CONTEXT": {"client": {"hl": "en", "gl": "US", "clientName": "WEB",
                                                 "clientVersion": self.client_version, "platform": "DESKTOP"},
                                      "user": {"lockedSafetyMode": False}, "request": {"useSsl": True}},
                "INNERTUBE_CONTEXT_CLIENT_NAME": 1, "VISITOR_DATA": "CgtGYWtlVmlzaXRvcg%3D%3D"}  # fmt: skip

    def _watch(self, req: Request, fault: Any) -> str:
        if fault == "changed":
            return "<!DOCTYPE html><html><head><title>YouTube</title></head><body><div id=app></div></body></html>"
        p = req.path
        video: Video | None = None
        if p in (f"/{self.handle}/live", f"/channel/{self.channel_id}/live"):
            if self.current is None:
                return self._channel_page()
            video = self.videos[self.current]
        elif p == "/watch":
            video = self.videos.get(req.query.get("v", ""))
            if video is None:
                return _page(self._cfg(), player={"playabilityStatus": {"status": "ERROR", "reason": "Video unavailable"}},
                             data={"contents": {}})  # fmt: skip
        else:
            return "<html>404 Not Found</html>"
        return self._watch_page(video)

    def _channel_page(self) -> str:
        data = {"header": {"pageHeaderRenderer": {"pageTitle": "Fake Streamer"}},
                "metadata": {"channelMetadataRenderer": {"title": "Fake Streamer", "externalId": self.channel_id}},
                "contents": {"twoColumnBrowseResultsRenderer": {"tabs": []}}}  # fmt: skip
        return _page(self._cfg(), data=data, canonical=f"https://www.youtube.com/channel/{self.channel_id}")

    def _watch_page(self, v: Video) -> str:
        details = {"videoId": v.video_id, "title": v.title, "lengthSeconds": "0", "isLive": v.live or None,
                   "channelId": self.channel_id, "isOwnerViewing": False, "author": "Fake Streamer",
                   "isLiveContent": True}  # fmt: skip
        details = {k: x for k, x in details.items() if x is not None}
        player = {
            "responseContext": {"serviceTrackingParams": []},
            "playabilityStatus": {"status": "OK", "playableInEmbed": True,
                                  **({"liveStreamability": {"liveStreamabilityRenderer": {"videoId": v.video_id}}}
                                     if v.live else {})},
            "videoDetails": details,
            "microformat": {"playerMicroformatRenderer": {"liveBroadcastDetails": {
                "isLiveNow": v.live, "startTimestamp": "2025-01-01T10:00:00+00:00"}}},
        }  # fmt: skip
        chat: dict[str, Any] = {"isReplay": not v.live}
        if v.live and v.chat:
            chat.update({
                "continuations": [{"reloadContinuationData": {"continuation": f"reload-{v.video_id}-top",
                                                              "clickTrackingParams": "CAEQl98BIhMI"}}],
                "header": {"liveChatHeaderRenderer": {"viewSelector": {"sortFilterSubMenuRenderer": {"subMenuItems": [
                    {"title": "Top chat", "selected": True, "continuation": {"reloadContinuationData": {
                        "continuation": f"reload-{v.video_id}-top"}}, "subtitle": "Some messages may not show"},
                    {"title": "Live chat", "selected": False, "continuation": {"reloadContinuationData": {
                        "continuation": f"reload-{v.video_id}-live"}}, "subtitle": "All messages are visible"},
                ]}}}},
            })  # fmt: skip
        data = {"contents": {"twoColumnWatchNextResults": {
            "results": {"results": {"contents": [{"videoPrimaryInfoRenderer": {"title": {"runs": [{"text": v.title}]}}}]}},
            **({"conversationBar": {"liveChatRenderer": chat}} if v.chat else {}),
        }}}  # fmt: skip
        return _page(self._cfg(), player=player, data=data, canonical=f"https://www.youtube.com/watch?v={v.video_id}")

    def _video_for_reload(self, token: str) -> tuple[Video | None, str]:
        for v in self.videos.values():
            for mode in ("top", "live"):
                if token == f"reload-{v.video_id}-{mode}":
                    return v, mode
        return None, ""

    def _issue(self, v: Video) -> str:
        v.issued = f"0ofMyAN{v.video_id}{next(_ids):08d}%3D"
        return v.issued

    def _continuation(self, v: Video, actions: list[dict]) -> dict:
        lcc: dict[str, Any] = {"actions": actions} if actions else {}
        if v.live and not v.chat_closed:
            lcc["continuations"] = [{"invalidationContinuationData": {
                "invalidationId": {"objectSource": 1056, "objectId": "Y2hhdH4", "topic": f"chat~{v.video_id}~1",
                                   "subscribeToGcmTopics": True, "protoCreationTimestampMs": str(int(time.time() * 1000))},
                "timeoutMs": self.timeout_ms, "continuation": self._issue(v)}}]  # fmt: skip
        return lcc

    def _chat_frame(self, req: Request, fault: Any) -> str:
        if fault == "changed":
            return "<html><body>chat moved</body></html>"
        v, _mode = self._video_for_reload(req.query.get("continuation", ""))
        if v is None:
            return "<html><body>Sorry, live chat is currently unavailable</body></html>"
        # like YouTube, the frame shows the recent chat: what was said before, and what was posted
        # while no client was polling
        recent = (v.history + v.delivered + v.pending)[-100:]
        v.delivered += v.pending
        v.pending = []
        lcc = self._continuation(v, recent)
        lcc.update({"actionPanel": {"liveChatMessageInputRenderer": {}}, "trackingParams": "CAEQl98BIhMI",
                    "emojis": [], "viewerName": ""})  # fmt: skip
        data = {"responseContext": {"mainAppWebResponseContext": {"loggedOut": True}},
                "continuationContents": {"liveChatContinuation": lcc}}  # fmt: skip
        return _page(self._cfg(), data=data, window=True)

    def _get_live_chat(self, req: Request, fault: Any) -> tuple[int, dict]:
        try:
            body = json.loads(req.body)
        except ValueError:
            return 400, _api_error(400, "badRequest")
        client = (body.get("context") or {}).get("client") or {}
        why = None
        if req.query.get("key") != self.innertube_key:
            why = "wrong key"
        elif client.get("clientName") != "WEB" or client.get("clientVersion") != self.client_version:
            why = f"wrong client context {client}"
        v = next((x for x in self.videos.values() if x.issued and x.issued == body.get("continuation")), None)
        if why is None and v is None:
            why = f"unknown or stale continuation {body.get('continuation')!r}"
        if why:
            self.context_errors.append(why)
            return 400, _api_error(400, "badRequest", "Request contains an invalid argument.")
        assert v is not None
        if fault == "loop":  # the same continuation and the same actions again
            lcc = {"actions": list(v.last), "continuations": [{"invalidationContinuationData": {
                "timeoutMs": self.timeout_ms, "continuation": v.issued}}]}  # fmt: skip
        else:
            actions, v.pending = v.pending, []
            lcc = self._continuation(v, actions)
            v.delivered += actions
            v.last = actions or v.last
        return 200, {"responseContext": {"serviceTrackingParams": [], "mainAppWebResponseContext": {"loggedOut": True}},
                     "continuationContents": {"liveChatContinuation": lcc}}  # fmt: skip

    # -- the Data API -------------------------------------------------------------------------

    def _data_api(self, req: Request, route: str) -> tuple[int, dict]:
        if req.headers.get("x-goog-api-key") != self.data_api_key or "key" in req.query:
            err = _api_error(400, "badRequest", "API key not valid. Please pass a valid API key.")
            err["error"]["status"] = "INVALID_ARGUMENT"
            return 400, err
        if route == "videos":
            items = []
            for vid in req.query.get("id", "").split(","):
                v = self.videos.get(vid)
                if v is None:
                    continue
                details: dict[str, Any] = {"actualStartTime": "2025-01-01T10:00:00Z"}
                if v.live:
                    details.update(activeLiveChatId=v.live_chat_id, concurrentViewers="42")
                else:
                    details["actualEndTime"] = "2025-01-01T12:00:00Z"
                items.append({"kind": "youtube#video", "etag": "e", "id": vid, "liveStreamingDetails": details,
                              "snippet": {"title": v.title, "channelId": self.channel_id,
                                          "liveBroadcastContent": "live" if v.live else "none"}})  # fmt: skip
            return 200, {"kind": "youtube#videoListResponse", "etag": "e", "items": items,
                         "pageInfo": {"totalResults": len(items), "resultsPerPage": len(items)}}  # fmt: skip
        chat_id = req.query.get("liveChatId", "")
        v = next((x for x in self.videos.values() if x.live_chat_id == chat_id), None)
        if v is None:
            return 404, _api_error(404, "liveChatNotFound", "The live chat that you are trying to retrieve cannot be found.")
        if not v.live:
            return 403, _api_error(403, "liveChatEnded", "The specified live chat is no longer live.")
        token = req.query.get("pageToken")
        if token is None:
            items = list(v.api_history)
        elif token == v.api_issued:
            items, v.api_pending = v.api_pending, []
        else:
            return 400, _api_error(400, "pageTokenInvalid", "The request specifies an invalid page token.")
        v.api_issued = f"GPQ{next(_ids):08d}"
        return 200, {"kind": "youtube#liveChatMessageListResponse", "etag": "e", "pollingIntervalMillis": self.api_interval_ms,
                     "pageInfo": {"totalResults": len(items), "resultsPerPage": len(items)},
                     "nextPageToken": v.api_issued, "items": items}  # fmt: skip


async def run_source(tmp_path: Any, until: Any, timeout: float = 30.0, **settings: Any) -> Any:
    """Run a YouTube source in this event loop (no daemon) until `until(source)` holds; returns
    the source, closed. `settings` are its table's keys."""
    import anyio

    from ishowttsd.builtin_plugins.sources.youtube import YouTubeSource
    from ishowttsd.config import Config
    from ishowttsd.events import EventBus
    from ishowttsd.source import SourceContext

    ctx = SourceContext(lambda s, m: None, lambda s, d: None, EventBus(), Config(), tmp_path)
    src = YouTubeSource(YouTubeSource.Settings(type="youtube", **settings), ctx)
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(src.run)
            while not until(src):
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    await src.close()
    return src


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _api_error(code: int, reason: str, message: str = "error") -> dict:
    return {"error": {"code": code, "message": message,
                      "errors": [{"message": message, "domain": "youtube.liveChat", "reason": reason}]}}  # fmt: skip


def _page(cfg: dict, player: dict | None = None, data: dict | None = None, canonical: str = "", window: bool = False) -> str:
    """An HTML page with YouTube's embedded JSON, as youtube.com serves it."""
    out = ['<!DOCTYPE html><html lang="en" system-icons typography><head><meta charset="utf-8">']
    if canonical:
        out.append(f'<link rel="canonical" href="{canonical}">')
    out.append(f'<script nonce="n1">ytcfg.set({{"CLIENT_CANARY_STATE": "none", "DEVICE": "cbr=Chrome"}});</script>')
    out.append(f'<script nonce="n1">window.ytcfg.set = window.ytcfg.set || function() {{}};ytcfg.set({json.dumps(cfg)});'
               "window.ytcfg.obfuscatedData_ = [];</script>")  # fmt: skip
    out.append("</head><body>")
    if player is not None:
        out.append(f'<script nonce="n1">var ytInitialPlayerResponse = {json.dumps(player, ensure_ascii=False)};'
                   "var meta = document.createElement('meta');</script>")  # fmt: skip
    if data is not None:
        assign = 'window["ytInitialData"]' if window else "var ytInitialData"
        out.append(f'<script nonce="n1">{assign} = {json.dumps(data, ensure_ascii=False)};</script>')
    out.append("</body></html>")
    return "".join(out)


# -- InnerTube actions, as get_live_chat sends them ----------------------------------------------


def _photo() -> dict:
    return {"thumbnails": [{"url": "https://yt4.ggpht.com/ytc/photo=s32-c-k", "width": 32, "height": 32},
                           {"url": "https://yt4.ggpht.com/ytc/photo=s64-c-k", "width": 64, "height": 64}]}  # fmt: skip


def badge(kind: str, tooltip: str = "") -> dict:
    """An author badge: "owner", "moderator", "verified", or "member" (with its tooltip)."""
    if kind == "member":
        return {"liveChatAuthorBadgeRenderer": {"customThumbnail": {"thumbnails": [
            {"url": "https://yt3.ggpht.com/badge=s16-c-k", "width": 16, "height": 16}]},
            "tooltip": tooltip or "Member (6 months)", "accessibility": {"accessibilityData": {"label": tooltip}}}}  # fmt: skip
    icon = {"owner": "OWNER", "moderator": "MODERATOR", "verified": "VERIFIED"}[kind]
    return {"liveChatAuthorBadgeRenderer": {"icon": {"iconType": icon}, "tooltip": kind.capitalize(),
                                            "accessibility": {"accessibilityData": {"label": kind.capitalize()}}}}  # fmt: skip


def emoji(shortcut: str, custom: bool = True, eid: str = "") -> dict:
    """An emoji run: a channel's custom emoji (a picture) or a standard one (`eid`, its Unicode)."""
    e: dict[str, Any] = {"emojiId": eid or f"UCfakeChannel0000000000a/{shortcut.strip(':')}", "shortcuts": [shortcut],
                         "searchTerms": [shortcut.strip(":")],
                         "image": {"thumbnails": [{"url": "https://yt3.ggpht.com/emoji=w24-h24", "width": 24, "height": 24}],
                                   "accessibility": {"accessibilityData": {"label": shortcut.strip(":_")}}}}  # fmt: skip
    if custom:
        e["isCustomEmoji"] = True
    return {"emoji": e}


def _runs(parts: tuple[str | dict, ...]) -> dict:
    return {"runs": [p if isinstance(p, dict) else {"text": p} for p in parts]}


def _author(name: str, channel_id: str, badges: tuple[dict, ...] | list[dict]) -> dict:
    d: dict[str, Any] = {"authorName": {"simpleText": name}, "authorPhoto": _photo(), "authorExternalChannelId": channel_id}
    if badges:
        d["authorBadges"] = list(badges)
    return d


def _add(renderer: str, body: dict) -> dict:
    return {"clickTrackingParams": "CAEQl98BIhMI", "addChatItemAction": {"item": {renderer: body},
                                                                          "clientId": f"CL{next(_ids)}"}}  # fmt: skip


def _menu() -> dict:
    return {"contextMenuEndpoint": {"commandMetadata": {"webCommandMetadata": {"ignoreNavigation": True}},
                                    "liveChatItemContextMenuEndpoint": {"params": "Q2g0S0hB"}},
            "contextMenuAccessibility": {"accessibilityData": {"label": "Chat actions"}}}  # fmt: skip


def text_message(msg_id: str, name: str, channel_id: str, *parts: str | dict, badges: tuple[dict, ...] = (),
                 usec: str | None = None) -> dict:  # fmt: skip
    return _add("liveChatTextMessageRenderer", {"message": _runs(parts), **_author(name, channel_id, badges),
                                                "id": msg_id, "timestampUsec": usec or _usec(), **_menu()})  # fmt: skip


def _paid_body(msg_id: str, name: str, channel_id: str, amount: str, badges: tuple[dict, ...]) -> dict:
    return {"id": msg_id, "timestampUsec": _usec(), **_author(name, channel_id, badges),
            "purchaseAmountText": {"simpleText": amount}, "headerBackgroundColor": 4278239141,
            "headerTextColor": 4278190080, "bodyBackgroundColor": 4280150454, "bodyTextColor": 4278190080,
            "authorNameTextColor": 2315255808, "timestampColor": 2147483648, **_menu()}  # fmt: skip


def paid_message(msg_id: str, name: str, channel_id: str, amount: str, *parts: str | dict,
                 badges: tuple[dict, ...] = ()) -> dict:  # fmt: skip
    body = _paid_body(msg_id, name, channel_id, amount, badges)
    if parts:
        body["message"] = _runs(parts)
    return _add("liveChatPaidMessageRenderer", body)


def paid_sticker(msg_id: str, name: str, channel_id: str, amount: str, label: str) -> dict:
    body = _paid_body(msg_id, name, channel_id, amount, ())
    body.update(sticker={"thumbnails": [{"url": "//lh3.googleusercontent.com/sticker=s40-rp", "width": 40, "height": 40}],
                         "accessibility": {"accessibilityData": {"label": label}}},
                stickerDisplayWidth=40, stickerDisplayHeight=40, moneyChipBackgroundColor=4280191205,
                moneyChipTextColor=4294967295, backgroundColor=4279592384)  # fmt: skip
    return _add("liveChatPaidStickerRenderer", body)


def ticker_for(action: dict) -> dict:
    """The ticker item YouTube sends along with a paid or membership item (it repeats it)."""
    (renderer, body), = action["addChatItemAction"]["item"].items()
    return {"clickTrackingParams": "CAEQl98BIhMI", "addLiveChatTickerItemAction": {"item": {
        "liveChatTickerPaidMessageItemRenderer": {"id": body["id"], "amountText": body.get("purchaseAmountText", {}),
                                                  "durationSec": 120, "fullDurationSec": 120,
                                                  "showItemEndpoint": {"showLiveChatItemEndpoint": {"renderer": {renderer: body}}},
                                                  "authorExternalChannelId": body["authorExternalChannelId"]}},
        "durationSec": "120"}}  # fmt: skip


def new_member(msg_id: str, name: str, channel_id: str, level: str | None = None) -> dict:
    sub = {"runs": [{"text": "Welcome to "}, {"text": level}, {"text": "!"}]} if level else {"runs": [{"text": "New member"}]}
    return _add("liveChatMembershipItemRenderer", {"id": msg_id, "timestampUsec": _usec(), "headerSubtext": sub,
                                                   **_author(name, channel_id, [badge("member", "New member")]),
                                                   **_menu()})  # fmt: skip


def milestone(msg_id: str, name: str, channel_id: str, months: int, level: str, *comment: str | dict) -> dict:
    body = {"id": msg_id, "timestampUsec": _usec(),
            "headerPrimaryText": {"runs": [{"text": "Member for "}, {"text": str(months)}, {"text": " months"}]},
            "headerSubtext": {"simpleText": level},
            **_author(name, channel_id, [badge("member", f"Member ({months} months)")]), **_menu()}  # fmt: skip
    if comment:
        body["message"] = _runs(comment)
    else:
        body["empty"] = True
    return _add("liveChatMembershipItemRenderer", body)


def gift_purchase(msg_id: str, name: str, channel_id: str, count: int, channel_name: str = "Fake Streamer") -> dict:
    header = {"liveChatSponsorshipsHeaderRenderer": {
        "authorName": {"simpleText": name}, "authorPhoto": _photo(),
        "primaryText": {"runs": [{"text": "Gifted ", "bold": True}, {"text": str(count), "bold": True},
                                 {"text": f" {channel_name} memberships", "bold": True}]},
        "image": {"thumbnails": [{"url": "https://www.gstatic.com/youtube/img/sponsorships/gift.png"}]}, **_menu()}}  # fmt: skip
    return _add("liveChatSponsorshipsGiftPurchaseAnnouncementRenderer",
                {"id": msg_id, "timestampUsec": _usec(), "authorExternalChannelId": channel_id, "header": header})  # fmt: skip


def gift_redemption(msg_id: str, name: str, channel_id: str, gifter: str) -> dict:
    return _add("liveChatSponsorshipsGiftRedemptionAnnouncementRenderer", {
        "id": msg_id, "timestampUsec": _usec(), **_author(name, channel_id, ()),
        "message": {"runs": [{"text": "received a gift membership by ", "italics": True}, {"text": gifter, "bold": True}]}})  # fmt: skip


def engagement(text: str) -> dict:
    return _add("liveChatViewerEngagementMessageRenderer", {"id": f"eng{next(_ids)}", "timestampUsec": _usec(),
                                                            "icon": {"iconType": "YOUTUBE_ROUND"},
                                                            "message": {"runs": [{"text": text}]}})  # fmt: skip


def mark_deleted(msg_id: str) -> dict:
    return {"clickTrackingParams": "CAEQl98BIhMI", "markChatItemAsDeletedAction": {
        "deletedStateMessage": {"runs": [{"text": "[message retracted]"}]}, "targetItemId": msg_id}}


def mark_author_deleted(channel_id: str) -> dict:
    return {"clickTrackingParams": "CAEQl98BIhMI", "markChatItemsByAuthorAsDeletedAction": {
        "deletedStateMessage": {"runs": [{"text": "[message deleted]"}]}, "externalChannelId": channel_id}}


def remove_item(msg_id: str) -> dict:
    return {"clickTrackingParams": "CAEQl98BIhMI", "removeChatItemAction": {"targetItemId": msg_id}}


def remove_by_author(channel_id: str) -> dict:
    return {"clickTrackingParams": "CAEQl98BIhMI", "removeChatItemByAuthorAction": {"externalChannelId": channel_id}}


# -- Data API liveChatMessage resources ------------------------------------------------------------


def _api(msg_id: str, kind: str, channel_id: str, name: str, details: dict, display: str = "", *, owner: bool = False,
         moderator: bool = False, member: bool = False) -> dict:  # fmt: skip
    snippet = {"type": kind, "liveChatId": "chat", "authorChannelId": channel_id, "publishedAt": "2025-01-01T10:00:00Z",
               "hasDisplayContent": True, "displayMessage": display, **details}  # fmt: skip
    return {"kind": "youtube#liveChatMessage", "etag": "e", "id": msg_id, "snippet": snippet,
            "authorDetails": {"channelId": channel_id, "channelUrl": f"http://www.youtube.com/channel/{channel_id}",
                              "displayName": name, "profileImageUrl": "https://yt3.ggpht.com/p", "isVerified": False,
                              "isChatOwner": owner, "isChatSponsor": member, "isChatModerator": moderator}}  # fmt: skip


def api_text(msg_id: str, name: str, channel_id: str, text: str, **roles: bool) -> dict:
    return _api(msg_id, "textMessageEvent", channel_id, name, {"textMessageDetails": {"messageText": text}}, text, **roles)


def api_superchat(msg_id: str, name: str, channel_id: str, micros: int, currency: str, display: str, comment: str) -> dict:
    return _api(msg_id, "superChatEvent", channel_id, name, {"superChatDetails": {
        "amountMicros": str(micros), "currency": currency, "amountDisplayString": display, "userComment": comment,
        "tier": 2}}, f"{display} from {name}: {comment}")  # fmt: skip


def api_new_sponsor(msg_id: str, name: str, channel_id: str, level: str) -> dict:
    return _api(msg_id, "newSponsorEvent", channel_id, name, {"newSponsorDetails": {"memberLevelName": level,
                                                                                    "isUpgrade": False}}, member=True)  # fmt: skip


def api_deleted(msg_id: str, target: str, moderator_channel: str) -> dict:
    return _api(msg_id, "messageDeletedEvent", moderator_channel, "Mod", {"messageDeletedDetails": {
        "deletedMessageId": target}}, moderator=True)  # fmt: skip


def api_banned(msg_id: str, banned_channel: str, moderator_channel: str, temporary: bool = False) -> dict:
    details = {"banType": "temporary" if temporary else "permanent",
               "bannedUserDetails": {"channelId": banned_channel, "displayName": "banned"}}  # fmt: skip
    if temporary:
        details["banDurationSeconds"] = "300"
    return _api(msg_id, "userBannedEvent", moderator_channel, "Mod", {"userBannedDetails": details}, moderator=True)
