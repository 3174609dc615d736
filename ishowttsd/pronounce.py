r"""Saying names and words right: nicknames, replacements, numbers, emoji and plugin rewrites.

Moderation decides *whether* a message is said; this module decides *how its words sound*. It
runs on the cleaned text (and the user's name) just before the template is filled:

1. the user's name: a ``[moderation.nicknames]`` entry is said exactly as written; without one
   the name goes through the replacements like text does;
2. ``[moderation.replacements]``: plain words and phrases, matched case-insensitively in one
   pass over the text (Aho-Corasick, so thousands of entries cost no more than a few), the
   longest match wins and matches never overlap; a key that starts or ends with a Latin letter
   is not found inside a longer word ("lol" in "lollipop"), nor one that starts or ends with a
   digit inside a longer number ("666" in "6666"); "yyds666" holds both, CJK keys match anywhere;
3. ``[moderation.replacement_patterns]``: regular expressions (the `regex` module), in file
   order, on what the plain entries left; all of them together get `pattern_timeout_ms` per
   message, and a pattern that runs out is skipped for that message, counted and reported once;
4. emoji (``emoji = "drop" | "name"``) and numbers (``read_numbers``) in what is left: what a
   plain replacement or a nickname produced is said as the streamer wrote it, digits included;
   a pattern's result has its numbers read (``'(\d+)kg' = '\1公斤'`` says 六十公斤);
5. the ``ishowtts_rewrite_text`` plugin hook, in plugin load order; a plugin that raises is
   reported and skipped. This module is the first such plugin (an internal one, like the
   engines): it folds full-width letters and digits (ｌｏｌ → lol) that engines stumble on.

The text's language is judged from its script, per message, once the replacements are made:
any Chinese, Japanese or Korean character makes it ``zh``, Latin letters ``en``, neither
`default_language`.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

import ahocorasick
import cn2an
import emoji
import regex
from num2words import num2words

from ishowttsd.config import ConfigError, ModerationConfig
from ishowttsd.hookspecs import hookimpl
from ishowttsd.messages import Message, User

log = logging.getLogger("ishowttsd.pronounce")

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002FFFF]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
# every emoji holds one of these; text without any skips the emoji library's full scan
MAYBE_EMOJI = re.compile(r"[\u00a9\u00ae\u200d\u203c-\u3299\ufe0f\U0001F000-\U0001FAFF\U000E0020-\U000E007F]")
REWRITE_REPORT_EVERY_S = 60.0  # a failing rewrite plugin is reported at most this often (counted every time)
NAME_CACHE = 4096  # spoken names remembered (chat repeats its regulars); the cache starts over when full

# numbers, from the most specific shape to the least; a digit that is part of a keycap emoji
# (1️⃣) is never touched
_NUMBER = re.compile(
    r"(?P<date>(?<![\d.])(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})(?![\d.]))"
    r"|(?P<time>(?<![\d:：.])(?P<h>[01]?\d|2[0-4])[:：](?P<mi>[0-5]\d)(?![\d:：]))"
    r"|(?P<cur>[$¥￥€£])\s?(?P<amt>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\d\ufe0f\u20e3])"
    r"|(?P<neg>(?<![\w.,])-)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?(?![\d\ufe0f\u20e3])"
    r"(?P<pct>\s?[%％])?(?P<ord>(?:st|nd|rd|th)(?![A-Za-z]))?"
)
DIGIT_BY_DIGIT = 9  # an integer this long or longer (a phone number, an id) is read digit by digit ...
LONGEST_DIGITS = 32  # ... and one longer than this is left as written: nobody wants to hear it
_ZH_DIGITS = "零一二三四五六七八九"
_EN_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_ZH_MONEY = {"$": "美元", "¥": "元", "￥": "元", "€": "欧元", "£": "英镑"}
_EN_MONEY = {"$": ("dollar", "dollars", "cent", "cents"), "¥": ("yuan", "yuan", "fen", "fen"),
             "￥": ("yuan", "yuan", "fen", "fen"), "€": ("euro", "euros", "cent", "cents"),
             "£": ("pound", "pounds", "penny", "pence")}  # fmt: skip
_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December")  # fmt: skip
_EN_YEAR_WORDS = frozenset({"in", "since", "year", "from", "until", "till", "by", "before", "after", "of", "circa", "around"})

LANGUAGES = ("zh", "en")


def language_of(text: str, default: str = "zh") -> str:
    """``zh`` for text with any CJK character, ``en`` for Latin letters, else `default`."""
    if _CJK.search(text):
        return "zh"
    if _LATIN.search(text):
        return "en"
    return default


def _char_class(ch: str) -> str:
    """For whole-word matching: "a" for a letter outside CJK, "0" for a digit, "" otherwise."""
    if ch.isdigit():
        return "0"
    if ch.isalpha() and not _CJK.match(ch):
        return "a"
    return ""


# -- numbers -----------------------------------------------------------------------------------


def _digits(s: str, lang: str) -> str:
    if lang == "zh":
        return "".join(_ZH_DIGITS[int(c)] for c in s)
    return " ".join(_EN_DIGITS[int(c)] for c in s)


# cn2an.transform() finds numbers in a sentence by itself, but reads 12:30 as 十二:三十, ¥5 as
# ¥五, 2026-12-02 as 二千零二十六负十二负二 and a phone number as an amount: the shapes are found
# here, and cn2an's an2cn says each number.


def spell_integer(s: str, lang: str) -> str | None:
    """An integer written in digits (no sign, no separators) as words; digit by digit when it
    is long or starts with 0 (an id, a phone number, 007); None when it is too long to say."""
    if len(s) > LONGEST_DIGITS:
        return None
    if len(s) >= DIGIT_BY_DIGIT or (len(s) > 1 and s[0] == "0"):
        return _digits(s, lang)
    if lang == "zh":
        return cn2an.an2cn(s, "low")
    return num2words(int(s), lang="en")


def spell_decimal(int_part: str, frac: str, lang: str) -> str | None:
    """``3`` and ``.5`` as words: 三点五, three point five."""
    whole = spell_integer(int_part, lang) if len(int_part) < DIGIT_BY_DIGIT else None
    if whole is None or len(frac) > LONGEST_DIGITS + 1:
        return None
    if not frac:
        return whole
    point = "点" if lang == "zh" else " point "
    return whole + point + _digits(frac[1:], lang)


def spell_number(value: Any, lang: str) -> str:
    """A template field's number (a gift count, an amount) as words; anything else unchanged."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return value
    if not d.is_finite():
        return value
    sign, d = ("负" if lang == "zh" else "minus ") if d < 0 else "", abs(d)
    int_part, _, frac = format(d, "f").partition(".")
    frac = frac.rstrip("0")
    out = spell_decimal(int_part, "." + frac if frac else "", lang)
    return value if out is None else sign + out


