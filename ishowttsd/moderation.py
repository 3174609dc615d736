"""Moderation: decide whether a Message is said, and turn it into an Utterance.

Every rejection carries a short machine-readable reason (counted in `status`, streamed by
`watch` as a ``filtered`` event). The checks, in order:

- ``bad_amount``: a paid amount that is not a finite, non-negative number (a broken packet);
- ``duplicate_id``: the same platform message id again (a source that reconnected and replayed);
- ``emoticon``: a chat line that is a picture with no words (``Message.picture_only``);
- ``blocked_user``, ``bot``: `block_users`, `ignore_bots` (by name or id, see `UserList`);
- for chat lines (danmaku) from anyone but moderators, the broadcaster and `allow_users`:
  ``not_allowed`` (`allow_only`), ``user_level``, ``medal_level``, ``not_member`` (no ``User.membership``);
- ``command``: a chat line that starts with ``!`` (for chat bots, not for the voice);
- ``free_gift`` (`read_free_gifts = false`), ``gift_value`` (a paid gift under `min_gift_value`,
  judged per message);
- the text is cleaned: emotes (``Message.emotes``, spans the source checked) removed, links removed
  (or replaced by `link_replacement`), emoji beyond `max_emoji` removed, runs of one character
  (or of a 2-4 character unit) longer than `max_repeat` collapsed; digits are never collapsed;
- ``empty``: nothing left to say; ``blocked_word`` / ``blocked_pattern`` (on the text before and
  after cleaning, and the user name);
- ``duplicate`` (same text within `duplicate_window_s`), ``cooldown`` (`user_cooldown_s`) for chat;
- the words are made sayable (``pronounce.py``): nicknames, replacements, emoji read or dropped,
  numbers as words, plugin rewrites; ``empty`` when that leaves nothing;
- ``too_long`` (`max_chars`, counted before repeats are collapsed: a wall of one character is
  refused, not read as three), ``too_long_spoken`` (`max_spoken_s`, estimated from the text with
  `cjk_chars_per_s` / `latin_chars_per_s`). Paid and membership speech is never refused for
  length: it is shortened to fit.

Moderation knows no platform: sources hand it neutral fields (``Message.emotes``,
``Message.picture_only``, ``User.membership``) and kind-specific template fields in ``extra``.

Gift combos: gifts with the same ``extra["combo_id"]`` (or, without one, the same platform, user
and ``extra["gift"]``) within `combo_window_s` of the previous one are merged while the first
utterance is still waiting: its text is re-rendered with the summed ``extra["num"]`` (or with
``extra["combo_total"]`` when the source knows the running total) and the message is reported
as `Merged`, not queued again.

State that must survive a config reload (cooldowns, recent texts and ids, open combos) lives in
`ModerationState`, which a new Moderator adopts.
"""

from __future__ import annotations

import functools
import math
import re
import string
import time
import unicodedata
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import emoji

from ishowttsd.config import ConfigError, ModerationConfig
from ishowttsd.messages import Kind, Message, Priority, User, Utterance, as_int
from ishowttsd.pronounce import MAYBE_EMOJI, Pronouncer

DEFAULT_TEMPLATES: dict[str, str] = {
    "danmaku": "{user}说：{text}",
    "gift": "感谢{user}送的{num}个{gift}",
    "superchat": "{user}的醒目留言：{text}",
    "guard": "感谢{user}开通{membership}",
    "sub": "{user} subscribed. {text}",
    "bits": "{user} cheered {bits} bits. {text}",
    "redemption": "{user} redeemed {reward}. {text}",
    "raid": "{user} is raiding with {viewers} viewers!",
    "system": "{text}",
    "twitch.danmaku": "{user} says: {text}",
    "twitch.gift": "{user} gifted {num} {gift}",
    # YouTube's membership lines are YouTube's own words ("Member for 8 months: ..."), in the source's `hl`
    "youtube.danmaku": "{user} says: {text}",
    "youtube.superchat": "{user} sent a {amount} {currency} Super Chat. {text}",
    "youtube.sub": "{user}: {text}",
}

