"""The ``[[sources]]`` table of a Bilibili source: which route, its credentials, its timings."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from ishowttsd.reconnect import BackoffSettings
from ishowttsd.source import SourceSettings

from .wire import DEFAULT_MAX_DECOMPRESSED

DEFAULT_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


_ROOM_ADVICE = "paste the room number or the room's address (https://live.bilibili.com/<number>)"
_LIVE_HOST = re.compile(r"^(?:https?://)?(?:www\.|m\.)?live\.bilibili\.com(?::\d+)?(?=[/?#]|$)", re.I)


def parse_room(value: object) -> object:
    """A Bilibili room number from what a streamer pastes: the number, or the room's address
    (``https://live.bilibili.com/12345?...``, ``live.bilibili.com/h5/12345``, ``/blanc/12345``).
    A b23.tv short link needs the network to resolve, so it is refused with advice, as are
    addresses that are not a live room (a user's space, a video). Raises ValueError."""
    if not isinstance(value, str):
        return value  # a number, or None: pydantic checks it
    v = value.strip()
    if re.fullmatch(r"\d+", v):
        return int(v)
    low = v.lower()
    if re.match(r"^(?:https?://)?b23\.tv/", low):
        raise ValueError(f"{value!r} is a b23.tv short link, which only Bilibili's servers can resolve: open it in a "
                         f"browser and {_ROOM_ADVICE}")  # fmt: skip
    host = _LIVE_HOST.match(v)
    if host:
        path = re.split(r"[?#]", v[host.end():], maxsplit=1)[0]
        parts = [p for p in path.split("/") if p]
        if parts and parts[0].lower() in ("h5", "blanc", "blackboard", "p") and len(parts) > 1:
            parts = parts[1:]
        if parts and re.fullmatch(r"\d+", parts[0]):
            return int(parts[0])
        raise ValueError(f"{value!r} has no room number after live.bilibili.com/; {_ROOM_ADVICE}")
    if "space.bilibili.com" in low:
        raise ValueError(f"{value!r} is a user's space (their uid), not a live room: open their live room and {_ROOM_ADVICE}")
    if "bilibili.com" in low:
        raise ValueError(f"{value!r} is a Bilibili page but not a live room; {_ROOM_ADVICE}")
    raise ValueError(f"room_id {value!r} is not a room number; {_ROOM_ADVICE}")


class ReconnectSettings(BackoffSettings):
    """PROTOCOLS.md's policy for Bilibili: min(1 + 2(n-1), 20) s plus 0-3 s of jitter (the defaults)."""


class BilibiliSettings(SourceSettings):
    room_id: int | None = Field(default=None, gt=0, description="the room number in the live URL, or the URL itself; short ids are fine")
    # web route login (optional): the SESSDATA cookie of the account whose uid is used
    sessdata_file: str | None = None
    sessdata_env: str | None = None
    user_agent: str = DEFAULT_UA
    api_base: str = "https://api.bilibili.com"
    live_api_base: str = "https://api.live.bilibili.com"
    ws_url: str | None = Field(default=None, description="replaces the discovered host list (tests, mirrors)")
    # Open Platform route: app credentials plus the streamer's 身份码
    app_id: int | None = None
    access_key_id_file: str | None = None
    access_key_id_env: str | None = None
    access_key_secret_file: str | None = None
    access_key_secret_env: str | None = None
    auth_code: str | None = Field(default=None, description="the streamer's 身份码 (or auth_code_file/_env)")
    auth_code_file: str | None = None
    auth_code_env: str | None = None
    open_api_base: str = "https://live-open.biliapi.com"
    # timings
    heartbeat_interval: float = Field(default=30.0, gt=0)
    open_heartbeat_interval: float = Field(default=20.0, gt=0)
    auth_timeout: float = Field(default=10.0, gt=0)
    http_timeout: float = Field(default=10.0, gt=0)
    wbi_key_ttl: float = Field(default=12 * 3600.0, gt=0)
    token_ttl: float = Field(default=600.0, gt=0, description="reuse a danmaku token this long across reconnects")
    rediscover_after: int = Field(default=3, ge=1, description="failures in a row before discovery is redone")
    risk_control_delay: float = Field(default=60.0, ge=0, description="least wait after -352 / HTTP 412")
    max_decompressed: int = Field(default=DEFAULT_MAX_DECOMPRESSED, ge=1024, le=256 * 1024 * 1024)
    max_frame: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)

    @field_validator("room_id", mode="before")
    @classmethod
    def _room(cls, v: object) -> object:
        return parse_room(v)

    @model_validator(mode="after")
    def _route(self) -> BilibiliSettings:
        if self.ws_url and not self.ws_url.startswith(("ws://", "wss://")):
            raise ValueError(f"ws_url {self.ws_url!r} must start with ws:// or wss://")
        if self.app_id is None and self.room_id is None:
            raise ValueError("set room_id (web route) or app_id with the access keys and auth_code (Open Platform)")
        if self.app_id is not None:
            if not (self.access_key_id_file or self.access_key_id_env):
                raise ValueError("the Open Platform route needs access_key_id_file or access_key_id_env")
            if not (self.access_key_secret_file or self.access_key_secret_env):
                raise ValueError("the Open Platform route needs access_key_secret_file or access_key_secret_env")
            if not (self.auth_code or self.auth_code_file or self.auth_code_env):
                raise ValueError("the Open Platform route needs the streamer's 身份码: auth_code, auth_code_file or auth_code_env")
        return self
