"""Twitch chat over IRC on a websocket (``wss://irc-ws.chat.twitch.tv:443``).

Anonymous and read-only by default (``justinfan<digits>``); with ``token_file`` or
``token_env`` (a user access token, never logged) and ``login`` it joins as that user.
Understands tags (with their escapes), PRIVMSG (chat, bits, channel-point rewards with text),
USERNOTICE (sub, resub, subgift, submysterygift, raid, announcement), CLEARMSG and CLEARCHAT
(delivered as deletions, so queued speech for them is removed), PING and RECONNECT.
Reconnects run in :class:`ishowttsd.reconnect.Reconnector` (1 s doubling to 16 s by default;
RECONNECT moves to a new connection at once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from pydantic import Field, field_validator
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from ishowttsd.config import ConfigError, read_secret
from ishowttsd.hookspecs import hookimpl
from ishowttsd.messages import Deletion, Kind, Message, User, as_int
from ishowttsd.reconnect import BackoffSettings, Reconnector, SessionEnded
from ishowttsd.source import Source, SourceSettings

PLATFORM = "twitch"
# websockets logs every frame at DEBUG, tokens included: its logger for us never goes below INFO
_WIRE_LOG = logging.getLogger("ishowttsd.wire.twitch")
_WIRE_LOG.setLevel(logging.INFO)
MAX_LINE = 8192  # Twitch lines are at most a few KB (500-character text plus tags)

# ---------------------------------------------------------------------------------------------
# IRC parsing (pure functions: no I/O, fuzzed by the tests)
# ---------------------------------------------------------------------------------------------

_TAG_ESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def unescape_tag(value: str) -> str:
    r"""IRCv3 tag value unescaping: ``\:`` ``;``, ``\s`` space, ``\\``, ``\r``, ``\n``; a lone ``\`` is dropped."""
    if "\\" not in value:
        return value
    out, i, n = [], 0, len(value)
    while i < n:
        c = value[i]
        if c == "\\":
            if i + 1 < n:
                nxt = value[i + 1]
                out.append(_TAG_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


# greetings for follows ([greetings] kinds = ["follow"]) cannot come from this source: say so
FOLLOWS_NOT_VISIBLE = ("not visible: Twitch chat (IRC) does not carry follows; they are only sent through "
                       "EventSub (channel.follow), which this source does not use")


@dataclass
class IrcLine:
    command: str
    params: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    prefix: str = ""

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0] if self.prefix else ""

    @property
    def trailing(self) -> str:
        return self.params[-1] if self.params else ""


class IrcError(ValueError):
    pass


def parse_line(line: str) -> IrcLine:
    """Parse one IRC line (without CRLF). Raises IrcError on a line that is not IRC."""
    if len(line) > MAX_LINE:
        raise IrcError(f"line longer than {MAX_LINE} characters")
    rest = line
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw, _, rest = rest[1:].partition(" ")
        for item in raw.split(";"):
            if not item:
                continue
            k, _, v = item.partition("=")
            tags[k] = unescape_tag(v)
        rest = rest.lstrip(" ")
    prefix = ""
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    trailing = None
    if " :" in rest:
        rest, _, trailing = rest.partition(" :")
    elif rest.startswith(":"):
        trailing, rest = rest[1:], ""
    parts = rest.split()
    if not parts:
        raise IrcError("no command")
    command = parts[0].upper()
    params = parts[1:]
    if trailing is not None:
        params.append(trailing)
    return IrcLine(command=command, params=params, tags=tags, prefix=prefix)


def split_lines(frame: str) -> list[str]:
    """One websocket frame may carry several CRLF-terminated lines."""
    return [ln for ln in frame.replace("\r\n", "\n").split("\n") if ln]


def parse_badges(value: str) -> dict[str, str]:
    out = {}
    for b in value.split(","):
        name, _, version = b.partition("/")
        if name:
            out[name] = version
    return out


def parse_emotes(value: str, text_len: int | None = None) -> list[tuple[str, int, int]]:
    """``25:0-4,12-16/1902:6-10`` -> [(id, start, end inclusive), ...] sorted by start; bad ranges dropped."""
    ranges = []
    for group in value.split("/"):
        eid, _, spans = group.partition(":")
        if not eid or not spans:
            continue
        for span in spans.split(","):
            a, _, b = span.partition("-")
            if not (a.isdigit() and b.isdigit()) or len(a) > 7 or len(b) > 7:
                continue
            start, end = int(a), int(b)
            if start > end or (text_len is not None and end >= text_len):
                continue
            ranges.append((eid, start, end))
    ranges.sort(key=lambda r: r[1])
    return ranges


def emote_spans(text: str, emotes: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """The emotes as `Message.emotes` spans (code points, end exclusive), or none at all.

    The IRC ranges are trusted only if all of them fit the text as emote codes do: each covers
    a whole whitespace-separated word, and one emote id always covers the same word. Ranges
    that do not fit (a text changed on the way) would cut real words, so none is kept.
    """
    codes: dict[str, str] = {}
    for eid, a, b in emotes:
        word = text[a : b + 1] if 0 <= a <= b < len(text) else ""
        fits = (
            word
            and not any(c.isspace() for c in word)
            and (a == 0 or text[a - 1].isspace())
            and (b + 1 == len(text) or text[b + 1].isspace())
            and codes.setdefault(eid, word) == word
        )
        if not fits:
            return []
    return [(a, b + 1) for _eid, a, b in emotes]


def strip_emotes(text: str, emotes: list[tuple[str, int, int]] | list[list[Any]]) -> str:
    """Remove emote ranges (code-point offsets, inclusive) from the text; squeeze the spaces."""
    keep, pos = [], 0
    for _eid, start, end in sorted(((e[0], int(e[1]), int(e[2])) for e in emotes), key=lambda r: r[1]):
        if start < pos:
            continue
        keep.append(text[pos:start])
        pos = end + 1
    keep.append(text[pos:])
    return re.sub(r"\s+", " ", "".join(keep)).strip()


_TIERS = {"1000": "Tier 1", "2000": "Tier 2", "3000": "Tier 3", "Prime": "Prime"}


def _user(tags: dict[str, str], login: str) -> User:
    badges = parse_badges(tags.get("badges", ""))
    subscriber = tags.get("subscriber") == "1" or "subscriber" in badges or "founder" in badges
    return User(
        id=tags.get("user-id", ""),
        name=tags.get("display-name") or login,
        membership="subscriber" if subscriber else "",
        moderator=tags.get("mod") == "1" or "moderator" in badges,
        broadcaster="broadcaster" in badges,
        vip=tags.get("vip") == "1" or "vip" in badges,
    )


_CHEER = re.compile(r"(?i)(?<!\S)cheer\d+(?!\S)")


def _action(text: str) -> tuple[str, bool]:
    if text.startswith("\x01ACTION ") and text.endswith("\x01"):
        return text[8:-1], True
    return text, False


def to_event(line: IrcLine, strip: bool = False) -> Message | Deletion | None:
    """Normalise one parsed line; None for lines that carry no chat (JOIN, 001, ROOMSTATE ...)."""
    t = line.tags
    channel = line.params[0].lstrip("#") if line.params else ""
    if line.command == "PRIVMSG" and len(line.params) >= 2:
        raw, action = _action(line.trailing)
        user = _user(t, line.nick)
        emotes = parse_emotes(t.get("emotes", ""), len(raw))
        text = strip_emotes(raw, emotes) if strip and emotes else raw
        # stripped here, or handed to moderation as spans it may strip ([moderation] strip_emotes)
        spans = [] if strip else emote_spans(raw, emotes)
        extra: dict[str, Any] = {
            "first_msg": t.get("first-msg") == "1",
            "action": action,
            "badges": parse_badges(t.get("badges", "")),
            "login": line.nick,
        }
        if t.get("tmi-sent-ts", "").isdigit():
            extra["sent_ms"] = int(t["tmi-sent-ts"])
        kind, amount, currency = Kind.DANMAKU, None, None
        bits = as_int(t.get("bits"))
        if bits > 0:
            kind, amount, currency = Kind.BITS, float(bits), "bits"
            extra["bits"] = bits
            text = _CHEER.sub("", text).strip()  # "cheer100 gg" says "gg"; the amount is in the template
            spans = []  # the text changed: the ranges no longer fit it
        elif t.get("custom-reward-id"):
            kind = Kind.REDEMPTION
            extra["reward"] = t["custom-reward-id"]
        return Message(platform=PLATFORM, kind=kind, text=text, user=user, amount=amount, currency=currency,
                       id=t.get("id", ""), room=channel, emotes=spans, extra=extra)  # fmt: skip
    if line.command == "USERNOTICE":
        return _usernotice(line, channel)
    if line.command == "CLEARMSG":
        target = t.get("target-msg-id", "")
        if not target:
            return None
        return Deletion(platform=PLATFORM, message_ids=[target], reason="clearmsg")
    if line.command == "CLEARCHAT":
        if len(line.params) >= 2:  # a user was timed out or banned
            reason = "timeout" if t.get("ban-duration") else "ban"
            return Deletion(platform=PLATFORM, user_id=t.get("target-user-id") or line.trailing.lower(), reason=reason)
        return Deletion(platform=PLATFORM, everything=True, reason="clearchat")
    return None


def _usernotice(line: IrcLine, channel: str) -> Message | None:
    t = line.tags
    msg_id = t.get("msg-id", "")
    login = t.get("login", "")
    user = _user(t, login)
    text = line.params[1] if len(line.params) >= 2 else ""
    extra: dict[str, Any] = {"msg_id": msg_id, "system_msg": t.get("system-msg", ""), "login": login}
    kind = None
    if msg_id in ("sub", "resub"):
        kind = Kind.SUB
        extra["months"] = as_int(t.get("msg-param-cumulative-months"), 1)
        extra["plan"] = t.get("msg-param-sub-plan", "")
        user.membership = _TIERS.get(extra["plan"], "subscriber")
    elif msg_id == "subgift":
        if t.get("msg-param-community-gift-id"):
            return None  # one of the N subs of a submysterygift, which was announced once already
        # a gifted sub is the gifter's gift, not the gifter subscribing
        kind = Kind.GIFT
        extra["recipient"] = t.get("msg-param-recipient-display-name") or t.get("msg-param-recipient-user-name", "")
        extra["months"] = as_int(t.get("msg-param-months"), 1)
        extra["plan"] = t.get("msg-param-sub-plan", "")
        extra["gift"] = "sub"
        extra["num"] = 1
    elif msg_id == "submysterygift":
        kind = Kind.GIFT
        extra["num"] = as_int(t.get("msg-param-mass-gift-count"), 1)
        extra["gift"] = "sub" if extra["num"] == 1 else "subs"
        extra["plan"] = t.get("msg-param-sub-plan", "")
    elif msg_id == "raid":
        kind = Kind.RAID
        extra["viewers"] = as_int(t.get("msg-param-viewerCount"))
        user.name = t.get("msg-param-displayName") or user.name
    elif msg_id == "announcement":
        kind = Kind.DANMAKU
    if kind is None:
        return None
    amount = currency = None
    if kind == Kind.GIFT:  # list price, so min_gift_value can weigh gifted subs like other gifts
        amount, currency = round(extra["num"] * _SUB_PRICE_USD.get(extra["plan"], 4.99), 2), "USD"
    return Message(platform=PLATFORM, kind=kind, text=text, user=user, amount=amount, currency=currency,
                   id=t.get("id", ""), room=channel, extra=extra)  # fmt: skip


_SUB_PRICE_USD = {"1000": 4.99, "2000": 9.99, "3000": 24.99, "Prime": 4.99}


# ---------------------------------------------------------------------------------------------
# What streamers paste: a channel as name, #name or its address; a token as oauth:x, Bearer x,
# or the whole address a token generator redirected to (pure functions, tested one by one)
# ---------------------------------------------------------------------------------------------

_LOGIN = re.compile(r"[a-z0-9_]{1,25}")
_TWITCH_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:(?:www|m|go|player|dashboard)\.)?twitch\.tv(?::\d+)?(?=[/?#]|$)", re.I)
# first path segments that are Twitch's own pages, not channels
_NOT_CHANNELS = {"videos", "directory", "settings", "search", "subscriptions", "inventory", "drops", "wallet",
                 "downloads", "p", "jobs", "turbo", "store", "prime", "login", "signup", "messages", "friends"}  # fmt: skip
_CHANNEL_ADVICE = "paste the channel's name, #name or its address (https://www.twitch.tv/<name>)"


def normalise_channel(value: str) -> str:
    """A Twitch channel's login from what a streamer pastes: ``name``, ``#name``, ``@name`` or a
    twitch.tv address (any scheme, www./m. prefix, trailing path or query; popout and
    moderator views, dashboard.twitch.tv/u/<name>). Raises ValueError with advice."""
    v = value.strip()
    host = _TWITCH_HOST.match(v)
    if host:
        path = re.split(r"[?#]", v[host.end():], maxsplit=1)[0]
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] in ("popout", "moderator", "embed", "u") and len(parts) > 1:
            parts = parts[1:]
        if not parts:
            raise ValueError(f"{value!r} is Twitch's front page, not a channel; {_CHANNEL_ADVICE}")
        if parts[0].lower() in _NOT_CHANNELS:
            raise ValueError(f"{value!r} is a Twitch page ({parts[0]}), not a channel; {_CHANNEL_ADVICE}")
        v = parts[0]
    elif re.match(r"^(?:[a-z][a-z0-9+.-]*://)?[a-z0-9.-]+\.twitch\.tv(?:[:/?#]|$)", v, re.I):
        raise ValueError(f"{value!r} is a Twitch page (a clip, an API), not a channel; {_CHANNEL_ADVICE}")
    elif "://" in v or re.match(r"^(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)+/", v, re.I):
        raise ValueError(f"{value!r} is not a twitch.tv address; {_CHANNEL_ADVICE}")
    v = v.lstrip("#@").strip().lower()
    if not v:
        raise ValueError(f"the channel is empty; {_CHANNEL_ADVICE}")
    if not _LOGIN.fullmatch(v):
        bad = sorted({c for c in v if not re.fullmatch(r"[a-z0-9_]", c)})
        what = (f"has characters a Twitch login cannot have ({' '.join(repr(c) for c in bad)})" if bad
                else "is longer than 25 characters")  # fmt: skip
        raise ValueError(f"channel {value!r} {what}: a channel is its login, 1-25 letters, digits or _; {_CHANNEL_ADVICE}")
    return v


_TOKEN_ADVICE = ("put only the user access token in the file or variable: `oauth:<token>`, the bare token, or the whole "
                 "address the token generator sent you to (…#access_token=<token>&…)")  # fmt: skip


def normalise_token(raw: str) -> str:
    """A Twitch user access token from what a streamer pastes: ``oauth:x``, ``Bearer x``,
    ``OAuth x``, the bare token, an OAuth redirect address or fragment carrying
    ``access_token=``, or the token endpoint's JSON answer. Raises ValueError with advice;
    the message never contains the token itself."""
    v = raw.strip().strip("'\"").strip()
    low = v.lower()
    if re.search(r"client[_ -](?:secret|id)\b", low):
        raise ValueError("this looks like the app's client id or client secret, not a user access token: those identify "
                         f"the app and cannot log in to chat; {_TOKEN_ADVICE}")  # fmt: skip
    if v.startswith("{"):
        try:
            data = json.loads(v)
        except ValueError:
            raise ValueError(f"the token looks like JSON but is not valid JSON; {_TOKEN_ADVICE}") from None
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise ValueError(f"the JSON has no access_token; {_TOKEN_ADVICE}")
        v = data["access_token"].strip()
    elif "=" in v and ("&" in v or "#" in v or "?" in v or low.startswith(("access_token=", "code=", "error="))):
        parts = urlsplit(v) if "://" in v else None
        query = parse_qs(parts.query if parts else "") if parts else {}
        fragment = parse_qs(parts.fragment if parts else v.split("#", 1)[-1].lstrip("?"))
        fields = {**query, **fragment}
        if "error" in fields:
            why = (fields.get("error_description") or fields["error"])[0]
            raise ValueError(f"the address is Twitch's refusal ({why}), not a token: authorize again; {_TOKEN_ADVICE}")
        if "access_token" not in fields:
            if "code" in fields:
                raise ValueError("the address carries an authorization code (?code=), not a token: it must be exchanged "
                                 "for a token first. Use a generator with the implicit flow (its address ends in "
                                 f"#access_token=…); {_TOKEN_ADVICE}")  # fmt: skip
            raise ValueError(f"the address has no access_token in it; {_TOKEN_ADVICE}")
        v = fields["access_token"][0].strip()
    v = re.sub(r"^(?:oauth:|bearer\b|oauth\b)\s*", "", v, flags=re.I).strip()
    if not v:
        raise ValueError(f"the token is empty; {_TOKEN_ADVICE}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
        raise ValueError("the token has spaces, quotes or other characters a Twitch token never has (a second line, "
                         f"a label?); {_TOKEN_ADVICE}")  # fmt: skip
    if len(v) > 200:
        raise ValueError(f"the token is {len(v)} characters long, far longer than a Twitch token; {_TOKEN_ADVICE}")
    return v


# ---------------------------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------------------------


class ReconnectSettings(BackoffSettings):
    """Twitch's advice: 1 s doubling to about 16 s, reset only after a healthy connection."""

    step: float = Field(default=0.0, ge=0)
    factor: float = Field(default=2.0, ge=1)
    cap: float = Field(default=16.0, gt=0)
    jitter: float = Field(default=1.0, ge=0)


