"""Moderation: decide whether a Message is said, and turn it into an Utterance.

This is the first version (max length, block words, templates, voices, priority classes);
every rejection carries a reason that is counted and shown in `watch` and `status`.
"""

from __future__ import annotations

import re
import string
import time
from dataclasses import dataclass
from typing import Any

from ishowttsd.config import ConfigError, ModerationConfig
from ishowttsd.messages import Kind, Message, Priority, Utterance

GUARD_NAMES = {1: "总督", 2: "提督", 3: "舰长"}

DEFAULT_TEMPLATES: dict[str, str] = {
    "danmaku": "{user}说：{text}",
    "gift": "感谢{user}送的{num}个{gift}",
    "superchat": "{user}的醒目留言：{text}",
    "guard": "感谢{user}开通{guard}",
    "sub": "{user} subscribed. {text}",
    "bits": "{user} cheered {amount} bits. {text}",
    "redemption": "{user} redeemed {reward}. {text}",
    "raid": "{user} is raiding with {viewers} viewers!",
    "system": "{text}",
    "twitch.danmaku": "{user} says: {text}",
    "twitch.gift": "{user} gifted {num} {gift}",
}

TEMPLATE_FIELDS = frozenset(
    {"user", "text", "num", "gift", "amount", "currency", "guard", "months", "reward", "viewers", "platform"}
)

_WS = re.compile(r"\s+")


@dataclass
class Rejection:
    reason: str  # a short machine-readable reason: too_long, blocked_word, empty, ...
    detail: str = ""


def check_template(key: str, template: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ConfigError(f"moderation.templates.{key}: {e}; use {{name}} for fields and {{{{ }}}} for braces") from None
    bad = sorted(f for f in fields if f not in TEMPLATE_FIELDS)
    if bad:
        raise ConfigError(
            f"moderation.templates.{key}: unknown field(s) {bad}; use {sorted(TEMPLATE_FIELDS)}"
        )


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return ""


class Moderator:
    """Turns Messages into Utterances or Rejections under one ModerationConfig."""

    def __init__(self, cfg: ModerationConfig, ttl: dict[Priority, float]) -> None:
        self.cfg = cfg
        self.ttl = ttl
        self.templates = {**DEFAULT_TEMPLATES, **cfg.templates}
        for key, tpl in cfg.templates.items():
            check_template(key, tpl)
        self._block = [w.casefold() for w in cfg.block_words if w.strip()]

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

    def moderate(self, m: Message, source: str = "") -> Utterance | Rejection:
        text = _WS.sub(" ", m.text or "").strip()
        priority = self.priority_of(m)
        if m.kind == Kind.DANMAKU and m.extra.get("dm_type") == 1:
            return Rejection("emoticon", "emoticon danmaku has no words to say")
        if m.kind in (Kind.DANMAKU, Kind.SYSTEM) and not text:
            return Rejection("empty", "nothing left to say")
        folded = f"{text} {m.user.name}".casefold()
        for word in self._block:
            if word in folded:
                return Rejection("blocked_word", f"contains a blocked word ({_mask(word)})")
        if len(text) > self.cfg.max_chars:
            if priority > Priority.MEMBERSHIP:
                return Rejection("too_long", f"{len(text)} characters > max_chars {self.cfg.max_chars}")
            # paid speech is never refused for length: it is cut to fit
            text = text[: self.cfg.max_chars].rstrip() + "…"
        said = self.render(m, text)
        if not said.strip():
            return Rejection("empty", "the template produced nothing to say")
        voice = self.cfg.kind_voices.get(m.kind.value) or self.cfg.default_voice
        ttl = self.ttl.get(priority)
        return Utterance(
            text=said,
            priority=priority,
            voice=voice,
            deadline=None if ttl is None else time.monotonic() + ttl,
            message=m,
            source=source,
        )

    def render(self, m: Message, text: str) -> str:
        tpl = self.templates.get(f"{m.platform}.{m.kind.value}") or self.templates.get(m.kind.value) or "{text}"
        fields = _Fields(_template_fields(m, text))
        return _WS.sub(" ", tpl.format_map(fields)).strip()


def _template_fields(m: Message, text: str) -> dict[str, Any]:
    amount = m.amount
    if amount is not None and float(amount).is_integer():
        amount = int(amount)
    guard = m.extra.get("guard") or GUARD_NAMES.get(int(m.extra.get("guard_level") or m.user.guard_level or 0), "")
    return {
        "user": m.user.name or "someone",
        "text": text,
        "num": m.extra.get("num", 1),
        "gift": m.extra.get("gift", ""),
        "amount": "" if amount is None else amount,
        "currency": m.currency or "",
        "guard": guard,
        "months": m.extra.get("months", ""),
        "reward": m.extra.get("reward", ""),
        "viewers": m.extra.get("viewers", ""),
        "platform": m.platform,
    }


def _mask(word: str) -> str:
    # the log and `watch` name which rule hit without repeating the word itself
    return word[0] + "*" * (len(word) - 1) if len(word) > 1 else "*"
