"""The ``[[sources]]`` table of a Bilibili source: which route, its credentials, its timings."""

from __future__ import annotations

from pydantic import Field, model_validator

from ishowttsd.reconnect import BackoffSettings
from ishowttsd.source import SourceSettings

from .wire import DEFAULT_MAX_DECOMPRESSED

DEFAULT_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


class ReconnectSettings(BackoffSettings):
    """PROTOCOLS.md's policy for Bilibili: min(1 + 2(n-1), 20) s plus 0-3 s of jitter (the defaults)."""


class BilibiliSettings(SourceSettings):
    room_id: int | None = Field(default=None, gt=0, description="the room number in the live URL; short ids are fine")
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
