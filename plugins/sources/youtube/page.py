"""What YouTube's web pages carry for a chat reader: the watch page's player response and initial
data (is the broadcast live, which chat continuations it offers) and the live_chat page's first
chat batch, plus the ``ytcfg`` settings both carry (the InnerTube API key and client context).

The pages embed JSON as ``var ytInitialPlayerResponse = {...};``, ``var ytInitialData = {...};``
(``window["ytInitialData"] = {...};`` on the chat page) and ``ytcfg.set({...});``. Each object is
read with a real JSON decoder from where its assignment starts, never with a regex over braces.
A page without them has changed shape: :class:`PageChanged` says what is missing. Pure
functions: no I/O, fuzzed by the tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ishowttsd.messages import as_str

_DECODER = json.JSONDecoder()
# a hostile page may repeat a marker many times: each is decoded, so only the first few count
MAX_MARKERS = 50
_CANONICAL = re.compile(r'<link rel="canonical" href="[^"]*?[?&]v=([A-Za-z0-9_-]{11})"')


class PageChanged(ValueError):
    """A page lacks what the web client reads from it: YouTube changed its shape."""


def embedded_json(html: str, name: str) -> dict[str, Any] | None:
    """The object assigned to `name` (``var name = {``, ``window["name"] = {``, ``name = {``)."""
    pattern = re.compile(r"(?:var\s+|window\[\s*[\"']|\b)" + re.escape(name) + r"(?:[\"']\s*\])?\s*=\s*(?=\{)")
    for n, m in enumerate(pattern.finditer(html)):
        if n >= MAX_MARKERS:
            break
        obj = _decode_at(html, m.end())
        if isinstance(obj, dict):
            return obj
    return None


def ytcfg(html: str) -> dict[str, Any]:
    """Every ``ytcfg.set({...})`` of the page merged into one dict (later calls win)."""
    cfg: dict[str, Any] = {}
    for n, m in enumerate(re.finditer(r"ytcfg\.set\s*\(\s*(?=\{)", html)):
        if n >= MAX_MARKERS:
            break
        obj = _decode_at(html, m.end())
        if isinstance(obj, dict):
            cfg.update(obj)
    return cfg


def _decode_at(html: str, at: int) -> Any:
    try:
        return _DECODER.raw_decode(html, at)[0]
    except (ValueError, RecursionError):
        return None


def dig(obj: Any, *path: str | int) -> Any:
    """obj[path[0]][path[1]]... or None where the shape differs (untrusted JSON)."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or not -len(obj) <= key < len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[key] if isinstance(key, int) else obj.get(key)
    return obj


@dataclass
class Client:
    """What get_live_chat needs from a page: the InnerTube API key and the client context."""

    api_key: str = ""
    context: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any], hl: str) -> Client | None:
        context = cfg.get("INNERTUBE_CONTEXT")
        version = as_str(cfg.get("INNERTUBE_CLIENT_VERSION") or cfg.get("INNERTUBE_CONTEXT_CLIENT_VERSION"))
        if not isinstance(context, dict) or not isinstance(context.get("client"), dict):
            if not version:
                return None
            context = {"client": {"clientName": "WEB", "clientVersion": version}}
        context = json.loads(json.dumps(context))  # our own copy
        context["client"].setdefault("hl", hl)
        return cls(as_str(cfg.get("INNERTUBE_API_KEY")), context)


@dataclass
class WatchPage:
    """A watch page (or, for /@name/live of a channel that is not live, the channel page)."""

    video_id: str = ""
    title: str = ""
    channel_id: str = ""
    live: bool = False
    upcoming: bool = False
    status: str = ""  # playabilityStatus.status: OK, ERROR, LOGIN_REQUIRED, UNPLAYABLE...
    reason: str = ""  # why it cannot be played, in YouTube's words
    chats: dict[str, str] = field(default_factory=dict)  # "live"/"top" -> reload continuation
    client: Client | None = None

    @property
    def is_video(self) -> bool:
        return bool(self.video_id)


def watch_page(html: str, hl: str = "en") -> WatchPage:
    """Read a watch page. A channel page (no player response) reads as a page with no video.
    Raises PageChanged when neither the player response nor the initial data is there."""
    player = embedded_json(html, "ytInitialPlayerResponse")
    data = embedded_json(html, "ytInitialData")
    if player is None and data is None:
        raise PageChanged("the page carries neither ytInitialPlayerResponse nor ytInitialData")
    page = WatchPage(client=Client.from_cfg(ytcfg(html), hl))
    if player is None:
        return page  # a channel page: /@name/live of a channel that is not live
    details = player.get("videoDetails") if isinstance(player.get("videoDetails"), dict) else {}
    playability = player.get("playabilityStatus") if isinstance(player.get("playabilityStatus"), dict) else {}
    m = _CANONICAL.search(html)
    page.video_id = as_str(details.get("videoId")) or (m.group(1) if m else "")
    page.title = as_str(details.get("title"))[:200]
    page.channel_id = as_str(details.get("channelId"))
    now = dig(player, "microformat", "playerMicroformatRenderer", "liveBroadcastDetails", "isLiveNow")
    page.live = details.get("isLive") is True or now is True
    page.upcoming = details.get("isUpcoming") is True
    page.status = as_str(playability.get("status"))
    page.reason = as_str(playability.get("reason"))[:200]
    chat = dig(data, "contents", "twoColumnWatchNextResults", "conversationBar", "liveChatRenderer")
    if isinstance(chat, dict) and chat.get("isReplay") is not True:
        page.chats = _chat_continuations(chat)
    return page


def _chat_continuations(chat: dict[str, Any]) -> dict[str, str]:
    """The reload continuations of the chat views: YouTube lists Top chat first, then Live chat
    (every message); the titles are localized, the order is not."""
    out: dict[str, str] = {}
    items = dig(chat, "header", "liveChatHeaderRenderer", "viewSelector", "sortFilterSubMenuRenderer", "subMenuItems")
    if isinstance(items, list):
        tokens = [as_str(dig(i, "continuation", "reloadContinuationData", "continuation")) for i in items[:2]]
        if len(tokens) == 2 and all(tokens):
            out["top"], out["live"] = tokens
    default = as_str(dig(chat, "continuations", 0, "reloadContinuationData", "continuation"))
    if default:
        out.setdefault("top", default)
        out.setdefault("live", default)
    return out


@dataclass
class ChatPage:
    """The live_chat page: the first liveChatContinuation (recent history and the next token)."""

    continuation: dict[str, Any]
    client: Client | None


def chat_page(html: str, hl: str = "en") -> ChatPage:
    """Read the live_chat page. Raises PageChanged when its initial data has no chat."""
    data = embedded_json(html, "ytInitialData")
    if data is None:
        raise PageChanged("the live_chat page carries no ytInitialData")
    lcc = dig(data, "continuationContents", "liveChatContinuation")
    if not isinstance(lcc, dict):
        raise PageChanged("the live_chat page's ytInitialData has no continuationContents.liveChatContinuation")
    return ChatPage(lcc, Client.from_cfg(ytcfg(html), hl))
