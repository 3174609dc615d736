"""The values that flow through the daemon: what a platform said, what we will say, and audio."""

from __future__ import annotations

import enum
import itertools
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class Kind(str, enum.Enum):
    """What kind of chat event a Message is."""

    DANMAKU = "danmaku"  # ordinary chat line (Bilibili danmaku, Twitch PRIVMSG)
    GIFT = "gift"
    SUPERCHAT = "superchat"
    GUARD = "guard"  # Bilibili membership (舰长/提督/总督)
    SUB = "sub"  # Twitch subscription, resub, gifted sub
    BITS = "bits"
    REDEMPTION = "redemption"
    RAID = "raid"
    SYSTEM = "system"
    # the room's interactions, read only as aggregated greetings (``greetings.py``), off by default
    ENTER = "enter"  # a viewer entered the room (Bilibili INTERACT_WORD msg_type 1)
    FOLLOW = "follow"  # followed the streamer (msg_type 2, 4 special follow, 5 mutual follow)
    SHARE = "share"  # shared the room (msg_type 3)
    LIKE = "like"  # a like (Bilibili LIKE_INFO_V3_CLICK); `extra["total"]` when the room's total is known


PAID_KINDS = frozenset({Kind.SUPERCHAT, Kind.BITS})
# kinds that are never read one by one: the greeter gathers them into one throttled line
GREETING_KINDS = frozenset({Kind.ENTER, Kind.FOLLOW, Kind.SHARE, Kind.LIKE})


@dataclass
class User:
    """Who said it, as the platform describes them."""

    id: str = ""
    name: str = ""
    level: int = 0  # platform user level (Bilibili UL)
    medal_name: str = ""  # Bilibili fan medal
    medal_level: int = 0
    # the membership this user holds (or just bought), named as the platform names it: a
    # Bilibili guard ("舰长"), a Twitch sub ("subscriber", "Tier 2"), a YouTube "Member"; "" for none
    membership: str = ""
    moderator: bool = False
    broadcaster: bool = False
    vip: bool = False


@dataclass
class Message:
    """One thing a platform said, normalised across platforms.

    Sources hand moderation neutral fields, so that no platform's format leaks past them:
    `emotes` are spans of `text` that are pictures (Twitch emotes, Bilibili inline emoticons),
    already checked by the source to fit the text, as ``(start, end)`` code-point offsets with
    `end` exclusive; `picture_only` marks a message that is a picture and has no words (a
    Bilibili emoticon danmaku, a sticker). `extra` carries kind-specific fields that templates
    may use: gift, num, combo_id, months, reward, viewers...
    """

    platform: str
    kind: Kind
    text: str = ""
    user: User = field(default_factory=User)
    amount: float | None = None  # paid value in `currency` units
    currency: str | None = None
    id: str = ""  # platform message id, for deletions and dedupe
    room: str = ""
    received_at: float = field(default_factory=time.time)
    emotes: list[tuple[int, int]] = field(default_factory=list)
    picture_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def paid(self) -> bool:
        """Money changed hands (a super chat, bits, a gift bought with real currency)."""
        if self.kind in PAID_KINDS:
            return True
        return bool(self.amount) and self.currency not in (None, "", "free", "silver")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["emotes"] = [list(e) for e in self.emotes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:
        """Build a Message from a plain dict (a replay line, an `inject` request)."""
        d = dict(d)
        user = d.pop("user", None) or {}
        if isinstance(user, str):
            user = {"name": user}
        known_user = User.__dataclass_fields__
        bad = sorted(set(user) - set(known_user))
        if bad:
            raise ValueError(f"unknown user field(s) {bad}; known: {sorted(known_user)}")
        kind = Kind(d.pop("kind", "danmaku"))
        known = set(cls.__dataclass_fields__) - {"user", "kind"}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown message field(s) {bad}; known: {sorted(known)}")
        if "platform" not in d:
            raise ValueError("a message needs a 'platform' (bilibili, twitch, ...)")
        for key, types in _FIELD_TYPES.items():
            if key in d and d[key] is not None and not isinstance(d[key], types):
                raise ValueError(f"message field {key!r} must be {_type_names(types)}, not {type(d[key]).__name__}")
        for key, types in _USER_TYPES.items():
            if key in user and not isinstance(user[key], types):
                raise ValueError(f"user field {key!r} must be {_type_names(types)}, not {type(user[key]).__name__}")
        if "emotes" in d:
            d["emotes"] = _spans(d["emotes"], d.get("text") or "")
        return cls(kind=kind, user=User(**user), **d)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "platform": (str,), "text": (str,), "amount": (int, float), "currency": (str,), "id": (str,),
    "room": (str,), "received_at": (int, float), "extra": (dict,), "emotes": (list,), "picture_only": (bool,),
}  # fmt: skip
_USER_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "name": (str,), "level": (int,), "medal_name": (str,), "medal_level": (int,),
    "membership": (str,), "moderator": (bool,), "broadcaster": (bool,), "vip": (bool,),
}  # fmt: skip