# when the username is not read (read_username = false for the kind, or flood mode)
DEFAULT_ANONYMOUS_TEMPLATES: dict[str, str] = {
    "danmaku": "{text}",
    "gift": "收到{num}个{gift}",
    "superchat": "醒目留言：{text}",
    "guard": "感谢开通{membership}",
    "sub": "New subscriber. {text}",
    "bits": "{bits} bits. {text}",
    "redemption": "{reward} redeemed. {text}",
    "raid": "A raid with {viewers} viewers!",
    "system": "{text}",
    "twitch.gift": "{num} {gift} gifted",
    "youtube.superchat": "A {amount} {currency} Super Chat. {text}",
    "youtube.sub": "{text}",
}

TEMPLATE_FIELDS = frozenset(
    {"user", "text", "num", "gift", "amount", "bits", "currency", "guard", "membership", "months", "reward", "viewers",
     "platform", "backlog"}
)  # fmt: skip

CHAT_KINDS = frozenset({Kind.DANMAKU})
# template fields that hold numbers: said as words like the text's numbers (`read_numbers`)
NUMBER_FIELDS = ("num", "amount", "bits", "months", "viewers")

_WS = re.compile(r"\s+")
_LINK = re.compile(
    r"(?i)\b(?:https?://|www\.)\S+"
    r"|\b[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|net|org|io|tv|gg|ly|cn|me|co|xyz|info|live|link|app|dev)\b(?:/\S*)?"
)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002FFFF]")


@dataclass
class Rejection:
    reason: str  # a short machine-readable reason: too_long, blocked_word, empty, ...
    detail: str = ""


@dataclass
class Merged:
    """A gift merged into a combo that is still waiting: `utterance.text` now says the total."""

    utterance: Utterance
    total: int