def _money(cur: str, amount: str, lang: str) -> str | None:
    int_part, _, frac = amount.replace(",", "").partition(".")
    if lang == "zh":
        out = spell_decimal(int_part, "." + frac if frac else "", lang)
        return None if out is None else out + _ZH_MONEY[cur]
    one, many, sub_one, sub_many = _EN_MONEY[cur]
    whole = spell_integer(int_part, lang) if len(int_part) < DIGIT_BY_DIGIT else None
    if whole is None:
        return None
    out = f"{whole} {one if int_part.lstrip('0') == '1' else many}"
    if frac:
        if len(frac) == 2:  # $5.50: five dollars fifty cents
            cents = int(frac)
            if cents:
                out += f" {num2words(cents, lang='en')} {sub_one if cents == 1 else sub_many}"
        else:
            out = f"{spell_decimal(int_part, '.' + frac, lang)} {many}"
    return out


def _time(h: str, mi: str, lang: str) -> str:
    hour, minute = int(h), int(mi)
    if lang == "zh":
        out = cn2an.an2cn(str(hour)) + "点"
        if minute:
            out += ("零" if minute < 10 else "") + cn2an.an2cn(str(minute)) + "分"
        return out
    out = num2words(hour, lang="en")
    if minute == 0:
        return out + " o'clock"
    return out + (" oh " if minute < 10 else " ") + num2words(minute, lang="en")


def _date(y: str, mo: str, d: str, lang: str) -> str | None:
    month, day = int(mo), int(d)
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    if lang == "zh":
        return f"{_digits(y, 'zh')}年{cn2an.an2cn(str(month))}月{cn2an.an2cn(str(day))}日"
    return f"{_EN_MONTHS[month - 1]} {num2words(day, lang='en', to='ordinal')}, {num2words(int(y), lang='en', to='year')}"