def _spans(raw: list, text: str) -> list[tuple[int, int]]:
    """Emote spans from a plain list (a replay line): ``[[start, end], ...]`` within the text."""
    out = []
    for span in raw:
        if not (isinstance(span, (list, tuple)) and len(span) == 2 and all(type(x) is int for x in span)):
            raise ValueError(f"message field 'emotes' holds [start, end] pairs of integers, not {span!r}")
        start, end = span
        if not 0 <= start < end <= len(text):
            raise ValueError(f"emote span {span!r} does not fit a text of {len(text)} characters")
        out.append((start, end))
    return out


def _type_names(types: tuple[type, ...]) -> str:
    if float in types:
        return "a number"
    name = types[0].__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def as_int(v: Any, default: int = 0) -> int:
    """A field of a platform's payload as an int; `default` when it is missing or no number.

    Payloads are untrusted: a string, a null or an overflowing float where a number belongs
    must not lose the rest of the message. Sources (and moderation, reading `extra`) use this.
    """
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return default


def as_str(v: Any) -> str:
    """A field of a platform's payload as text: strings as they are, None as "", others by str()."""
    return v if isinstance(v, str) else ("" if v is None else str(v))


@dataclass
class Deletion:
    """A platform took something back: queued or playing speech for it must go.

    Either specific platform message ids (a super chat deleted, a Twitch CLEARMSG), all
    messages of one user (a timeout or ban), or everything from that platform (chat cleared).
    """

    platform: str
    message_ids: list[str] = field(default_factory=list)
    user_id: str | None = None
    everything: bool = False
    reason: str = ""


class Priority(int, enum.Enum):
    """Queue classes, highest first, and what each class means.

    Every rule that depends on a class reads these facts, defined here once:

    - ``paid``: money changed hands (super chats, bits, paid gifts);
    - ``membership``: a membership was bought (guards, subs);
    - ``owed``: paid or membership speech. The streamer owes it to the viewer: it is journaled
      (a crash or restart does not lose it), retried when synthesis fails, shortened rather
      than refused for length, and dropped for space only when nothing else is left;
    - ``anonymous_in_flood``: in flood mode its usernames are no longer read;
    - ``greeting``: the lowest class, for the greeter's aggregated lines (entries, follows, likes):
      short-lived, never journaled, and never said while anything of a higher class waits.
    """

    URGENT = 0  # the operator's own `say`
    PAID = 1
    MEMBERSHIP = 2
    MODERATOR = 3
    NORMAL = 4
    LOW = 5  # free gifts, system notices
    GREETING = 6  # "欢迎 小明、阿花 等 5 位进入直播间": the greeter's lines (greetings.py)

    @property
    def paid(self) -> bool:
        return self is Priority.PAID

    @property
    def membership(self) -> bool:
        return self is Priority.MEMBERSHIP

    @property
    def owed(self) -> bool:
        return self in (Priority.PAID, Priority.MEMBERSHIP)

    @property
    def anonymous_in_flood(self) -> bool:
        return self in (Priority.NORMAL, Priority.LOW, Priority.GREETING)

    @property
    def greeting(self) -> bool:
        return self is Priority.GREETING

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[str(value).upper()]
        except KeyError:
            names = ", ".join(p.name.lower() for p in cls)
            raise ValueError(f"unknown priority {value!r}; use one of {names}") from None


_ids = itertools.count(1)


@dataclass
class Utterance:
    """One thing the daemon will say: text, voice, priority, and when it goes stale."""

    text: str
    priority: Priority = Priority.NORMAL
    voice: str | None = None  # a voice id; None = the default voice
    deadline: float | None = None  # time.monotonic() after which it is stale
    message: Message | None = None  # what caused it, when it came from chat
    source: str = ""  # the source instance name, "control" for say/inject
    options: dict[str, Any] = field(default_factory=dict)  # per-request engine options (speed, steps, ...)
    id: int = field(default_factory=lambda: next(_ids))
    created: float = field(default_factory=time.monotonic)
    created_wall: float = field(default_factory=time.time)
    # stable across retries and restarts: the journal's row key for owed speech
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    # the sinks that already played it to the end (a retry or a restart plays it to the others)
    delivered: set[str] = field(default_factory=set)

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (now if now is not None else time.monotonic()) > self.deadline

    def event_fields(self) -> dict[str, Any]:
        """The fields every event about this utterance carries."""
        d: dict[str, Any] = {"id": self.id, "priority": self.priority.name.lower(), "text": self.text}
        if self.source:
            d["source"] = self.source
        if self.message is not None:
            d.update(platform=self.message.platform, kind=self.message.kind.value, user=self.message.user.name)
        return d

    def summary(self) -> dict[str, Any]:
        m = self.message
        return {
            "id": self.id,
            "text": self.text,
            "priority": self.priority.name.lower(),
            "voice": self.voice,
            "source": self.source,
            "age_s": round(time.monotonic() - self.created, 3),
            "platform": m.platform if m else None,
            "kind": m.kind.value if m else None,
            "user": m.user.name if m else None,
            "message_id": m.id if m else None,
        }


@dataclass
class AudioChunk:
    """A piece of mono audio: float32 samples in [-1, 1] at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def pcm16(self) -> bytes:
        """Little-endian signed 16-bit PCM, the format WAV files and ALSA want."""
        clipped = np.clip(self.samples, -1.0, 1.0)
        return (clipped * 32767.0).astype("<i2").tobytes()
