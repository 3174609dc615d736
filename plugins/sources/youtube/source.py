"""The YouTube source: find the live broadcast, read its chat, follow the channel's next stream.

One session of :class:`ishowttsd.reconnect.Reconnector` looks for the live stream; while there is
none it waits in the state ``not_live`` (health: ok), asking again every ``not_live_interval``
seconds. When the stream is live it opens the chat, reports ``connected`` and polls at the
interval the server asks for (kept within ``min_poll_interval`` .. ``max_poll_interval``). When
the stream ends it goes back to waiting, and picks the next stream up. Errors (HTTP 429 and 5xx,
a refused or looping continuation, a page whose shape changed, an oversized answer) end the
session: the one reconnect policy backs off, at least as long as YouTube asked.

The first batch of a chat is history: what was said before we came is not read out, except,
after a reconnect to the same stream, what came after the last message we read (so a dropped
connection loses nothing and repeats nothing).
"""

from __future__ import annotations

import time
import urllib.parse
from collections import OrderedDict, deque
from typing import Any

import anyio
import httpx

from ishowttsd.config import read_secret
from ishowttsd.messages import Deletion
from ishowttsd.reconnect import Reconnector, SessionEnded
from ishowttsd.source import Source

from .actions import Batch, Options
from .dataapi import DataApi
from .fetch import Fetch
from .innertube import Broadcast, InnerTube
from .settings import YouTubeSettings
from .target import parse_target

SEEN_IDS = 10_000  # message ids remembered against repeats
DEFAULT_WAIT = 5.0  # when the server names no interval


