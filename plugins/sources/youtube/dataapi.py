"""The official route: YouTube Data API v3, for those who prefer it and accept its quota.

Discovery needs no quota where it can: a channel's live video is found on its ``/live`` page
(the web route's discovery); ``videos.list?part=liveStreamingDetails`` (1 unit) then gives the
broadcast's ``activeLiveChatId``, which only a live broadcast has. Chat is
``liveChatMessages.list`` (``GET /liveChat/messages``, 5 units a call), polled at the
``pollingIntervalMillis`` it asks for; its ``nextPageToken`` survives a reconnect, so nothing
said in between is lost. The key travels in the ``x-goog-api-key`` header, never in a URL.
A day's default quota (10,000 units) lasts about 2000 polls: at a 5 s interval, under 3 hours.

:func:`api_batch` turns a list answer into a :class:`Batch` like the web route's: text messages,
Super Chats and Super Stickers (``amountMicros`` and an ISO currency), new members, milestones
and membership gifts, deletions (``messageDeletedEvent``) and bans (``userBannedEvent``).
Pure parsing: fuzzed by the tests.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ishowttsd.messages import Deletion, Kind, Message, User, as_int, as_str
from ishowttsd.reconnect import SessionEnded

from .actions import MALFORMED, MAX_TEXT, PLATFORM, Batch, Event, Options, Text, clean_text
from .fetch import Answer, Fetch
from .innertube import Broadcast, InnerTube
from .money import checked
from .page import dig
from .settings import YouTubeSettings
from .target import Target

# custom emoji reach the Data API's text as their shortcut, ":_name:"
_CUSTOM_EMOJI = re.compile(r":_[^:\s]{1,40}:")
_TOKEN = re.compile(r"[A-Za-z0-9_\-=.]{1,4096}")
ENDED_REASONS = {"liveChatEnded", "liveChatNotFound", "liveChatDisabled"}
MEMBERSHIP_EVENTS = ("newSponsorEvent", "memberMilestoneChatEvent", "membershipGiftingEvent",
                     "giftMembershipReceivedEvent")


class DataApi:
    """Chat through liveChatMessages.list; see the module docstring."""

    name = "data_api"

    def __init__(self, fetch: Fetch, s: YouTubeSettings, opts: Options, key: str, web: InnerTube) -> None:
        self.fetch = fetch
        self.s = s
        self.opts = opts
        self._headers = {"x-goog-api-key": key}
        self.web = web
        self._chat = ""
        self._room = ""
        self._page: str | None = None  # nextPageToken: kept across reconnects to the same chat

    async def _get(self, path: str, what: str, params: dict[str, str]) -> Any:
        a = await self.fetch.request("GET", f"{self.s.api_base}{path}", what, params=params, headers=self._headers)
        if a.status >= 400:
            return self._error(a, what)
        return self.fetch.json_object(a, what)

    def _error(self, a: Answer, what: str) -> dict[str, Any]:
        """A Data API error: a chat that ended reads as an ended batch ({"ended": why}); the rest
        end the session, with the wait the error deserves."""
        try:
            body = a.json()
        except ValueError:
            body = {}
        reason = as_str(dig(body, "error", "errors", 0, "reason")) or as_str(dig(body, "error", "status"))
        message = clean_text(as_str(dig(body, "error", "message")))[:160]
        if reason in ENDED_REASONS:
            return {"ended": f"the Data API says {reason}: {message or 'the chat is over'}"}
        if reason in ("quotaExceeded", "dailyLimitExceeded"):
            self.fetch.counters["quota_exceeded"] += 1
            raise SessionEnded(f"the Data API quota is used up ({reason}); waiting {self.s.quota_delay:g} s. Quota "
                              "resets at midnight Pacific time; the web route needs none (drop api_key_file)",
                              least=self.s.quota_delay)  # fmt: skip
        if reason in ("rateLimitExceeded", "userRateLimitExceeded"):
            self.fetch.counters["rate_limited"] += 1
            raise SessionEnded(f"the Data API rate-limited {what} ({reason})", least=self.s.rate_limit_delay)
        if a.status in (400, 401, 403) and reason in ("keyInvalid", "badRequest", "forbidden", "accessNotConfigured",
                                                         "API_KEY_INVALID", "PERMISSION_DENIED", "INVALID_ARGUMENT"):
            raise SessionEnded(f"the Data API refused {what} (HTTP {a.status}, {reason}: {message}); check the key in "
                              "api_key_file / api_key_env and that YouTube Data API v3 is enabled for it",
                              least=self.s.reconnect.cap)  # fmt: skip
        raise SessionEnded(f"the Data API answered HTTP {a.status} for {what} ({reason or 'no reason given'})",
                          least=self.s.not_live_interval)  # fmt: skip

    async def find(self, target: Target) -> Broadcast:
        """The live video (from the channel's page when the target is a channel), then its chat id."""
        video, title = target.value, ""
        if target.kind != "video":
            page = await self.web.find(target)
            if not page.live:
                return page
            video, title = page.video_id, page.title
        body = await self._get("/videos", "videos.list", {"part": "liveStreamingDetails,snippet", "id": video})
        item = dig(body, "items", 0)
        if not isinstance(item, dict):
            return Broadcast(video_id=video, why=f"the Data API does not know video {video}")
        chat = as_str(dig(item, "liveStreamingDetails", "activeLiveChatId"))
        title = as_str(dig(item, "snippet", "title"))[:200] or title
        if not chat:
            return Broadcast(video_id=video, title=title, why=f"video {video} has no active live chat (not live)")
        return Broadcast(video_id=video, title=title, live=True, chat=chat)

    async def open(self, b: Broadcast) -> Batch:
        if b.chat != self._chat:
            self._chat, self._page = b.chat, None
        self._room = b.video_id
        history = self._page is None
        batch = await self.poll()
        batch.history = history
        return batch

    async def poll(self) -> Batch:
        params = {"liveChatId": self._chat, "part": "id,snippet,authorDetails", "maxResults": "2000"}
        if self._page:
            params["pageToken"] = self._page
        body = await self._get("/liveChat/messages", "liveChatMessages.list", params)
        batch = api_batch(body, self._room, self.opts)
        if batch.token:
            self._page = batch.token
        if batch.ended:
            self._chat, self._page = "", None
        return batch


def api_batch(body: Any, room: str = "", opts: Options | None = None) -> Batch:
    """One liveChatMessages.list answer as a Batch. Never raises on bad data."""
    opts = opts or Options()
    batch = Batch()
    if not isinstance(body, dict):
        batch.ended = "the Data API answered no chat"
        return batch
    if isinstance(body.get("ended"), str):  # an error that means the chat is over (see DataApi._error)
        batch.ended = body["ended"]
        return batch
    token = body.get("nextPageToken")
    if isinstance(token, str) and _TOKEN.fullmatch(token):
        batch.token = token
    interval = as_int(body.get("pollingIntervalMillis"), -1)
    batch.timeout_ms = interval if interval >= 0 else None
    if body.get("offlineAt"):
        batch.ended = "the stream went offline (the Data API's offlineAt)"
    items = body.get("items")
    for item in items if isinstance(items, list) else []:
        try:
            ev = api_item(item, room, opts, batch)
        except MALFORMED:
            batch.counts["malformed"] += 1
            continue
        if ev is not None:
            batch.events.append(ev)
    if batch.token is None and not batch.ended:
        batch.ended = "the Data API sent no nextPageToken: the chat ended"
    return batch


def _api_text(s: Any) -> Text:
    text = clean_text(as_str(s))[:MAX_TEXT]
    spans = [(m.start(), m.end()) for m in _CUSTOM_EMOJI.finditer(text)]
    return Text(text, spans, bool(spans))


def api_item(item: Any, room: str, opts: Options, batch: Batch) -> Event | None:
    """One liveChatMessage resource; raises KeyError/TypeError/... when malformed."""
    sn = item["snippet"]
    kind = sn["type"]
    if not isinstance(kind, str):
        raise TypeError("snippet.type is not text")
    ad = item.get("authorDetails") if isinstance(item.get("authorDetails"), dict) else {}
    if kind == "messageDeletedEvent":
        target = as_str(dig(sn, "messageDeletedDetails", "deletedMessageId"))
        if not target:
            raise ValueError("messageDeletedEvent without deletedMessageId")
        return Deletion(platform=PLATFORM, message_ids=[target], reason="deleted")
    if kind == "userBannedEvent":
        d = sn["userBannedDetails"]
        who = as_str(dig(d, "bannedUserDetails", "channelId"))
        if not who:
            raise ValueError("userBannedEvent without bannedUserDetails.channelId")
        return Deletion(platform=PLATFORM, user_id=who, reason="timeout" if d.get("banType") == "temporary" else "ban")
    if kind == "chatEndedEvent":
        batch.ended = "the chat ended (chatEndedEvent)"
        return None
    name = clean_text(as_str(ad.get("displayName")))[:100]
    user = User(id=as_str(ad.get("channelId") or sn.get("authorChannelId")), name=name.lstrip("@") or name,
                moderator=ad.get("isChatModerator") is True, broadcaster=ad.get("isChatOwner") is True,
                membership="Member" if ad.get("isChatSponsor") is True else "")  # fmt: skip
    extra: dict[str, Any] = {"handle": name} if name.startswith("@") else {}
    sent = _usec(sn.get("publishedAt"))
    if sent:
        extra["sent_usec"] = sent
    if ad.get("isVerified") is True:
        extra["verified"] = True
    fields: dict[str, Any] = {}
    text = Text()
    if kind == "textMessageEvent":
        msg_kind = Kind.DANMAKU
        text = _api_text(dig(sn, "textMessageDetails", "messageText") or sn.get("displayMessage"))
    elif kind in ("superChatEvent", "superStickerEvent"):
        msg_kind = Kind.SUPERCHAT
        d = sn["superChatDetails" if kind == "superChatEvent" else "superStickerDetails"]
        micros = as_int(d.get("amountMicros"), -1)
        amount = checked(micros / 1e6 if micros >= 0 else None, d.get("currency"),
                         clean_text(as_str(d.get("amountDisplayString")))[:64], opts.max_amount)  # fmt: skip
        if amount.problem:
            batch.counts[amount.problem] += 1
        fields = {"amount": amount.value, "currency": amount.spoken_currency}
        extra.update(amount_text=amount.text, currency_known=amount.known)
        if kind == "superChatEvent":
            text = _api_text(d.get("userComment"))
        else:
            extra["sticker"] = clean_text(as_str(dig(d, "superStickerMetadata", "altText")))[:100]
    elif kind in MEMBERSHIP_EVENTS:
        msg_kind = Kind.SUB
        text, level = _membership_text(kind, sn, extra)
        if kind == "giftMembershipReceivedEvent":
            batch.counts["gift_redemptions"] += 1
            if not opts.read_gift_redemptions:
                return None
        elif level or kind != "membershipGiftingEvent":
            user.membership = level or user.membership or "Member"
    else:
        batch.counts["ignored"] += 1
        return None
    msg_id = item["id"]
    if not isinstance(msg_id, str) or not msg_id:
        raise ValueError("a liveChatMessage needs an id")
    return Message(platform=PLATFORM, kind=msg_kind, text=text.text, user=user, id=msg_id[:200], room=room,
                   emotes=text.emotes, picture_only=text.picture_only or kind == "superStickerEvent", extra=extra,
                   **fields)  # fmt: skip


def _usec(published: Any) -> int:
    """An RFC 3339 time ("2025-01-01T10:00:00.123Z") in microseconds since the epoch; 0 if unreadable."""
    try:
        return int(datetime.fromisoformat(as_str(published).replace("Z", "+00:00")).timestamp() * 1_000_000)
    except (ValueError, OverflowError, OSError):
        return 0


def _membership_text(kind: str, sn: dict[str, Any], extra: dict[str, Any]) -> tuple[Text, str]:
    """The line a membership event says, as the web route's YouTube-written lines read (in English)."""
    if kind == "newSponsorEvent":
        d = sn.get("newSponsorDetails") if isinstance(sn.get("newSponsorDetails"), dict) else {}
        level = clean_text(as_str(d.get("memberLevelName")))[:80]
        extra["membership_event"] = "upgrade" if d.get("isUpgrade") is True else "new"
        line = f"Upgraded to {level}" if d.get("isUpgrade") is True and level else (
            f"Welcome to {level}!" if level else "New member")  # fmt: skip
        return Text(line), level
    if kind == "memberMilestoneChatEvent":
        d = sn["memberMilestoneChatDetails"]
        months = max(0, as_int(d.get("memberMonth")))
        extra.update(membership_event="milestone", months=months)
        comment = _api_text(d.get("userComment"))
        lead = f"Member for {months} months" + (": " if comment.text.strip() else "")
        shifted = [(a + len(lead), b + len(lead)) for a, b in comment.emotes]
        return Text(lead + comment.text, shifted, comment.pictures), clean_text(as_str(d.get("memberLevelName")))[:80]
    if kind == "membershipGiftingEvent":
        d = sn["membershipGiftingDetails"]
        num = max(1, as_int(d.get("giftMembershipsCount"), 1))
        level = clean_text(as_str(d.get("giftMembershipsLevelName")))[:80]
        extra.update(membership_event="gift", num=num, gift="memberships" if num != 1 else "membership")
        return Text(f"Gifted {num} {level + ' ' if level else ''}membership{'s' if num != 1 else ''}"), ""
    d = sn.get("giftMembershipReceivedDetails") if isinstance(sn.get("giftMembershipReceivedDetails"), dict) else {}
    level = clean_text(as_str(d.get("memberLevelName")))[:80]
    extra["membership_event"] = "gift_received"
    return Text("received a gift membership"), level
