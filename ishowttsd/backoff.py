"""The one reconnect policy for the whole project: jittered exponential backoff with a cap.

Every source and sink that reconnects uses :class:`Backoff`, so a network blip never turns
into a reconnect storm against Bilibili, Twitch or OBS.
"""

from __future__ import annotations

import random
import time

from pydantic import BaseModel, ConfigDict, Field


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