class YouTubeSource(Source):
    """YouTube live chat for one channel or broadcast; see the package docstring."""

    type = "youtube"
    Settings = YouTubeSettings

    def __init__(self, settings: YouTubeSettings, ctx) -> None:
        super().__init__(settings, ctx)
        self.s: YouTubeSettings = settings
        self.target = parse_target(settings.channel)
        # read up front: a missing key file is a config error at start, not a retry loop
        self._key = read_secret(settings.api_key_file, settings.api_key_env, f"sources[{self.name}].api_key",
                                ctx.config) if settings.data_api else None  # fmt: skip
        self.link = Reconnector(self, settings.reconnect.make())
        self.opts = Options(max_amount=settings.max_amount, read_gift_redemptions=settings.read_gift_redemptions)
        self._http: httpx.AsyncClient | None = None
        self.route: InnerTube | DataApi | None = None
        self.broadcast: Broadcast | None = None
        self.poll_interval: float | None = None
        self._last_poll: float | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._watermark: dict[str, int] = {}  # video id -> timestamp (µs) of the newest message read
        self._videos: set[str] = set()
        self._reopened = 0  # a live stream whose chat ended as it opened, times in a row
        self.unknown: set[str] = set()
        self.unknown_currencies: set[str] = set()

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = super().status()
        b = self.broadcast
        st.update(
            channel=self.target.label,
            route="data_api" if self._key else "web",
            chat=self.s.chat,
            video_id=b.video_id if b else None,
            title=b.title if b else None,
            live=self.state == "connected",
            poll_interval_s=self.poll_interval,
            seconds_since_poll=None if self._last_poll is None else round(time.monotonic() - self._last_poll, 1),
            streams=len(self._videos),
            reconnects=self.counters.get("reconnects", 0),
            unknown=sorted(self.unknown),
            unknown_currencies=sorted(self.unknown_currencies),
        )
        return st

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._http = httpx.AsyncClient(
            timeout=self.s.http_timeout, follow_redirects=True, cookies={"SOCS": "CAI"},  # SOCS: skip the consent page
            headers={"User-Agent": self.s.user_agent,
                     "Accept-Language": self.s.hl if self.s.hl == "en" else f"{self.s.hl},en;q=0.8"},
        )  # fmt: skip
        fetch = Fetch(self._http, self.s.max_response_bytes, self.s.rate_limit_delay, self.counters)
        web = InnerTube(fetch, self.s, self.opts)
        self.route = DataApi(fetch, self.s, self.opts, self._key, web) if self._key else web
        await self.link.run(self._session, lambda: f"looking for the live stream of {self.target.label}")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self.set_state("stopped")

    # -- the session -------------------------------------------------------------------------

    async def _session(self) -> None:
        while True:
            b = await self._find_live()
            batch = await self._read(b)
            self._reopened = self._reopened + 1 if batch is None else 0
            if self._reopened >= self.s.loop_limit:
                self._reopened = 0
                raise SessionEnded(f"YouTube shows {b.video_id} live but its chat ends as soon as it is opened "
                                   f"({self.s.loop_limit} times): the chat may be off, or YouTube changed its pages",
                                   least=self.s.not_live_interval)  # fmt: skip
            self.counters["chats_ended"] += 1
            self.broadcast = None
            why = batch.ended if batch is not None else "the chat ended at once"
            self.log.info("the chat of %s ended: %s", b.video_id, why)
            await self._wait_not_live(f"{why}; looking for {self.target.label}'s stream again")

    async def _find_live(self) -> Broadcast:
        assert self.route is not None
        while True:
            b = await self.route.find(self.target)
            self.counters["live_checks"] += 1
            if b.live:
                return b
            self.broadcast = None
            self._reopened = 0
            await self._wait_not_live(b.why)

    async def _wait_not_live(self, why: str) -> None:
        self.poll_interval = None
        self.set_state("not_live", f"{why}; checking again in {self.s.not_live_interval:g} s")
        await anyio.sleep(self.s.not_live_interval)

    async def _read(self, b: Broadcast) -> Batch | None:
        """Read a live chat until it ends: the last batch, or None when it ended as it opened."""
        assert self.route is not None
        self.broadcast = b
        batch = await self.route.open(b)
        self._deliver(batch)
        if batch.ended:
            return None
        self._videos.add(b.video_id)
        title = f" ({b.title[:60]})" if b.title else ""
        self.link.connected(f"live chat of {b.video_id}{title}", channel=self.target.label, room=b.video_id,
                            host=urllib.parse.urlsplit(self.s.base_url).netloc)  # fmt: skip
        used: deque[str] = deque(maxlen=64)
        loops = 0
        while not batch.ended:
            asked = DEFAULT_WAIT if batch.timeout_ms is None else batch.timeout_ms / 1000
            self.poll_interval = min(max(asked, self.s.min_poll_interval), self.s.max_poll_interval)
            await anyio.sleep(self.poll_interval)
            token = batch.token
            if token:
                used.append(token)
            batch = await self.route.poll()
            self.counters["polls"] += 1
            self._last_poll = time.monotonic()
            fresh = self._deliver(batch)
            cycled = batch.token is not None and batch.token != token and batch.token in used
            replayed = batch.token == token and fresh == 0 and any(not isinstance(e, Deletion) for e in batch.events)
            loops = loops + 1 if fresh == 0 and (cycled or replayed) else 0
            if loops >= self.s.loop_limit:
                self.counters["continuation_loops"] += 1
                raise SessionEnded(f"the chat continuation of {b.video_id} loops (YouTube hands back tokens and "
                                   f"messages already read, {loops} times in a row); reopening the chat")  # fmt: skip
        return batch

    # -- delivery ----------------------------------------------------------------------------

    def _deliver(self, batch: Batch) -> int:
        """Hand the batch's events on; returns how many messages were new."""
        for key, n in batch.counts.items():
            self.counters[key] += n
        self.unknown |= set(list(batch.unknown)[: max(0, 20 - len(self.unknown))])
        video = self.broadcast.video_id if self.broadcast else ""
        mark = self._watermark.get(video)
        newest = mark or 0
        fresh = 0
        for ev in batch.events:
            if isinstance(ev, Deletion):
                self.delete(ev)
                continue
            usec = ev.extra.get("sent_usec", 0)
            newest = max(newest, usec)
            if ev.id in self._seen:
                self.counters["duplicates"] += 1
                continue
            self._remember(ev.id)
            if batch.history and (mark is None or usec <= mark):
                self.counters["history_skipped"] += 1
                continue
            if ev.extra.get("currency_known") is False and ev.currency and len(self.unknown_currencies) < 20:
                self.unknown_currencies.add(ev.currency)
            ev.received_at = time.time()
            self.emit(ev)
            fresh += 1
        if video and (newest or mark is None):
            self._watermark[video] = newest
        return fresh

    def _remember(self, msg_id: str) -> None:
        self._seen[msg_id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
