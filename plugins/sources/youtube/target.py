"""What a YouTube source follows: a channel handle, a channel id, a video id or a URL naming one.

:func:`parse_target` turns the configured ``channel`` into a :class:`Target` whose
:attr:`Target.page` is the web page that shows the live broadcast: ``/@name/live`` and
``/channel/UC.../live`` show the channel's current live stream (or the channel page when there
is none), ``/watch?v=ID`` one broadcast. Pure functions: no I/O, fuzzed by the tests.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{11}")
CHANNEL_ID = re.compile(r"UC[A-Za-z0-9_-]{22}")
# handles are 3-30 characters; YouTube allows letters of any script, digits, '_', '-' and '.'
HANDLE = re.compile(r"@[^\s/?#&%@\\]{3,30}")
CUSTOM = re.compile(r"[^\s/?#&%@\\]{1,100}")
_HOSTS = ("youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtube-nocookie.com",
          "www.youtube-nocookie.com")  # fmt: skip
ADVICE = (
    "use a channel handle (@name), a channel id (UC followed by 22 characters), an 11-character video id, "
    "or a URL such as https://www.youtube.com/@name or https://www.youtube.com/watch?v=VIDEOID"
)


@dataclass(frozen=True)
class Target:
    """A parsed ``channel``: `kind` is handle, channel, video or custom (a legacy /c/ or /user/ URL)."""

    kind: str
    value: str

    @property
    def page(self) -> str:
        """The path (and query) of the page that shows the live broadcast."""
        quoted = urllib.parse.quote(self.value, safe="@/")
        if self.kind == "video":
            return f"/watch?v={quoted}"
        if self.kind == "channel":
            return f"/channel/{quoted}/live"
        return f"/{quoted}/live"  # @handle, c/name, user/name

    @property
    def label(self) -> str:
        """How `status` and the log name it."""
        if self.kind == "video":
            return f"video {self.value}"
        if self.kind == "custom":
            return f"/{self.value}"
        return self.value

    @property
    def follows_channel(self) -> bool:
        """A channel's next stream is picked up; a video id names one broadcast only."""
        return self.kind != "video"


def parse_target(text: str) -> Target:
    """Parse the configured ``channel``; raises ValueError that says what to write instead."""
    if not isinstance(text, str):
        raise ValueError(f"channel must be text; {ADVICE}")
    s = text.strip()
    if not s or len(s) > 2048:
        raise ValueError(f"channel is empty or too long; {ADVICE}")
    if HANDLE.fullmatch(s):
        return Target("handle", s)
    if CHANNEL_ID.fullmatch(s):
        return Target("channel", s)
    if VIDEO_ID.fullmatch(s):
        return Target("video", s)
    if "://" not in s and s.split("/", 1)[0].lower() in (*_HOSTS, "youtu.be"):
        s = "https://" + s
    if "://" in s:
        return _from_url(s)
    raise ValueError(f"{text!r} is not a YouTube channel or video; {ADVICE}")


def _from_url(s: str) -> Target:
    try:
        url = urllib.parse.urlsplit(s)
        host = (url.hostname or "").lower()
    except ValueError:
        raise ValueError(f"{s!r} is not a URL; {ADVICE}") from None
    parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
    query = urllib.parse.parse_qs(url.query)
    if host == "youtu.be":
        if parts and VIDEO_ID.fullmatch(parts[0]):
            return Target("video", parts[0])
    elif host in _HOSTS:
        if parts[:1] == ["watch"] and VIDEO_ID.fullmatch((query.get("v") or [""])[0]):
            return Target("video", query["v"][0])
        if len(parts) >= 2 and parts[0] in ("live", "embed", "v") and VIDEO_ID.fullmatch(parts[1]):
            return Target("video", parts[1])
        if parts and HANDLE.fullmatch(parts[0]):
            return Target("handle", parts[0])
        if len(parts) >= 2 and parts[0] == "channel" and CHANNEL_ID.fullmatch(parts[1]):
            return Target("channel", parts[1])
        if len(parts) >= 2 and parts[0] in ("c", "user") and CUSTOM.fullmatch(parts[1]):
            return Target("custom", f"{parts[0]}/{parts[1]}")
    raise ValueError(f"{s!r} does not name a YouTube channel or video; {ADVICE}")