def template_problem(template: str) -> str | None:
    """What is wrong with a template, in words, or None."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        return f"{e}; use {{name}} for fields and {{{{ }}}} for braces"
    bad = sorted(f for f in fields if f not in TEMPLATE_FIELDS)
    if bad:
        return f"unknown field(s) {bad}; use {sorted(TEMPLATE_FIELDS)}"
    return None


def check_template(key: str, template: str, where: str = "moderation.templates") -> None:
    problem = template_problem(template)
    if problem:
        raise ConfigError(f"{where}.{key}: {problem}")


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return ""


class UserList:
    """Users named by name, id, or ``platform:name-or-id``; names compare case-insensitively."""

    def __init__(self, entries: list[str]) -> None:
        self.any: set[str] = set()
        self.by_platform: set[tuple[str, str]] = set()
        for e in entries:
            e = e.strip()
            if not e:
                continue
            plat, sep, who = e.partition(":")
            if sep and plat and who:
                self.by_platform.add((plat.casefold(), who.casefold()))
            else:
                self.any.add(e.casefold())

    def __bool__(self) -> bool:
        return bool(self.any or self.by_platform)

    def match(self, platform: str, user: User) -> bool:
        keys = {k.casefold() for k in (user.id, user.name) if k}
        if keys & self.any:
            return True
        plat = platform.casefold()
        return any((plat, k) in self.by_platform for k in keys)


@dataclass
class _Combo:
    utterance: Utterance
    num: int
    last: float


@dataclass
class ModerationState:
    """What moderation remembers between messages; a reloaded Moderator keeps it.

    Every table is bounded in time and in size, so a flood cannot grow memory without limit.
    """

    max_entries: int = 20_000
    last_spoke: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)
    recent_texts: OrderedDict[str, float] = field(default_factory=OrderedDict)
    recent_ids: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)
    combos: OrderedDict[str, _Combo] = field(default_factory=OrderedDict)
    pronounce: Counter[str] = field(default_factory=Counter)  # replacements made, pattern timeouts, ...

    def remember(self, table: OrderedDict, key: Any, now: float, horizon: float) -> None:
        table[key] = now
        table.move_to_end(key)
        while table:
            k, t = next(iter(table.items()))
            if len(table) > self.max_entries or now - t > horizon:
                del table[k]
            else:
                break

    def seen_id(self, platform: str, msg_id: str, now: float) -> None:
        self.remember(self.recent_ids, (platform, msg_id), now, 3600.0)


class Moderator:
    """Turns Messages into Utterances (or Merged, or Rejections) under one ModerationConfig."""

    def __init__(
        self,
        cfg: ModerationConfig,
        ttl: dict[Priority, float],
        state: ModerationState | None = None,
        clock: Callable[[], float] = time.monotonic,
        report: Callable[..., None] | None = None,
        rewrite: Callable[..., str] | None = None,
        live_default: Callable[[], str | None] | None = None,
    ) -> None:
        """`report(event, **fields)` publishes what a user should see (the event bus);
        `rewrite(text, message, language, on_error)` runs the plugins' text rewrites."""
        self.cfg = cfg
        self.ttl = ttl
        self.clock = clock
        self.live_default = live_default  # the default voice chosen at run time (ishowttsctl voice-default)
        self.state = state if state is not None else ModerationState()
        for key, tpl in cfg.templates.items():
            check_template(key, tpl)
        for key, tpl in cfg.anonymous_templates.items():
            check_template(key, tpl, "moderation.anonymous_templates")
        for where, table in (("read_username", cfg.read_username), ("kind_voices", cfg.kind_voices)):
            for k in table:
                if k not in {x.value for x in Kind}:
                    raise ConfigError(f"moderation.{where}.{k}: unknown kind; use one of {[x.value for x in Kind]}")
        self.templates = {**DEFAULT_TEMPLATES, **cfg.templates}
        self.anonymous = {**DEFAULT_ANONYMOUS_TEMPLATES, **cfg.anonymous_templates}
        self._block = [w.casefold() for w in cfg.block_words if w.strip()]
        try:
            self._patterns = [re.compile(p, re.IGNORECASE) for p in cfg.block_patterns]
        except re.error as e:  # config.py validates too; this guards direct construction
            raise ConfigError(f"moderation.block_patterns: {e}") from None
        self._blocked = UserList(cfg.block_users)
        self._allowed = UserList(cfg.allow_users)
        self._bots = {b.casefold() for b in cfg.ignore_bots}
        self._user_voices = {k.casefold(): v for k, v in cfg.user_voices.items()}
        self.pronounce = Pronouncer(cfg, self.state.pronounce, report=report, rewrite=rewrite)
        n = cfg.max_repeat
        self._repeat1 = re.compile(r"(\D)\1{%d,}" % n)
        self._repeat_unit = re.compile(r"(\D.{1,3}?)\1{%d,}" % n)

    # -- classes -------------------------------------------------------------------------------

    def priority_of(self, m: Message) -> Priority:
        if m.kind in (Kind.SUPERCHAT, Kind.BITS):
            return Priority.PAID
        if m.kind == Kind.GIFT:
            return Priority.PAID if m.paid else Priority.LOW
        if m.kind in (Kind.GUARD, Kind.SUB):
            return Priority.MEMBERSHIP
        if m.kind == Kind.RAID or m.user.moderator or m.user.broadcaster:
            return Priority.MODERATOR
        if m.kind == Kind.SYSTEM:
            return Priority.LOW
        return Priority.NORMAL

    def trusted(self, m: Message) -> bool:
        """Moderators, the broadcaster and allow-listed users pass every check on *who* speaks."""
        return m.user.moderator or m.user.broadcaster or self._allowed.match(m.platform, m.user)

    # -- the decision --------------------------------------------------------------------------

    def moderate(
        self,
        m: Message,
        source: str = "",
        flood: bool = False,
        is_pending: Callable[[int], bool] | None = None,
    ) -> Utterance | Merged | Rejection:
        cfg, st, now = self.cfg, self.state, self.clock()
        if m.amount is not None and not (isinstance(m.amount, (int, float)) and math.isfinite(m.amount) and m.amount >= 0):
            # an infinite or negative "payment" is a broken or hostile packet, not money
            return Rejection("bad_amount", f"amount {m.amount!r} is not a finite, non-negative number")
        priority = self.priority_of(m)
        if m.id:
            if (m.platform, m.id) in st.recent_ids:
                return Rejection("duplicate_id", f"message {m.id} was seen already")
            st.seen_id(m.platform, m.id, now)
        if cfg.strip_emotes and m.kind in CHAT_KINDS and m.picture_only:
            return Rejection("emoticon", "a picture with no words to say")
        if self._blocked.match(m.platform, m.user):
            return Rejection("blocked_user", "user is in block_users")
        if m.user.name and m.user.name.casefold() in self._bots:
            return Rejection("bot", f"{m.user.name} is in ignore_bots")
        chat = m.kind in CHAT_KINDS
        trusted = self.trusted(m)
        if chat and not trusted:
            r = self._user_gate(m)
            if r is not None:
                return r
        raw = m.text or ""
        if chat and cfg.ignore_commands and raw.lstrip().startswith(("!", "！")):
            return Rejection("command", "a !command is for chat bots")
        if m.kind == Kind.GIFT:
            if not m.paid and not cfg.read_free_gifts:
                return Rejection("free_gift", "read_free_gifts is off")
            if m.paid and cfg.min_gift_value and (m.amount or 0) < cfg.min_gift_value:
                return Rejection("gift_value", f"worth {m.amount} < min_gift_value {cfg.min_gift_value}")
        stripped = self.strip(m)
        text = self.collapse(stripped)
        if not text and (chat or m.kind == Kind.SYSTEM):
            why = "only links, emotes or emoji" if raw.strip() else "no text"
            return Rejection("empty", f"nothing left to say ({why})")
        r = self._content(raw, text, m.user.name)
        if r is not None:
            return r
        norm = _norm(text)
        if chat and cfg.duplicate_window_s and norm:
            last = st.recent_texts.get(norm)
            if last is not None and now - last <= cfg.duplicate_window_s:
                return Rejection("duplicate", f"same text within {cfg.duplicate_window_s:g} s")
        ukey = (m.platform, m.user.id or m.user.name)
        if chat and not trusted and cfg.user_cooldown_s and ukey[1]:
            last = st.last_spoke.get(ukey)
            if last is not None and now - last < cfg.user_cooldown_s:
                return Rejection("cooldown", f"{now - last:.1f} s since this user's last line < {cfg.user_cooldown_s:g} s")
        if len(stripped) > cfg.max_chars:  # a wall of one character is too long, not "哈哈哈"
            if not priority.owed:
                return Rejection("too_long", f"{len(stripped)} characters > max_chars {cfg.max_chars}")
            if len(text) > cfg.max_chars:
                text = text[: cfg.max_chars].rstrip() + "…"
        if m.kind == Kind.GIFT:
            merged = self._merge_combo(m, now, flood, priority, is_pending)
            if merged is not None:
                return merged
        if self.pronounce.active:
            text = self.pronounce.text(text, m)
            if not text.strip() and (chat or m.kind == Kind.SYSTEM):
                return Rejection("empty", "nothing left to say once emoji, replacements and rewrites were applied")
        anonymous = (flood and priority.anonymous_in_flood) or not cfg.read_username.get(m.kind.value, True)
        if not anonymous:
            self.pronounce.name(m, count=True)  # counted once here; render() says it each time
        said = self.render(m, text, anonymous=anonymous)
        if cfg.max_spoken_s and self.estimate_s(said) > cfg.max_spoken_s:
            if not priority.owed:
                return Rejection("too_long_spoken", f"about {self.estimate_s(said):.1f} s > max_spoken_s {cfg.max_spoken_s:g}")
            said = self._fit(m, text, anonymous)
        if not said.strip():
            return Rejection("empty", "the template produced nothing to say")
        if chat and norm:
            st.remember(st.recent_texts, norm, now, max(cfg.duplicate_window_s, 1.0))
        if chat and ukey[1]:
            st.remember(st.last_spoke, ukey, now, max(cfg.user_cooldown_s, 1.0))
        ttl = self.ttl.get(priority)
        utt = Utterance(
            text=said,
            priority=priority,
            voice=self.voice_for(m),
            deadline=None if ttl is None else time.monotonic() + ttl,
            message=m,
            source=source,
        )
        if m.kind == Kind.GIFT and self.cfg.combo_window_s:
            num = as_int(m.extra.get("combo_total")) or as_int(m.extra.get("num"), 1)
            key = _combo_key(m)
            st.combos[key] = _Combo(utt, num, now)
            st.combos.move_to_end(key)
            self._prune_combos(now)
        return utt

    def _user_gate(self, m: Message) -> Rejection | None:
        cfg, u = self.cfg, m.user
        if cfg.allow_only:
            return Rejection("not_allowed", "allow_only: only allow_users, moderators and the broadcaster")
        if cfg.min_user_level and u.level < cfg.min_user_level:
            return Rejection("user_level", f"user level {u.level} < min_user_level {cfg.min_user_level}")
        if cfg.min_medal_level:
            level = u.medal_level if (not cfg.medal_name or u.medal_name == cfg.medal_name) else 0
            if level < cfg.min_medal_level:
                what = f"{cfg.medal_name} medal" if cfg.medal_name else "fan medal"
                return Rejection("medal_level", f"{what} level {level} < min_medal_level {cfg.min_medal_level}")
        if cfg.require_member and not u.membership:
            return Rejection("not_member", "require_member: only members (guards, subscribers)")
        return None

    def _content(self, raw: str, text: str, name: str) -> Rejection | None:
        # full-width letters, zero-width spaces and soft hyphens must not smuggle a word past us
        views = [_fold(x) for x in (raw, text, name) if x]
        folded = "\n".join(views)
        for word in self._block:
            if _fold(word) in folded:
                return Rejection("blocked_word", f"contains a blocked word ({_mask(word)})")
        for i, pat in enumerate(self._patterns):
            if any(pat.search(v) for v in (raw, text, name, *views) if v):
                return Rejection("blocked_pattern", f"matches block_patterns[{i}]")
        return None

    def _merge_combo(self, m: Message, now: float, flood: bool, priority: Priority, is_pending) -> Merged | None:
        if not self.cfg.combo_window_s:
            return None
        key = _combo_key(m)
        combo = self.state.combos.get(key)
        if combo is None or now - combo.last > self.cfg.combo_window_s:
            return None
        if is_pending is not None and not is_pending(combo.utterance.id):
            return None  # already said: this part of the combo is new speech
        if combo.utterance.priority != priority:
            return None
        total = as_int(m.extra.get("combo_total"))
        combo.num = total if total else combo.num + as_int(m.extra.get("num"), 1)
        combo.last = now
        self.state.combos.move_to_end(key)
        first = combo.utterance.message
        merged = Message(
            platform=m.platform, kind=m.kind, text=m.text, user=m.user, amount=m.amount, currency=m.currency,
            id=first.id if first else m.id, room=m.room, extra={**m.extra, "num": combo.num},
        )  # fmt: skip
        anonymous = (flood and priority.anonymous_in_flood) or not self.cfg.read_username.get(m.kind.value, True)
        combo.utterance.text = self.render(merged, m.text or "", anonymous=anonymous)
        return Merged(combo.utterance, combo.num)

    def _prune_combos(self, now: float) -> None:
        combos = self.state.combos
        while combos:
            k, c = next(iter(combos.items()))
            if len(combos) > self.state.max_entries or now - c.last > self.cfg.combo_window_s:
                del combos[k]
            else:
                break

    # -- text ----------------------------------------------------------------------------------

    def clean(self, m: Message) -> str:
        """The message text with emotes, links, emoji floods and repeats taken out."""
        return self.collapse(self.strip(m))

    def strip(self, m: Message) -> str:
        """The message text without emotes, links and the emoji past `max_emoji`."""
        cfg = self.cfg
        text = m.text or ""
        if cfg.strip_emotes and m.emotes:
            chars = list(text)
            for start, end in m.emotes:
                chars[start:end] = " " * (end - start)
            text = "".join(chars)
        if cfg.strip_links:
            text = _LINK.sub(cfg.link_replacement, text)
        text = _limit_emoji(text, cfg.max_emoji)
        return _WS.sub(" ", text).strip()

    def collapse(self, text: str) -> str:
        """Runs of one character (or a 2-4 character unit) cut to `max_repeat`; digits are kept."""
        cfg = self.cfg
        text = self._repeat1.sub(lambda mt: mt.group(1) * cfg.max_repeat, text)
        text = self._repeat_unit.sub(lambda mt: mt.group(1) * cfg.max_repeat, text)
        return _WS.sub(" ", text).strip()

    def estimate_s(self, text: str) -> float:
        """About how long `text` takes to say: CJK characters and the rest have their own pace."""
        cjk = len(_CJK.findall(text))
        rest = len(text) - cjk
        return cjk / self.cfg.cjk_chars_per_s + rest / self.cfg.latin_chars_per_s

    def _fit(self, m: Message, text: str, anonymous: bool) -> str:
        lo, hi = 0, len(text)
        while lo < hi:  # the longest prefix of the text whose rendering fits
            mid = (lo + hi + 1) // 2
            if self.estimate_s(self.render(m, text[:mid].rstrip() + "…", anonymous)) <= self.cfg.max_spoken_s:
                lo = mid
            else:
                hi = mid - 1
        return self.render(m, (text[:lo].rstrip() + "…") if lo < len(text) else text, anonymous)

    def render(self, m: Message, text: str, anonymous: bool = False, **more: Any) -> str:
        keys = (f"{m.platform}.{m.kind.value}", m.kind.value)
        tpl = None
        if anonymous:
            tpl = next((self.anonymous[k] for k in keys if k in self.anonymous), None)
        if tpl is None:
            tpl = next((self.templates[k] for k in keys if k in self.templates), "{text}")
        fields = _Fields(_template_fields(m, text))
        if self.pronounce.active:
            fields["user"] = self.pronounce.name(m)
            for k in _number_fields(tpl):
                fields[k] = self.pronounce.field(fields[k], tpl)
        fields.update(more)
        return _WS.sub(" ", tpl.format_map(fields)).strip()

    def status(self) -> dict[str, Any]:
        """What the pronunciation step holds and has done (`status` → `moderation`)."""
        return self.pronounce.status()

    def voice_for(self, m: Message) -> str | None:
        uv = self._user_voices
        if uv:
            for key in (f"{m.platform}:{m.user.id}", f"{m.platform}:{m.user.name}", m.user.id, m.user.name):
                if key and key.casefold() in uv:
                    return uv[key.casefold()]
        kind = self.cfg.kind_voices.get(m.kind.value)
        if kind:
            return kind
        if self.live_default is not None and self.live_default():
            return None  # the streamer chose a default at run time: the engine host's default applies
        return self.cfg.default_voice