def read_numbers(text: str, lang: str) -> tuple[str, int]:
    """`text` with its numbers, dates, times, percentages and money as words; and how many."""
    count = 0

    def one(m: re.Match) -> str:
        nonlocal count
        out = _one_number(m, text, lang)
        if out is None:
            return m.group(0)
        count += 1
        if lang == "en":  # "I have5" must not happen: keep words apart from letters around them
            if m.start() > 0 and text[m.start() - 1].isalnum():
                out = " " + out
            if m.end() < len(text) and text[m.end()].isalnum():
                out += " "
        return out

    return _NUMBER.sub(one, text), count


def _one_number(m: re.Match, text: str, lang: str) -> str | None:
    g = m.groupdict()
    if g["date"]:
        return _date(g["y"], g["mo"], g["d"], lang)
    if g["time"]:
        return _time(g["h"], g["mi"], lang)
    if g["cur"]:
        return _money(g["cur"], g["amt"], lang)
    int_part = g["int"].replace(",", "")
    frac = g["frac"] or ""
    after = text[m.end() : m.end() + 1]
    if lang == "zh" and not frac and not g["pct"] and after == "年" and 2 <= len(int_part) <= 4:
        out = _digits(int_part, "zh")  # 2026年: 二零二六年
    elif g["ord"] and not frac and lang == "en" and len(int_part) < DIGIT_BY_DIGIT:
        return num2words(int(int_part), lang="en", to="ordinal") if not g["neg"] else None
    elif lang == "en" and not frac and not g["pct"] and len(int_part) == 4 and 1100 <= int(int_part) <= 2099 \
            and _previous_word(text, m.start()) in _EN_YEAR_WORDS:  # fmt: skip
        out = num2words(int(int_part), lang="en", to="year")  # in 2026: twenty twenty-six
    else:
        out = spell_decimal(int_part, frac, lang) if frac else spell_integer(int_part, lang)
    if out is None:
        return None
    if g["neg"]:
        out = ("负" if lang == "zh" else "minus ") + out
    if g["pct"]:
        out = "百分之" + out if lang == "zh" else out + " percent"
    if g["ord"]:
        out += g["ord"]  # "3.5th", "-1st": said as written around the number
    return out


def _previous_word(text: str, end: int) -> str:
    words = text[:end].rstrip().rsplit(None, 1)
    return words[-1].casefold() if words else ""


# -- regular expressions ---------------------------------------------------------------------


def dangerous_pattern(pattern: str) -> str | None:
    """Why a pattern can backtrack catastrophically, or None: a group that repeats without
    bound while something inside it also repeats without bound ((a+)+, (\\w*)*, (x+y?)+ ...).
    A cheap look at the pattern's shape, not a proof: the per-message timeout bounds the rest.
    Possessive repeats (a++) and atomic groups ((?>...)) never backtrack and pass."""
    stack: list[bool | None] = []  # per open group: holds an unbounded repeat? (None: atomic)
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # a character class: skip to its end
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            continue
        if c == "(":
            stack.append(None if pattern.startswith("(?>", i) else False)
            i += 1
            continue
        if c == ")":
            held = bool(stack.pop()) if stack else False
            i += 1
            q = _unbounded_quantifier(pattern, i)
            if q is not None:
                length, possessive = q
                if held and not possessive:
                    return (f"a group that repeats holds a repeat of its own (near {pattern[max(0, i - 16) : i + length]!r}), "
                            f"which can take exponential time on a line that almost matches")  # fmt: skip
                i += length
                held = held or not possessive  # a repeated group is a repeat inside its parent
            if held and stack and stack[-1] is not None:
                stack[-1] = True
            continue
        q = _unbounded_quantifier(pattern, i)
        if q is not None:
            length, possessive = q
            if not possessive and stack and stack[-1] is not None:
                stack[-1] = True
            i += length
            continue
        i += 1
    return None


_QUANT = re.compile(r"[*+]|\{\d*,\}")


def _unbounded_quantifier(pattern: str, i: int) -> tuple[int, bool] | None:
    m = _QUANT.match(pattern, i)
    if not m:
        return None
    end = m.end()
    possessive = end < len(pattern) and pattern[end] == "+"
    lazy = end < len(pattern) and pattern[end] == "?"
    return end - i + (1 if possessive or lazy else 0), possessive


_GROUP_REF = re.compile(r"\\(\d+)|\\g<([^>]*)>")


