"""Reconnecting, done once for the whole project: the backoff policy and the session loop.

:class:`Backoff` is the one reconnect policy (jittered exponential backoff with a cap): every
source and sink that reconnects uses it, so a network blip never turns into a reconnect storm
against Bilibili, Twitch or OBS. :class:`Reconnector` is the one loop a live source runs: it
hands over a *session* (connect, call :meth:`Reconnector.connected` once really connected, read
until something ends it) and gets connect / backoff / state reporting / error handling::

    class Chat(Source):
        def __init__(self, settings, ctx):
            super().__init__(settings, ctx)
            self.link = Reconnector(self, settings.reconnect.make())

        async def run(self):
            await self.link.run(self._session, "#channel")

        async def _session(self):
            async with connect(...) as ws:
                ...  # log in
                self.link.connected("#channel", channel="channel")
                async for frame in ws:
                    ...  # raise SessionEnded("why") to end the session with a reason
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NoReturn

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

if TYPE_CHECKING:
    from ishowttsd.source import Source


class Backoff:
    """Delays that grow 1, 3, 5 ... seconds up to `cap`, plus random jitter.

    The failure count resets only after a connection stayed healthy for `healthy_after`
    seconds: call :meth:`connected` when a connection is up and :meth:`next_delay` after
    it failed.
    """

    def __init__(
        self,
        base: float = 1.0,
        step: float = 2.0,
        cap: float = 20.0,
        jitter: float = 3.0,
        healthy_after: float = 30.0,
        factor: float = 1.0,
        rng: random.Random | None = None,
        clock=time.monotonic,
    ) -> None:
        # delay(n) = min(base * factor**(n-1) + step*(n-1), cap) + U(0, jitter)
        self.base, self.step, self.cap, self.jitter = base, step, cap, jitter
        self.factor = factor
        self.healthy_after = healthy_after
        self.failures = 0
        self._rng = rng or random.Random()
        self._clock = clock
        self._connected_at: float | None = None

    def connected(self) -> None:
        """A connection is up; the count resets if it stays up long enough."""
        self._connected_at = self._clock()

    def next_delay(self) -> float:
        """The connection failed: how long to wait before the next attempt."""
        if self._connected_at is not None and self._clock() - self._connected_at >= self.healthy_after:
            self.failures = 0
        self._connected_at = None
        self.failures += 1
        n = self.failures - 1
        delay = min(self.base * (self.factor**n) + self.step * n, self.cap)
        return delay + self._rng.uniform(0.0, self.jitter)

    def reset(self) -> None:
        self.failures = 0
        self._connected_at = None


class BackoffSettings(BaseModel):
    """The `reconnect = {...}` table of a source or sink: the knobs of :class:`Backoff`.

    delay(n) = min(base * factor^(n-1) + step * (n-1), cap) + U(0, jitter); the failure count
    resets once a connection stayed up `healthy_after` seconds. A plugin with other defaults
    subclasses this and overrides the field defaults.
    """

    model_config = ConfigDict(extra="forbid")
    base: float = Field(default=1.0, ge=0)
    step: float = Field(default=2.0, ge=0)
    factor: float = Field(default=1.0, ge=1)
    cap: float = Field(default=20.0, gt=0)
    jitter: float = Field(default=3.0, ge=0)
    healthy_after: float = Field(default=30.0, ge=0, description="seconds up before the failure count resets")

    def make(self) -> Backoff:
        return Backoff(base=self.base, step=self.step, cap=self.cap, jitter=self.jitter,
                       healthy_after=self.healthy_after, factor=self.factor)  # fmt: skip


class SessionEnded(Exception):
    """Raised by a session to end it with a reason for `status` and the log (no secrets in it).

    `least`: wait at least this many seconds before the next attempt, whatever the backoff
    says (the server asked for patience: Bilibili's risk control, a wrong credential).
    `planned`: the server asked us to move (Twitch's RECONNECT): a session that had connected
    reconnects at once, without backoff and without counting as a failure, at most once per
    :attr:`Reconnector.planned_every` seconds; more often, it waits like any failure.
    """

    def __init__(self, reason: str, least: float = 0.0, planned: bool = False) -> None:
        super().__init__(reason)
        self.least = least
        self.planned = planned


def first_error(e: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups from task groups."""
    while getattr(e, "exceptions", None):
        e = e.exceptions[0]
    return e


def describe_error(e: BaseException) -> str | None:
    """A one-line, secret-free reason for an expected network failure (websockets, httpx,
    sockets, timeouts); None for anything else, which the loop treats as a bug."""
    if isinstance(e, InvalidStatus):
        return f"websocket handshake refused (HTTP {e.response.status_code})"
    if isinstance(e, ConnectionClosed):
        return "the connection dropped"
    if isinstance(e, httpx.HTTPStatusError):
        return f"HTTP {e.response.status_code} from {e.request.url.path}"
    if isinstance(e, httpx.HTTPError):
        try:
            where = e.request.url.netloc.decode("ascii")
        except RuntimeError:  # an error raised before the request existed
            where = "the server"
        return f"{type(e).__name__} talking to {where}: {e}".rstrip(": ")
    if isinstance(e, (TimeoutError, asyncio.TimeoutError)):  # distinct classes on Python 3.10
        return "timed out"
    if isinstance(e, OSError):
        return f"cannot connect: {e.strerror or e}"
    if isinstance(e, WebSocketException):
        return f"{type(e).__name__}: {e}".rstrip(": ")
    return None


class Reconnector:
    """Runs a live source's sessions one after another until cancelled; see the module docstring.

    Each attempt reports ``connecting`` (or ``down``, "reconnecting (attempt n)", after a
    failure, so health warns until the source is back), the session reports ``connected``
    through :meth:`connected`, and each end reports ``backoff`` with the reason and the wait.
    A session that returns is treated as the server closing the connection. Errors inside
    task groups are unwrapped; `classify` turns an error into a reason (None: a surprise,
    logged with its traceback); no error stops the loop, only cancellation does.
    """

    planned_every = 10.0  # seconds between planned reconnects that skip the backoff

    def __init__(
        self,
        source: Source,
        backoff: Backoff,
        classify: Callable[[BaseException], str | None] = describe_error,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.backoff = backoff
        self.classify = classify
        self.streak = 0  # sessions in a row that failed (0 while connected)
        self.is_connected = False  # the running session has called connected()
        self._clock = clock
        self._last_planned = -1e9

    def connecting(self, detail: str) -> None:
        """Report an attempt under way (a session may call it again with a finer detail)."""
        if self.streak:
            self.source.set_state("down", f"reconnecting (attempt {self.streak + 1}): {detail}")
        else:
            self.source.set_state("connecting", detail)

    def connected(self, detail: str, **event_fields: Any) -> None:
        """The session is really connected (logged in, joined): reset the failure streak, report
        ``connected`` and publish ``source.connected`` with `event_fields` (room, host, channel)."""
        self.backoff.connected()
        self.streak = 0
        self.is_connected = True
        self.source.set_state("connected", detail)
        self.source.ctx.events.publish("source.connected", source=self.source.name, **event_fields)

    async def run(
        self,
        session: Callable[[], Awaitable[Any]],
        detail: str | Callable[[], str],
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> NoReturn:
        """Run `session` again and again. `detail` says what is being connected to (a string, or
        a function for one that changes); `on_failure(error)` runs after each failed session,
        with the streak already counted (rotate hosts, drop a cached token, ...)."""
        announced = False  # a planned move already reported its own "connecting"
        while True:
            self.is_connected = False
            if not announced:
                self.connecting(detail() if callable(detail) else detail)
            announced = False
            try:
                await session()
                error: BaseException = SessionEnded("the server closed the connection")
            except Exception as exc:  # any failure, a bug included, ends only this session
                error = first_error(exc)
            reason, least = self._reason(error)
            self.source.counters["reconnects"] += 1
            now = self._clock()
            if isinstance(error, SessionEnded) and error.planned and self.is_connected \
                    and now - self._last_planned > self.planned_every:  # fmt: skip
                self._last_planned = now
                self.source.set_state("connecting", reason)
                announced = True
                continue
            self.streak += 1
            if on_failure is not None:
                on_failure(error)
            delay = max(self.backoff.next_delay(), least)
            self.source.set_state("backoff", f"{reason}; reconnecting in {delay:.1f} s", error=reason)
            await anyio.sleep(delay)

    def _reason(self, error: BaseException) -> tuple[str, float]:
        if isinstance(error, SessionEnded):
            return str(error), error.least
        reason = self.classify(error)
        if reason is None:  # a bug or a surprise: report it and keep the source alive
            self.source.log.error("unexpected error in the session", exc_info=error)
            reason = f"unexpected {type(error).__name__}: {error}"
        return reason, 0.0