@functools.lru_cache(maxsize=256)
def _number_fields(template: str) -> tuple[str, ...]:
    """The fields of NUMBER_FIELDS a template uses."""
    used = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    return tuple(f for f in NUMBER_FIELDS if f in used)


def _limit_emoji(text: str, keep: int) -> str:
    """`text` with the emoji past the first `keep` removed. What is one emoji comes from
    Unicode's own data (the `emoji` package): a flag, a keycap, a tag flag, a skin tone or a
    family joined by ZWJ is one, and is kept or removed whole; ☆ and ✓ are not emoji."""
    if len(text) <= keep or not MAYBE_EMOJI.search(text):
        return text
    found = emoji.emoji_list(text)
    if len(found) <= keep:
        return text
    out, pos = [], 0
    for e in found[keep:]:
        out.append(text[pos : e["match_start"]])
        pos = e["match_end"]
    out.append(text[pos:])
    return "".join(out)


def _fold(text: str) -> str:
    """For block checks: compatibility forms folded (ｂａｄ → bad), case folded, invisible
    format characters (zero-width space, soft hyphen, joiners) removed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _norm(text: str) -> str:
    """The text as duplicate suppression compares it: case, width and spacing ignored."""
    return _WS.sub("", unicodedata.normalize("NFKC", text).casefold())


def _combo_key(m: Message) -> str:
    cid = m.extra.get("combo_id")
    if cid:
        return f"{m.platform}:combo:{cid}"
    return f"{m.platform}:{m.user.id or m.user.name}:{m.extra.get('gift', '')}"


def _template_fields(m: Message, text: str) -> dict[str, Any]:
    amount = m.amount
    if amount is not None and float(amount).is_integer():
        amount = int(amount)
    return {
        "user": m.user.name or "someone",
        "text": text,
        "num": m.extra.get("num", 1),
        "gift": m.extra.get("gift", ""),
        "amount": "" if amount is None else amount,
        "bits": m.extra.get("bits", "" if amount is None else amount),
        "currency": m.currency or "",
        "guard": m.user.membership,  # the older name of {membership}
        "membership": m.user.membership,
        "months": m.extra.get("months", ""),
        "reward": m.extra.get("reward", ""),
        "viewers": m.extra.get("viewers", ""),
        "platform": m.platform,
    }


def _mask(word: str) -> str:
    # the log and `watch` name which rule hit without repeating the word itself
    return word[0] + "*" * (len(word) - 1) if len(word) > 1 else "*"
