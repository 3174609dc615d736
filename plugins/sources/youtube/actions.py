"""InnerTube live-chat actions, as the live_chat page and get_live_chat return them, turned
into Messages and Deletions.

:func:`parse_continuation` reads one ``liveChatContinuation``: its actions, the next
continuation token and the wait the server asks for (``timeoutMs``). What becomes what:

- ``addChatItemAction`` (and ``replaceChatItemAction``, which swaps a placeholder for the real
  item) with ``liveChatTextMessageRenderer`` → chat (``Kind.DANMAKU``);
  ``liveChatPaidMessageRenderer`` (Super Chat) and ``liveChatPaidStickerRenderer`` (Super
  Sticker, a picture) → ``Kind.SUPERCHAT`` with the amount and currency read from
  ``purchaseAmountText``; ``liveChatMembershipItemRenderer`` (new member, milestone),
  ``liveChatSponsorshipsGiftPurchaseAnnouncementRenderer`` (someone gifted N memberships) →
  ``Kind.SUB``; ``liveChatSponsorshipsGiftRedemptionAnnouncementRenderer`` (a viewer received
  one of them) is counted, and spoken only when asked (``read_gift_redemptions``);
- ``markChatItemAsDeletedAction`` / ``removeChatItemAction`` → a Deletion of that message;
  ``markChatItemsByAuthorAsDeletedAction`` / ``removeChatItemByAuthorAction`` (a ban or a
  timeout) → a Deletion of everything that author said;
- ``addLiveChatTickerItemAction`` repeats a paid or membership item already in chat: counted, not
  spoken twice; engagement messages, placeholders, banners, polls... are counted as ignored.

A gifted-membership purchase is ``Kind.SUB``, not ``Kind.GIFT`` as Twitch's gifted subs are:
YouTube does not say what the memberships cost, and a gift without a price would read as a
free gift. As SUB it is membership speech: owed, journaled, never dropped for length.

Badges become neutral fields: the owner's badge → ``User.broadcaster``, the moderator's →
``User.moderator``, a member badge → ``User.membership`` (its name without the duration).
Custom emoji are pictures: their shortcut (``:_wave:``) stands in the text as a
``Message.emotes`` span, and a message of custom emoji alone is ``picture_only``. Standard emoji
are Unicode and stay text. Pure functions: no I/O, fuzzed by the tests; a malformed action is
counted and skipped, never the whole batch.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import emoji

from ishowttsd.messages import Deletion, Kind, Message, User, as_int, as_str

from .money import parse_amount
from .page import dig

PLATFORM = "youtube"
MAX_TEXT = 1000  # YouTube's limit is 200 characters; anything longer is not chat
LIVE_CONTINUATIONS = ("invalidationContinuationData", "timedContinuationData", "reloadContinuationData")
REPLAY_CONTINUATIONS = ("liveChatReplayContinuationData", "playerSeekContinuationData")
_TOKEN = re.compile(r"[A-Za-z0-9_\-%=.]{1,4096}")
_INT = re.compile(r"\d{1,9}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError)
IGNORED_RENDERERS = frozenset({
    "liveChatViewerEngagementMessageRenderer", "liveChatPlaceholderItemRenderer", "liveChatModeChangeMessageRenderer",
    "liveChatDonationAnnouncementRenderer", "liveChatPurchasedProductMessageRenderer", "liveChatBannerRenderer",
    "liveChatAutoModMessageRenderer", "liveChatBannerHeaderRenderer", "liveChatRestrictedParticipationRenderer",
})  # fmt: skip
IGNORED_ACTIONS = frozenset({
    "addBannerToLiveChatCommand", "removeBannerForLiveChatCommand", "showLiveChatTooltipCommand",
    "updateLiveChatPollAction", "showLiveChatActionPanelAction", "closeLiveChatActionPanelAction", "addToastAction",
    "showLiveChatDialogAction", "liveChatReportModerationStateCommand", "updateViewershipAction",
    "updateDateTextAction", "updateTitleAction", "updateDescriptionAction", "updateToggleButtonTextAction",
})  # fmt: skip

Event = Message | Deletion


@dataclass
class Options:
    """What the parsers need from the settings."""

    max_amount: float = 1e9
    read_gift_redemptions: bool = False


@dataclass
class Batch:
    """One answer of the chat: its events, the next token (None: the chat ended) and the wait."""

    events: list[Event] = field(default_factory=list)
    token: str | None = None
    timeout_ms: int | None = None
    ended: str = ""  # why there is no next token
    history: bool = False  # the first batch of a chat: recent messages said before we came
    counts: Counter[str] = field(default_factory=Counter)  # ignored, malformed, ticker, unknown...
    unknown: set[str] = field(default_factory=set)  # renderer and action names we do not know


def parse_continuation(lcc: Any, room: str = "", opts: Options | None = None) -> Batch:
    """Read one ``liveChatContinuation``. Never raises on bad data: a malformed action is counted."""
    opts = opts or Options()
    batch = Batch()
    if not isinstance(lcc, dict):
        batch.ended = "YouTube's answer carried no live chat"
        return batch
    for c in lcc.get("continuations") if isinstance(lcc.get("continuations"), list) else []:
        if not isinstance(c, dict) or batch.token:
            continue
        for key in LIVE_CONTINUATIONS:
            data = c.get(key)
            if isinstance(data, dict):
                token = data.get("continuation")
                if isinstance(token, str) and _TOKEN.fullmatch(token):
                    batch.token = token
                    timeout = as_int(data.get("timeoutMs"), -1)
                    batch.timeout_ms = timeout if timeout >= 0 else None
                else:
                    batch.counts["bad_token"] += 1
                break
        if any(k in c for k in REPLAY_CONTINUATIONS):
            batch.ended = "the broadcast is over (YouTube offers its chat replay)"
    if batch.token is None and not batch.ended:
        batch.ended = "YouTube sent no next continuation: the stream ended or its chat was closed"
    actions = lcc.get("actions")
    for action in actions if isinstance(actions, list) else []:
        try:
            batch.events.extend(parse_action(action, room, opts, batch))
        except MALFORMED:
            batch.counts["malformed"] += 1
    return batch


def parse_action(action: Any, room: str, opts: Options, batch: Batch, depth: int = 0) -> list[Event]:
    """One action as zero or more events; raises KeyError/TypeError/... on a malformed one."""
    if not isinstance(action, dict):
        raise TypeError("an action is a JSON object")
    name = next((k for k in action if k != "clickTrackingParams"), "")
    body = action.get(name)
    if name == "addChatItemAction":
        return _item(body["item"], room, opts, batch)
    if name == "replaceChatItemAction":
        return _item(body["replacementItem"], room, opts, batch)
    if name in ("markChatItemAsDeletedAction", "removeChatItemAction"):
        target = body["targetItemId"]
        if not isinstance(target, str) or not target:
            raise ValueError("targetItemId is not an id")
        return [Deletion(platform=PLATFORM, message_ids=[target], reason="deleted")]
    if name in ("markChatItemsByAuthorAsDeletedAction", "removeChatItemByAuthorAction"):
        author = body["externalChannelId"]
        if not isinstance(author, str) or not author:
            raise ValueError("externalChannelId is not a channel id")
        return [Deletion(platform=PLATFORM, user_id=author, reason="ban")]
    if name == "addLiveChatTickerItemAction":
        batch.counts["ticker"] += 1
        return []
    if name == "replayChatItemAction" and depth == 0:
        out: list[Event] = []
        for inner in body["actions"]:
            out.extend(parse_action(inner, room, opts, batch, depth + 1))
        return out
    batch.counts["ignored"] += 1
    if name not in IGNORED_ACTIONS:
        _unknown(batch, name or "(empty action)")
    return []


def _unknown(batch: Batch, name: str) -> None:
    batch.counts["unknown"] += 1
    if len(batch.unknown) < 20:
        batch.unknown.add(name[:80])


def _item(item: Any, room: str, opts: Options, batch: Batch) -> list[Event]:
    if not isinstance(item, dict) or len(item) != 1:
        raise TypeError("a chat item holds exactly one renderer")
    (name, r), = item.items()
    if not isinstance(r, dict):
        raise TypeError(f"{name} is not an object")
    handler = _RENDERERS.get(name)
    if handler is None:
        batch.counts["ignored"] += 1
        if name not in IGNORED_RENDERERS:
            _unknown(batch, name)
        return []
    m = handler(r, room, opts, batch)
    return [] if m is None else [m]


# -- text and authors -----------------------------------------------------------------------------


@dataclass
class Text:
    text: str = ""
    emotes: list[tuple[int, int]] = field(default_factory=list)
    pictures: bool = False  # custom emoji were there

    @property
    def picture_only(self) -> bool:
        if not self.pictures:
            return False
        chars = list(self.text)
        for a, b in self.emotes:
            chars[a:b] = " " * (b - a)
        return not "".join(chars).strip()


def clean_text(s: str) -> str:
    """Control characters (which no voice says) as spaces."""
    return _CONTROL.sub(" ", s)


def runs(container: Any) -> Text:
    """A YouTube formatted string (``{"simpleText": ...}`` or ``{"runs": [...]}``) as text with its
    custom emoji as spans; at most MAX_TEXT characters, control characters as spaces."""
    out = Text()
    if not isinstance(container, dict):
        return out
    if isinstance(container.get("simpleText"), str):
        out.text = clean_text(container["simpleText"][:MAX_TEXT])
        return out
    parts: list[str] = []
    pos = 0
    for run in container.get("runs") if isinstance(container.get("runs"), list) else []:
        if not isinstance(run, dict):
            continue
        piece, custom = "", False
        if isinstance(run.get("text"), str):
            piece = clean_text(run["text"])
        elif isinstance(run.get("emoji"), dict):
            piece, custom = _emoji(run["emoji"])
        if not piece:
            continue
        if pos + len(piece) > MAX_TEXT:
            if custom:
                break
            piece = piece[: MAX_TEXT - pos]
        if custom:
            out.emotes.append((pos, pos + len(piece)))
            out.pictures = True
        parts.append(piece)
        pos += len(piece)
        if pos >= MAX_TEXT:
            break
    out.text = "".join(parts)
    return out


def _emoji(e: dict[str, Any]) -> tuple[str, bool]:
    """A standard emoji (Unicode says so) is its text; a custom one (a channel's picture) its shortcut."""
    eid = as_str(e.get("emojiId"))
    standard = e.get("isCustomEmoji") is not True and len(eid) <= 16 and emoji.is_emoji(eid)
    if standard:
        return clean_text(eid), False
    shortcuts = e.get("shortcuts")
    short = shortcuts[0] if isinstance(shortcuts, list) and shortcuts and isinstance(shortcuts[0], str) else ""
    label = as_str(dig(e, "image", "accessibility", "accessibilityData", "label"))
    token = re.sub(r"\s+", "_", clean_text(short or (f":{label}:" if label else ":emoji:")))[:40]
    return token, True


def plain(container: Any) -> str:
    """A formatted string as plain text (emoji included), stripped."""
    return runs(container).text.strip()


_DURATION = re.compile(r"\s*\((.*)\)\s*$")


def author(r: dict[str, Any], names_from: dict[str, Any] | None = None) -> tuple[User, dict[str, Any]]:
    """The author of a renderer: id, name (without the handle's '@'), badges as roles."""
    src = names_from if names_from is not None else r
    raw_name = plain(src.get("authorName"))
    user = User(id=as_str(r.get("authorExternalChannelId")), name=raw_name.lstrip("@") or raw_name)
    extra: dict[str, Any] = {}
    if raw_name.startswith("@"):
        extra["handle"] = raw_name
    badges = src.get("authorBadges")
    for b in badges if isinstance(badges, list) else []:
        rb = b.get("liveChatAuthorBadgeRenderer") if isinstance(b, dict) else None
        if not isinstance(rb, dict):
            continue
        icon = as_str(dig(rb, "icon", "iconType"))
        tooltip = clean_text(as_str(rb.get("tooltip")))[:80]
        if icon == "OWNER":
            user.broadcaster = True
        elif icon == "MODERATOR":
            user.moderator = True
        elif icon == "VERIFIED":
            extra["verified"] = True
        elif not icon and "customThumbnail" in rb and tooltip:
            since = _DURATION.search(tooltip)
            user.membership = _DURATION.sub("", tooltip).strip() or tooltip
            if since:
                extra["member_since"] = since.group(1)
    return user, extra


def _message(kind: Kind, r: dict[str, Any], room: str, text: Text, user: User, extra: dict[str, Any],
             **fields: Any) -> Message:  # fmt: skip
    msg_id = r["id"]
    if not isinstance(msg_id, str) or not msg_id:
        raise ValueError("a chat item needs an id")
    usec = as_int(r.get("timestampUsec"))
    if usec > 0:
        extra["sent_usec"] = usec
    return Message(platform=PLATFORM, kind=kind, text=text.text, user=user, id=msg_id[:200], room=room,
                   emotes=text.emotes, picture_only=text.picture_only, extra=extra, **fields)  # fmt: skip


def _first_int(s: str) -> int | None:
    m = _INT.search(s)
    return int(m.group(0)) if m else None


# -- renderers ------------------------------------------------------------------------------------


def _text_message(r: dict[str, Any], room: str, _opts: Options, _batch: Batch) -> Message:
    user, extra = author(r)
    return _message(Kind.DANMAKU, r, room, runs(r["message"]), user, extra)


def _paid(r: dict[str, Any], room: str, opts: Options, batch: Batch, sticker: bool) -> Message:
    user, extra = author(r)
    amount = parse_amount(plain(r["purchaseAmountText"]), opts.max_amount)
    if amount.problem:
        batch.counts[amount.problem] += 1
    extra.update(amount_text=amount.text, currency_known=amount.known)
    if sticker:
        extra["sticker"] = clean_text(as_str(dig(r, "sticker", "accessibility", "accessibilityData", "label")))[:100]
        msg = _message(Kind.SUPERCHAT, r, room, Text(), user, extra, amount=amount.value,
                       currency=amount.spoken_currency)  # fmt: skip
        msg.picture_only = True  # a sticker is a picture: there are no words to say
        return msg
    return _message(Kind.SUPERCHAT, r, room, runs(r.get("message")), user, extra, amount=amount.value,
                    currency=amount.spoken_currency)  # fmt: skip


def _membership(r: dict[str, Any], room: str, _opts: Options, _batch: Batch) -> Message:
    user, extra = author(r)
    header = plain(r.get("headerPrimaryText"))
    sub = r.get("headerSubtext")
    if header:  # a milestone: "Member for 8 months", the level as the subtext, maybe a comment
        months = _first_int(header)
        if months is not None:
            extra["months"] = months * 12 if "year" in header.lower() else months
        level = plain(sub)
        comment = runs(r.get("message"))
        lead = header + (": " if comment.text.strip() else "")
        text = Text(lead + comment.text, [(a + len(lead), b + len(lead)) for a, b in comment.emotes], comment.pictures)
        extra["membership_event"] = "milestone"
    else:  # new: "Welcome to <level>!" as three runs, or "New member"
        text = Text(plain(sub) or "New member")
        level_runs = sub.get("runs") if isinstance(sub, dict) and isinstance(sub.get("runs"), list) else []
        level = clean_text(as_str(level_runs[1].get("text"))).strip() if len(level_runs) == 3 and isinstance(
            level_runs[1], dict) else ""  # fmt: skip
        extra["membership_event"] = "new"
    user.membership = level[:80] or user.membership or "Member"
    return _message(Kind.SUB, r, room, text, user, extra)


def _gift_purchase(r: dict[str, Any], room: str, _opts: Options, _batch: Batch) -> Message:
    header = dig(r, "header", "liveChatSponsorshipsHeaderRenderer")
    if not isinstance(header, dict):
        raise KeyError("gift purchase without liveChatSponsorshipsHeaderRenderer")
    user, extra = author(r, header)
    line = plain(header.get("primaryText")) or "Gifted memberships"
    num = _first_int(line) or 1
    extra.update(membership_event="gift", gift="memberships" if num != 1 else "membership", num=num)
    return _message(Kind.SUB, r, room, Text(line), user, extra)


def _gift_redemption(r: dict[str, Any], room: str, opts: Options, batch: Batch) -> Message | None:
    batch.counts["gift_redemptions"] += 1
    if not opts.read_gift_redemptions:
        return None
    user, extra = author(r)
    extra["membership_event"] = "gift_received"
    user.membership = user.membership or "Member"
    return _message(Kind.SUB, r, room, Text(plain(r.get("message")) or "received a gift membership"), user, extra)


_RENDERERS = {
    "liveChatTextMessageRenderer": _text_message,
    "liveChatPaidMessageRenderer": lambda r, room, o, b: _paid(r, room, o, b, sticker=False),
    "liveChatPaidStickerRenderer": lambda r, room, o, b: _paid(r, room, o, b, sticker=True),
    "liveChatMembershipItemRenderer": _membership,
    "liveChatSponsorshipsGiftPurchaseAnnouncementRenderer": _gift_purchase,
    "liveChatSponsorshipsGiftRedemptionAnnouncementRenderer": _gift_redemption,
}
