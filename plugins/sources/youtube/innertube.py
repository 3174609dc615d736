"""The web client's route to live chat, with no API key of ours: what youtube.com itself does.

1. The page that shows the broadcast (``/@name/live``, ``/channel/UC.../live`` or
   ``/watch?v=ID``): its player response says whether the video is live, its initial data
   holds the chat's reload continuations (Top chat, Live chat) and its ``ytcfg`` the InnerTube
   API key and client context. A channel that is not live serves its channel page instead.
2. ``/live_chat?continuation=...`` (the chat frame): the first batch of recent messages and the
   next continuation.
3. ``POST /youtubei/v1/live_chat/get_live_chat`` with the context and the continuation, again and
   again: each answer carries new actions, the next continuation and ``timeoutMs``, the wait
   the server asks for. No next continuation means the stream (or its chat) ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ishowttsd.reconnect import SessionEnded

from .actions import Batch, Options, parse_continuation
from .fetch import Answer, Fetch, path_of
from .page import Client, PageChanged, chat_page, dig, watch_page
from .settings import YouTubeSettings
from .target import Target


@dataclass
class Broadcast:
    """What discovery found: a video, whether it is live now, and how to reach its chat."""

    video_id: str = ""
    title: str = ""
    live: bool = False
    why: str = ""  # why it is not live (or has no chat), in words for `status`
    chat: str = ""  # the web route's reload continuation; the Data API's liveChatId
    client: Client | None = field(default=None, repr=False)


class InnerTube:
    """Discovery through the web pages and chat through get_live_chat; see the module docstring."""

    name = "web"

    def __init__(self, fetch: Fetch, s: YouTubeSettings, opts: Options) -> None:
        self.fetch = fetch
        self.s = s
        self.opts = opts
        self._client: Client | None = None
        self._token: str | None = None
        self._room = ""

    def _changed(self, what: str, e: PageChanged) -> SessionEnded:
        self.fetch.counters["page_changed"] += 1
        return SessionEnded(f"{what}: {e}; YouTube changed its pages: update ishowttsd, or use the Data API "
                            "route (api_key_file / api_key_env)", least=self.s.not_live_interval)  # fmt: skip

    def _refused(self, what: str, a: Answer) -> SessionEnded:
        return SessionEnded(f"YouTube answered HTTP {a.status} for {what} ({path_of(a.url)})",
                            least=self.s.not_live_interval)  # fmt: skip

    async def find(self, target: Target) -> Broadcast:
        """Look at the page that shows the target's broadcast."""
        sep = "&" if "?" in target.page else "?"
        a = await self.fetch.request("GET", f"{self.s.base_url}{target.page}{sep}hl={self.s.hl}", "the watch page")
        if a.status == 404:
            raise SessionEnded(f"YouTube has no {target.label} (HTTP 404); check `channel` in the config",
                               least=self.s.not_live_interval)  # fmt: skip
        if a.status >= 400:
            raise self._refused(f"the page of {target.label}", a)
        if (a.url.host or "").startswith("consent."):
            raise SessionEnded("YouTube showed its cookie-consent page instead of the watch page; this network "
                               "needs a consent that the SOCS cookie did not give",
                               least=self.s.not_live_interval)  # fmt: skip
        try:
            page = watch_page(a.text(), self.s.hl)
        except PageChanged as e:
            raise self._changed(f"the page of {target.label}", e) from None
        if not page.is_video:
            return Broadcast(why=f"{target.label} is not live")
        b = Broadcast(video_id=page.video_id, title=page.title, client=page.client)
        if page.status in ("ERROR", "LOGIN_REQUIRED", "UNPLAYABLE") and not page.chats:
            b.why = f"video {page.video_id} cannot be watched ({page.reason or page.status})"
        elif page.upcoming:
            b.why = f"the stream {page.video_id} has not started yet"
        elif not page.live:
            over = "" if target.follows_channel else " (its broadcast is over or not started)"
            b.why = f"{target.label} is not live{over}"
        elif not page.chats:
            b.why = f"the stream {page.video_id} is live but has no live chat (the streamer turned it off)"
        elif page.client is None:
            raise self._changed("the watch page", PageChanged("its ytcfg has no INNERTUBE_CONTEXT"))
        else:
            b.live = True
            b.chat = page.chats[self.s.chat]
        return b

    async def open(self, b: Broadcast) -> Batch:
        """The chat frame's first batch (recent history) and the continuation to poll."""
        a = await self.fetch.request("GET", f"{self.s.base_url}/live_chat", "the live_chat page",
                                     params={"continuation": b.chat, "hl": self.s.hl})  # fmt: skip
        if a.status >= 400:
            raise self._refused("the live_chat page", a)
        try:
            page = chat_page(a.text(), self.s.hl)
        except PageChanged as e:
            raise self._changed("the live_chat page", e) from None
        self._client = page.client or b.client
        self._room = b.video_id
        batch = parse_continuation(page.continuation, self._room, self.opts)
        batch.history = True
        self._token = batch.token
        return batch

    async def poll(self) -> Batch:
        """The next get_live_chat answer."""
        assert self._client is not None and self._token
        params = {"prettyPrint": "false"}
        if self._client.api_key:
            params["key"] = self._client.api_key
        a = await self.fetch.request(
            "POST", f"{self.s.base_url}/youtubei/v1/live_chat/get_live_chat", "get_live_chat", params=params,
            json={"context": self._client.context, "continuation": self._token},
        )  # fmt: skip
        if a.status in (400, 403, 404):
            self.fetch.counters["refused_continuations"] += 1
            raise SessionEnded(f"get_live_chat refused the continuation (HTTP {a.status}); reopening the chat")
        if a.status >= 400:
            raise self._refused("get_live_chat", a)
        body = self.fetch.json_object(a, "get_live_chat")
        if dig(body, "responseContext", "errors"):
            raise SessionEnded("get_live_chat answered with errors (the video may be private or deleted)",
                               least=self.s.not_live_interval)  # fmt: skip
        batch = parse_continuation(dig(body, "continuationContents", "liveChatContinuation"), self._room, self.opts)
        self._token = batch.token
        return batch