def compile_pattern(key: str, say: str, where: str) -> regex.Pattern:
    """A replacement pattern, refused with advice when it is broken or dangerous."""
    try:
        pat = regex.compile(key, regex.IGNORECASE)
    except regex.error as e:
        raise ConfigError(f"{where}: {key!r} is not a valid regular expression ({e}); escape special characters "
                          f"with \\ or move plain words to [moderation.replacements]") from None  # fmt: skip
    danger = dangerous_pattern(key)
    if danger:
        raise ConfigError(f"{where}: {key!r} refused: {danger}. Make the inner repeat possessive (a++ instead of a+), "
                          f"wrap it in an atomic group (?>...), or drop the outer repeat")  # fmt: skip
    for num, name in _GROUP_REF.findall(say):
        if num and int(num) > pat.groups:
            raise ConfigError(f"{where}: {say!r} refers to group \\{num} but {key!r} has {pat.groups} group(s)")
        if name and not (name.isdigit() and int(name) <= pat.groups) and name not in pat.groupindex:
            raise ConfigError(f"{where}: {say!r} refers to group <{name}>, which {key!r} does not have")
    return pat


# -- the whole step --------------------------------------------------------------------------

# (text, state): OPEN text goes through every step; a pattern's result (MATCHED) is not
# replaced again but has its numbers and emoji read ('(\d+)kg' = '\1公斤': 六十公斤); a FIXED
# piece (a plain replacement, an emoji's name) is said exactly as written
OPEN, MATCHED, FIXED = 0, 1, 2
Segment = tuple[str, int]


