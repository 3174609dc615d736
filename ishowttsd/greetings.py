"""Greetings: the room's entries, follows, shares and likes as one throttled line.

Platforms announce every viewer who enters, follows, shares or likes; a busy room sends
thousands a second. Read one by one they would drown the chat, so they are never queued one
by one: `Greeter.add` gathers them (O(1) per event, bounded memory) and at most once per
`[greetings] interval_s` one line says them all ("欢迎 小明、阿花 等 5 位进入直播间；感谢 小明 的关注").

That line is of the lowest class (``Priority.GREETING``), short-lived (`ttl_s`), never journaled,
and never delays chat or paid speech: it is made only while nothing else waits, what was
gathered while chat kept the queue busy is dropped once it is older than `ttl_s`
(``greeting.stale``), and a greeting prepared ahead is cut as soon as other speech arrives.
Off by default: `[greetings] kinds` lists the kinds to read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import anyio

from ishowttsd.config import GreetingsConfig
from ishowttsd.events import EventBus
from ishowttsd.messages import Kind, Message, Priority, Utterance

# the order the parts of one line are said in: rarer, warmer things first
ORDER = (Kind.FOLLOW, Kind.SHARE, Kind.ENTER, Kind.LIKE)

TEMPLATES: dict[str, dict[str, str]] = {
    "zh": {
        "enter": "欢迎 {names} 进入直播间", "enter_more": "欢迎 {names} 等 {count} 位进入直播间",
        "enter_count": "欢迎 {count} 位进入直播间",
        "follow": "感谢 {names} 的关注", "follow_more": "感谢 {names} 等 {count} 位的关注",
        "follow_count": "感谢 {count} 位的关注",
        "share": "感谢 {names} 分享直播间", "share_more": "感谢 {names} 等 {count} 位分享直播间",
        "share_count": "感谢 {count} 位分享直播间",
        "like": "感谢 {names} 的点赞", "like_more": "感谢 {count} 位点赞", "like_count": "感谢 {count} 位点赞",
    },
    "en": {
        "enter": "Welcome {names}!", "enter_more": "Welcome {names} and {others} more!",
        "enter_count": "Welcome, {count} new viewers!",
        "follow": "Thanks for the follow, {names}!", "follow_more": "Thanks for the follows, {names} and {others} more!",
        "follow_count": "Thanks for {count} new follows!",
        "share": "Thanks for sharing, {names}!", "share_more": "Thanks for sharing, {names} and {others} more!",
        "share_count": "Thanks to {count} viewers for sharing!",
        "like": "Thanks for the like, {names}!", "like_more": "Thanks to {count} viewers for the likes!",
        "like_count": "Thanks to {count} viewers for the likes!",
    },
}  # fmt: skip
NAME_SEPARATOR = {"zh": "、", "en": ", "}
PART_SEPARATOR = {"zh": "；", "en": " "}

# distinct viewers remembered per kind and line: beyond it a flood is counted, not de-duplicated
MAX_SEEN = 5000


@dataclass
class _Gathered:
    """What one kind gathered for the next line."""

    first: float  # when the oldest event in it arrived (monotonic)
    platform: str
    count: int = 0
    names: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


class Greeter:
    """Gathers interaction messages and says them as one line per interval, when the room is quiet."""

    def __init__(self, cfg: GreetingsConfig, admit: Callable[[Utterance], list], queue, speaker, events: EventBus,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.admit = admit
        self.queue = queue
        self.speaker = speaker
        self.events = events
        self.clock = clock
        self._gathered: dict[Kind, _Gathered] = {}
        self._total_likes: int | None = None
        self._outstanding: dict[int, Utterance] = {}  # greeting lines queued, prepared or speaking
        self._last_line = -1e18
        self.counts: dict[str, int] = {k.value: 0 for k in ORDER}  # events gathered, per kind
        self.off = 0  # events of a kind that is not enabled
        self.lines = 0
        self.stale = 0  # events dropped because chat kept the queue busy past ttl_s
        self.yielded = 0  # prepared greeting lines cut for chat that arrived
        self.configure(cfg)

    def configure(self, cfg: GreetingsConfig) -> None:
        """Use a new `[greetings]` table (a reload); what was gathered for enabled kinds stays."""
        self.cfg = cfg
        self.kinds = {Kind(k) for k in cfg.kinds}
        self.templates = {**TEMPLATES[cfg.language], **cfg.templates}
        for k in list(self._gathered):
            if k not in self.kinds:
                del self._gathered[k]

    # -- gathering (every event: O(1)) ----------------------------------------------------------

    def add(self, m: Message) -> bool:
        """Gather one interaction; False when its kind is off (it is then only counted)."""
        if m.kind == Kind.LIKE and "total" in m.extra:  # the room's running like total
            total = m.extra.get("total")
            if isinstance(total, int) and total >= 0:
                self._total_likes = total
            if not m.user.name and not m.user.id:
                return m.kind in self.kinds
        if m.kind not in self.kinds:
            self.off += 1
            return False
        self.counts[m.kind.value] += 1
        g = self._gathered.get(m.kind)
        if g is None:
            g = self._gathered[m.kind] = _Gathered(first=self.clock(), platform=m.platform)
        key = f"{m.platform}:{m.user.id or m.user.name}"
        if len(g.seen) < MAX_SEEN:
            if key in g.seen:
                return True  # entered twice (a reconnect, a page reload): greeted once
            g.seen.add(key)
        g.count += 1
        name = m.user.name.strip()
        # a masked name ("小***", sent to anonymous clients) is counted, never read out
        if name and "*" not in name and len(g.names) < self.cfg.max_names and name not in g.names:
            g.names.append(name)
        return True

    # -- saying -----------------------------------------------------------------------------------

    def busy(self) -> bool:
        """Something else waits (queued, or prepared by the speaker, paused or not), or a greeting
        line has not been said yet: no new line now."""
        if len(self.queue) > 0 or self._outstanding:
            return True
        return any(p["priority"] != "greeting" for p in self.speaker.status()["prepared"])

    def tick(self) -> Utterance | None:
        """Called often: drops what went stale, and makes the next line when its time has come."""
        if self._outstanding and any(not u.priority.greeting for u in self.queue.pending()[:1]):
            self.other_speech(self.queue.pending()[0])  # an operator's `say`, a flood notice: any speech
        if not self._gathered:
            return None
        now = self.clock()
        for kind, g in list(self._gathered.items()):
            if now - g.first > self.cfg.ttl_s and (self.busy() or now - self._last_line < self.cfg.interval_s):
                del self._gathered[kind]
                self.stale += g.count
                self.events.publish("greeting.stale", kind=kind.value, count=g.count,
                                    waited_s=round(now - g.first, 2))  # fmt: skip
        if not self._gathered or self.busy() or now - self._last_line < self.cfg.interval_s:
            return None
        return self._say(now)

    def _say(self, now: float) -> Utterance | None:
        parts, counts, platform = [], {}, ""
        for kind in ORDER:
            g = self._gathered.pop(kind, None)
            if g is None or not g.count:
                continue
            parts.append(self.render(kind, g))
            counts[kind.value] = g.count
            platform = platform or g.platform
        if not parts:
            return None
        text = PART_SEPARATOR[self.cfg.language].join(parts)
        first = next(k for k in ORDER if k.value in counts)
        m = Message(platform=platform, kind=first, text=text, extra={"greeting": counts})
        utt = Utterance(text=text, priority=Priority.GREETING, voice=self.cfg.voice, deadline=now + self.cfg.ttl_s,
                        message=m, source="greetings")  # fmt: skip
        self._last_line = now
        self.lines += 1
        self._outstanding[utt.id] = utt
        if utt in self.admit(utt):
            self._outstanding.pop(utt.id, None)
        return utt

    def render(self, kind: Kind, g: _Gathered) -> str:
        names = NAME_SEPARATOR[self.cfg.language].join(g.names)
        form = "" if len(g.names) == g.count else ("_more" if g.names else "_count")
        fields = {"names": names, "count": g.count, "others": g.count - len(g.names),
                  "total": self._total_likes if self._total_likes is not None else ""}  # fmt: skip
        return " ".join(self.templates[f"{kind.value}{form}"].format_map(fields).split())

    # -- never in the way ---------------------------------------------------------------------------

    def other_speech(self, u: Utterance) -> None:
        """Other speech was accepted: a greeting line prepared ahead of it is cut (one already
        playing ends; a queued one waits behind it anyway, by class)."""
        if not self._outstanding or u.priority.greeting:
            return
        cur = self.speaker.current.utterance if self.speaker.current is not None else None
        cut = self.speaker.cut_where(lambda x: x.id in self._outstanding and x is not cur, "yielded")
        self.yielded += len(cut)

    def ended(self, u: Utterance, *_: Any) -> None:
        """A speaker or queue callback: the line was said, cut, dropped or expired."""
        self._outstanding.pop(u.id, None)

    async def run(self, period: float = 0.25) -> None:
        while True:
            await anyio.sleep(period)
            self.tick()

    def status(self) -> dict[str, Any]:
        return {
            "kinds": sorted(k.value for k in self.kinds),
            "interval_s": self.cfg.interval_s,
            "gathered": {k.value: g.count for k, g in self._gathered.items()},
            "received": dict(self.counts),
            "off": self.off,
            "lines": self.lines,
            "stale": self.stale,
            "yielded": self.yielded,
        }