class TwitchSettings(SourceSettings):
    channel: str = Field(min_length=1, description="the channel's login, as in twitch.tv/<channel>")
    url: str = "wss://irc-ws.chat.twitch.tv:443"
    login: str | None = Field(default=None, description="the account the token belongs to; anonymous when unset")
    token_file: str | None = None
    token_env: str | None = None
    strip_emotes: bool = Field(default=False, description="remove emotes from the text (ranges stay in extra.emotes)")
    idle_timeout: float = Field(default=360.0, gt=0, description="silence before we PING the server ourselves")
    pong_timeout: float = Field(default=10.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        return normalise_channel(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("ws://", "wss://")):
            raise ValueError("url must start with wss:// (or ws:// for a local test server)")
        return v


class TwitchSource(Source):
    """Twitch chat for one channel; see the module docstring."""

    type = "twitch"
    Settings = TwitchSettings

    def __init__(self, settings: TwitchSettings, ctx) -> None:
        super().__init__(settings, ctx)
        self.s: TwitchSettings = settings
        self._token = read_secret(self.s.token_file, self.s.token_env, f"sources[{self.name}].token", ctx.config)
        if self._token is not None:
            try:
                self._token = normalise_token(self._token)
            except ValueError as e:
                where = f"token_file {self.s.token_file}" if self.s.token_file else f"token_env {self.s.token_env}"
                raise ConfigError(f"sources[{self.name}]: {where}: {e}") from None
        if self._token and not self.s.login:
            raise ConfigError(f"sources[{self.name}]: a token needs `login` (the account it belongs to)")
        self.link = Reconnector(self, self.s.reconnect.make())
        self._nick = ""

    async def close(self) -> None:
        self.set_state("stopped")

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update(channel=self.s.channel, anonymous=not self._token, reconnects=self.counters.get("reconnects", 0),
                  follows=FOLLOWS_NOT_VISIBLE)  # fmt: skip
        return st

    async def run(self) -> None:
        await self.link.run(self._session, f"#{self.s.channel}")

    async def _session(self) -> None:
        async with ws_connect(
            self.s.url, open_timeout=self.s.connect_timeout, ping_interval=None, close_timeout=2,
            max_size=1024 * 1024, compression=None, logger=_WIRE_LOG,
        ) as ws:  # fmt: skip
            await ws.send("CAP REQ :twitch.tv/tags twitch.tv/commands")
            if self._token:
                tok = f"oauth:{self._token}"
                self._nick = self.s.login.lower()
                await ws.send(f"PASS {tok}")
            else:
                self._nick = f"justinfan{random.randint(10000, 99999)}"
                await ws.send("PASS SCHMOOPIIE")  # anything works for justinfan; this is Twitch's own example
            await ws.send(f"NICK {self._nick}")
            await ws.send(f"JOIN #{self.s.channel}")
            pinged = False
            while True:
                try:
                    with anyio.fail_after(self.s.pong_timeout if pinged else self.s.idle_timeout):
                        frame = await ws.recv()
                except (TimeoutError, asyncio.TimeoutError):  # distinct classes on Python 3.10
                    if pinged:
                        raise SessionEnded("no answer to our PING; the connection is dead") from None
                    await ws.send("PING :tmi.twitch.tv")
                    pinged = True
                    continue
                except ConnectionClosed:
                    raise SessionEnded("the server closed the connection") from None
                pinged = False
                if isinstance(frame, bytes):
                    frame = frame.decode("utf-8", "replace")
                for raw in split_lines(frame):
                    await self._line(ws, raw)

    async def _line(self, ws, raw: str) -> None:
        try:
            line = parse_line(raw)
        except IrcError:
            self.counters["malformed"] += 1
            return
        cmd = line.command
        if cmd == "PING":
            await ws.send(f"PONG :{line.trailing or 'tmi.twitch.tv'}")
            self.counters["pings"] += 1
            return
        if cmd == "RECONNECT":
            raise SessionEnded("Twitch asked us to reconnect (RECONNECT)", planned=True)
        if cmd == "NOTICE" and "authentication failed" in line.trailing.lower():
            raise SessionEnded("Twitch refused the token (login authentication failed); check token_file/token_env and login")
        if cmd == "JOIN" and line.nick == self._nick:
            self.link.connected(f"#{self.s.channel}" + (" (anonymous)" if not self._token else ""), channel=self.s.channel)
            return
        try:
            ev = to_event(line, strip=self.s.strip_emotes)
        except (ValueError, TypeError, IndexError):
            self.counters["malformed"] += 1
            return
        if ev is None:
            self.counters["ignored"] += 1
        elif isinstance(ev, Deletion):
            self.delete(ev)
        else:
            ev.received_at = time.time()
            self.emit(ev)


@hookimpl
def ishowtts_register_sources(register):
    register(TwitchSource)
