"""Bounded HTTP for the YouTube source: every answer is read as a stream and refused once it
grows past ``max_response_bytes`` (counted after decompression, so a gzip bomb is refused too);
HTTP 429 becomes :class:`RateLimited` with the wait YouTube asked for; 5xx a :class:`ServerError`.
Both end the session through the one reconnect policy, which backs off."""

from __future__ import annotations

import email.utils
import json
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from ishowttsd.reconnect import SessionEnded

MAX_RETRY_AFTER = 3600.0  # a Retry-After beyond an hour is not believed


class RateLimited(SessionEnded):
    """YouTube answered 429: wait at least what it asked (or `rate_limit_delay`)."""


class ServerError(SessionEnded):
    """YouTube answered 5xx: back off and try again."""


class TooLarge(SessionEnded):
    """An answer was larger than `max_response_bytes`; it was refused while streaming."""


@dataclass
class Answer:
    status: int
    body: bytes
    url: httpx.URL
    headers: httpx.Headers

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; raises ValueError on anything else (RecursionError included)."""
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


class Fetch:
    """GET and POST with a size limit and YouTube's rate-limit answers turned into waits."""

    def __init__(self, http: httpx.AsyncClient, max_bytes: int, rate_limit_delay: float,
                 counters: Counter[str]) -> None:  # fmt: skip
        self.http = http
        self.max_bytes = max_bytes
        self.rate_limit_delay = rate_limit_delay
        self.counters = counters

    async def request(self, method: str, url: str, what: str, **kw: Any) -> Answer:
        """One request; `what` names it in errors ("the watch page", "get_live_chat")."""
        async with self.http.stream(method, url, **kw) as r:
            if r.status_code == 429:
                self.counters["rate_limited"] += 1
                wait = max(self.rate_limit_delay, retry_after(r.headers.get("retry-after")))
                raise RateLimited(f"YouTube rate-limited {what} (HTTP 429); waiting {wait:g} s before asking again",
                                  least=wait)  # fmt: skip
            if r.status_code >= 500:
                self.counters["server_errors"] += 1
                raise ServerError(f"YouTube answered HTTP {r.status_code} for {what} (a server error); backing off")
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise self._too_large(what, int(declared))
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise self._too_large(what, len(body))
            return Answer(r.status_code, bytes(body), r.url, r.headers)

    def json_object(self, a: Answer, what: str) -> dict[str, Any]:
        """The answer as a JSON object; anything else is counted (``malformed_answers``) and ends the session."""
        try:
            body = a.json()
        except ValueError as e:
            self.counters["malformed_answers"] += 1
            raise SessionEnded(f"{what} answered something that is not JSON ({str(e)[:80]})") from None
        if not isinstance(body, dict):
            self.counters["malformed_answers"] += 1
            raise SessionEnded(f"{what} answered a JSON {type(body).__name__}, not an object")
        return body

    def _too_large(self, what: str, size: int) -> TooLarge:
        self.counters["oversize"] += 1
        return TooLarge(f"{what} answered more than max_response_bytes ({self.max_bytes} bytes; got {size} and "
                        "counting); refused")  # fmt: skip


def retry_after(value: str | None) -> float:
    """A Retry-After header (seconds or an HTTP date) as seconds, 0 when absent or unreadable."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    return max(0.0, min(when - time.time(), MAX_RETRY_AFTER))


def path_of(url: str | httpx.URL) -> str:
    """The path of a URL, for messages (never its query, which may hold a key)."""
    return urllib.parse.urlsplit(str(url)).path or "/"
