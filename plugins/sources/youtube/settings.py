"""The ``[[sources]]`` table of a YouTube source: what to follow, which route, its timings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ishowttsd.reconnect import BackoffSettings
from ishowttsd.source import SourceSettings

from .target import parse_target

DEFAULT_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


class ReconnectSettings(BackoffSettings):
    """2 s doubling to 2 minutes, plus jitter: a failing YouTube is asked again gently, never hammered."""

    base: float = Field(default=2.0, ge=0)
    step: float = Field(default=0.0, ge=0)
    factor: float = Field(default=2.0, ge=1)
    cap: float = Field(default=120.0, gt=0)
    jitter: float = Field(default=2.0, ge=0)
    healthy_after: float = Field(default=60.0, ge=0)


class YouTubeSettings(SourceSettings):
    channel: str = Field(
        min_length=1,
        description="what to follow: a channel handle (@name), a channel id (UC...), a live video id or a watch URL",
    )
    chat: Literal["live", "top"] = Field(
        default="live", description="'live': every message; 'top': YouTube's filtered Top chat"
    )
    hl: str = Field(default="en", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$",
                    description="the language YouTube writes its own lines in (membership notices)")  # fmt: skip
    # the optional official route: Data API v3 liveChatMessages (costs quota: 5 units a poll)
    api_key_file: str | None = None
    api_key_env: str | None = None
    # endpoints, for tests and mirrors
    base_url: str = "https://www.youtube.com"
    api_base: str = "https://www.googleapis.com/youtube/v3"
    user_agent: str = DEFAULT_UA
    # timings
    not_live_interval: float = Field(default=60.0, gt=0, description="seconds between checks while not live")
    min_poll_interval: float = Field(default=1.0, gt=0, description="never poll faster, whatever the server asks")
    max_poll_interval: float = Field(default=10.0, gt=0, description="never wait longer between polls")
    http_timeout: float = Field(default=15.0, gt=0)
    rate_limit_delay: float = Field(default=60.0, ge=0,
                                    description="least wait after HTTP 429 (Retry-After wins when longer)")  # fmt: skip
    quota_delay: float = Field(default=3600.0, ge=0, description="least wait after the Data API's quotaExceeded")
    # limits on what YouTube may send
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    max_amount: float = Field(default=1e9, gt=0, description="a paid amount above this is not believed")
    loop_limit: int = Field(default=5, ge=1, description="polls in a row that loop before the chat is reopened")
    read_gift_redemptions: bool = Field(
        default=False,
        description="also speak each viewer who received a gifted membership (the purchase is spoken once)",
    )
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        parse_target(v)  # raises ValueError with advice
        return v.strip()

    @field_validator("base_url", "api_base")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError(f"{v!r} must start with https:// (or http:// for a local test server)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _intervals(self) -> YouTubeSettings:
        if self.max_poll_interval < self.min_poll_interval:
            raise ValueError("max_poll_interval must be at least min_poll_interval")
        return self

    @property
    def data_api(self) -> bool:
        return bool(self.api_key_file or self.api_key_env)