class Pronouncer:
    """The pronunciation step of one moderation config; counts go into `counts` (kept across
    reloads by ModerationState), problems to `report(event, **fields)` (the event bus)."""

    def __init__(
        self,
        cfg: ModerationConfig,
        counts: Counter,
        report: Callable[..., None] | None = None,
        rewrite: Callable[..., str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.counts = counts
        self.report = report
        self.rewrite = rewrite
        self.nicknames: dict[str, str] = {}
        for key, say in cfg.nicknames.items():
            if not key.strip():
                raise ConfigError("moderation.nicknames: an empty user key; write a name, an id or platform:id")
            self.nicknames[key.strip().casefold()] = say
        self.automaton = None
        if cfg.replacements:
            a = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
            for key, say in cfg.replacements.items():
                k = key.strip()
                if not k:
                    raise ConfigError("moderation.replacements: an empty key; write the word or phrase to replace")
                low = k.lower()
                if len(low) != len(k):
                    low = k
                a.add_word(low, (len(low), say, _char_class(low[0]), _char_class(low[-1])))
            a.make_automaton()
            self.automaton = a
        self.patterns: list[tuple[int, str, regex.Pattern, str]] = []
        for i, (key, say) in enumerate(cfg.replacement_patterns.items()):
            where = f"moderation.replacement_patterns[{key!r}]"
            self.patterns.append((i, key, compile_pattern(key, say, where), say))
        self.timeout_s = cfg.pattern_timeout_ms / 1000.0
        self._timed_out: set[int] = set()  # patterns already reported (once per config load)
        self._failed: set[int] = set()
        self._names: dict[tuple[str, str, str], tuple[str, bool]] = {}
        self._rewrite_failures: dict[str, int] = {}
        self._rewrite_reported: dict[str, float] = {}
        self.active = bool(self.nicknames or self.automaton or self.patterns or cfg.read_numbers or cfg.emoji != "keep"
                           or rewrite is not None)  # fmt: skip

    # -- names ---------------------------------------------------------------------------------

    def nickname(self, platform: str, user: User) -> str | None:
        nn = self.nicknames
        if not nn:
            return None
        for key in (f"{platform}:{user.id}" if user.id else "", f"{platform}:{user.name}" if user.name else "",
                    user.id, user.name):  # fmt: skip
            if key:
                hit = nn.get(key.casefold())
                if hit is not None:
                    return hit
        return None

    def name(self, m: Message, count: bool = False) -> str:
        """The name said for the message's user: the nickname, or the name with replacements."""
        key = (m.platform, m.user.id, m.user.name)
        hit = self._names.get(key)
        if hit is None:
            if len(self._names) >= NAME_CACHE:
                self._names.clear()
            hit = self._names[key] = self._name(m)
        if count and hit[1]:
            self.counts["nicknames"] += 1
        return hit[0]

    def _name(self, m: Message) -> tuple[str, bool]:
        nick = self.nickname(m.platform, m.user)
        if nick is not None:
            return nick, True
        name = m.user.name or "someone"
        if not (self.automaton or self.patterns or self.cfg.emoji != "keep"):
            return name, False
        segments = self._replace([(name, OPEN)], deadline=time.monotonic() + self.timeout_s, count=False)
        lang = language_of(name, self.cfg.default_language)
        segments = self._emoji(segments, lang, count=False)
        return "".join(s for s, _ in segments).strip() or name, False

    # -- text ----------------------------------------------------------------------------------

    def text(self, text: str, m: Message) -> str:
        """The text as it should be said."""
        if not self.active or not text:
            return text
        segments = self._replace([(text, OPEN)], deadline=time.monotonic() + self.timeout_s, count=True)
        # judged on what will be said: "yyds 60kg" with yyds = 永远的神 is Chinese
        lang = language_of("".join(s for s, _ in segments) if len(segments) > 1 else text, self.cfg.default_language)
        segments = self._emoji(segments, lang, count=True)
        if self.cfg.read_numbers:
            out = []
            for s, state in segments:
                if state != FIXED and any(c.isdigit() for c in s):
                    s, n = read_numbers(s, lang)
                    self.counts["numbers"] += n
                out.append((s, state))
            segments = out
        text = re.sub(r"\s+", " ", "".join(s for s, _ in segments)).strip()
        if self.rewrite is not None and text:
            before = text
            text = self.rewrite(text, m, lang, self._rewrite_failed)
            if text != before:
                self.counts["rewritten"] += 1
        return text

    def field(self, value: Any, template: str) -> Any:
        """A number in a template field, in the template's language, when numbers are read."""
        if not self.cfg.read_numbers:
            return value
        return spell_number(value, language_of(template, self.cfg.default_language))

    def _replace(self, segments: list[Segment], deadline: float | None, count: bool) -> list[Segment]:
        if self.automaton is not None:
            out: list[Segment] = []
            for s, state in segments:
                out.extend(self._plain(s, count) if state == OPEN else [(s, state)])
            segments = out
        if self.patterns:
            for i, key, pat, say in self.patterns:
                segments = self._pattern(segments, i, key, pat, say, deadline, count)
        return segments

    def _plain(self, s: str, count: bool) -> list[Segment]:
        low = s.lower()
        if len(low) != len(s):  # a few characters lower-case into two; match as written
            low = s
        out: list[Segment] = []
        pos = 0
        for end, (length, say, left, right) in self.automaton.iter_long(low):
            start = end - length + 1
            if start < pos:
                continue
            if left and start > 0 and _char_class(s[start - 1]) == left:
                continue  # "lol" inside "lollipop", "666" inside "6666"
            if right and end + 1 < len(s) and _char_class(s[end + 1]) == right:
                continue
            if start > pos:
                out.append((s[pos:start], OPEN))
            out.append((say, FIXED))
            pos = end + 1
            if count:
                self.counts["replacements"] += 1
        if pos == 0:
            return [(s, OPEN)]
        if pos < len(s):
            out.append((s[pos:], OPEN))
        return out

    def _pattern(self, segments, i, key, pat, say, deadline, count) -> list[Segment]:
        out: list[Segment] = []
        for s, state in segments:
            if state != OPEN or not s:
                out.append((s, state))
                continue
            timeout = None if deadline is None else deadline - time.monotonic()
            try:
                if timeout is not None and timeout <= 0:
                    raise TimeoutError
                pieces: list[Segment] = []
                pos = 0
                for mt in pat.finditer(s, timeout=timeout):
                    if mt.end() == mt.start():
                        continue  # an empty match replaces nothing
                    pieces.append((s[pos : mt.start()], OPEN))
                    pieces.append((mt.expand(say), MATCHED))
                    pos = mt.end()
                    if count:
                        self.counts["pattern_replacements"] += 1
            except TimeoutError:
                self._pattern_timed_out(i, key)
                return segments  # this pattern is skipped for this message, whole
            except (regex.error, IndexError) as e:
                self._pattern_failed(i, key, e)
                return segments
            if pos == 0:
                out.append((s, OPEN))
                continue
            pieces.append((s[pos:], OPEN))
            out.extend(p for p in pieces if p[0] or p[1] != OPEN)
        return out

    def _pattern_timed_out(self, i: int, key: str) -> None:
        self.counts["pattern_timeouts"] += 1
        if i in self._timed_out:
            return
        self._timed_out.add(i)
        advice = (f"it ran past pattern_timeout_ms ({self.cfg.pattern_timeout_ms:g} ms for all patterns on one message) "
                  f"and was skipped for that message; simplify it (possessive a++ or atomic (?>...) groups) or raise "
                  f"pattern_timeout_ms. Reported once; status counts every time")  # fmt: skip
        log.warning("moderation.replacement_patterns[%r]: %s", key, advice)
        if self.report is not None:
            self.report("pronounce.pattern_timeout", pattern=key, timeout_ms=self.cfg.pattern_timeout_ms, advice=advice)

    def _pattern_failed(self, i: int, key: str, e: Exception) -> None:
        self.counts["pattern_errors"] += 1
        if i not in self._failed:
            self._failed.add(i)
            log.warning("moderation.replacement_patterns[%r] failed and was skipped: %s", key, e)

    def _rewrite_failed(self, plugin: str, e: BaseException) -> None:
        self.counts["rewrite_errors"] += 1
        failures = self._rewrite_failures[plugin] = self._rewrite_failures.get(plugin, 0) + 1
        now = time.monotonic()
        last = self._rewrite_reported.get(plugin)
        if last is not None and now - last < REWRITE_REPORT_EVERY_S:
            return  # a plugin that fails on every line is reported, not repeated line by line
        self._rewrite_reported[plugin] = now
        error = f"{type(e).__name__}: {e}"
        log.warning("plugin %s: ishowtts_rewrite_text failed and was skipped (the text goes on without it; %d failure(s) "
                    "so far): %s", plugin, failures, error)  # fmt: skip
        if self.report is not None:
            self.report("pronounce.rewrite_failed", plugin=plugin, error=error, failures=failures)

    def _emoji(self, segments: list[Segment], lang: str, count: bool) -> list[Segment]:
        mode = self.cfg.emoji
        if mode == "keep":
            return segments
        out: list[Segment] = []
        for s, state in segments:
            found = [] if state == FIXED or not MAYBE_EMOJI.search(s) else emoji.emoji_list(s)
            if not found:
                out.append((s, state))
                continue
            pos = 0
            for e in found:
                out.append((s[pos : e["match_start"]], state))
                if mode == "name":
                    out.append((" " + emoji_name(e["emoji"], lang) + " ", FIXED))
                    if count:
                        self.counts["emoji_named"] += 1
                elif count:
                    self.counts["emoji_dropped"] += 1
                pos = e["match_end"]
            out.append((s[pos:], state))
        return out

    def status(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "nicknames": len(self.nicknames),
            "replacements": len(cfg.replacements),
            "replacement_patterns": len(self.patterns),
            "read_numbers": cfg.read_numbers,
            "emoji": cfg.emoji,
            "counts": {k: self.counts.get(k, 0) for k in COUNTERS},
        }


COUNTERS = ("nicknames", "replacements", "pattern_replacements", "pattern_timeouts", "pattern_errors", "numbers",
            "emoji_named", "emoji_dropped", "rewritten", "rewrite_errors")  # fmt: skip


def emoji_name(e: str, lang: str) -> str:
    """An emoji's CLDR short name in `lang` (笑哭了, face with tears of joy); English where
    the language has none."""
    name = emoji.demojize(e, language=lang, delimiters=("\x00", "\x00"))
    if "\x00" not in name and lang != "en":
        name = emoji.demojize(e, language="en", delimiters=("\x00", "\x00"))
    name = name.replace("\x00", "")
    return name.replace("_", " ") if lang == "en" or name.isascii() else name.replace("_", "")


_FULLWIDTH = str.maketrans({chr(c): chr(c - 0xFEE0) for r in ((0xFF10, 0xFF1A), (0xFF21, 0xFF3B), (0xFF41, 0xFF5B))
                            for c in range(*r)})  # fmt: skip


@hookimpl
def ishowtts_rewrite_text(text, message, language):
    """Full-width letters and digits (ｌｏｌ１２３) as plain ones, which every engine reads;
    full-width punctuation (，！) stays: it is how Chinese is written."""
    folded = text.translate(_FULLWIDTH)
    return folded if folded != text else None
