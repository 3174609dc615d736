"""Kill the fake Bilibili repeatedly: the daemon reconnects on the Backoff schedule (growing,
jittered, reset after a healthy period, never a storm) and speaks what comes after each reconnect."""

from __future__ import annotations

import time

import anyio
import pytest
from fakes import bilibili as bf
from fakes.bilibili import FakeBilibili
from fakes.bilibili_twitch_daemon import RunningDaemon

BASE, STEP, CAP, JITTER, HEALTHY = 0.3, 0.3, 0.8, 0.1, 0.5
SLACK = 0.6  # scheduling and HTTP time on a busy 2-core machine


def expected(n: int) -> tuple[float, float]:
    """Backoff delay bounds before attempt n (1-based) of a failure streak."""
    d = min(BASE + STEP * (n - 1), CAP)
    return d, d + JITTER


@pytest.mark.anyio
async def test_server_killed_repeatedly(tmp_path):
    fake = FakeBilibili()
    await fake.start()
    src = {
        "type": "bilibili", "name": "bili", "room_id": fake.real_room, "api_base": fake.base,
        "live_api_base": fake.base, "ws_url": fake.ws_url, "heartbeat_interval": 0.5, "rediscover_after": 10,
        "reconnect": {"base": BASE, "step": STEP, "cap": CAP, "jitter": JITTER, "healthy_after": HEALTHY},
    }  # fmt: skip
    try:
        async with RunningDaemon(tmp_path, [src]) as d:
            await fake.wait_connected()
            for rnd in range(3):
                await anyio.sleep(HEALTHY + 0.2)  # stay up long enough for the failure count to reset
                refused = 3  # the server is "down": handshakes are refused this many times
                fake.refuse_handshakes = refused
                first = len(fake.ws_attempts)
                dropped_at = time.monotonic()
                await fake.drop_all()
                s = await d.wait_state("backoff", timeout=5)
                assert "reconnecting in" in s["detail"]
                health = await d.call("health")
                check = next(c for c in health["checks"] if c["check"] == "source:bili")
                assert check["level"] == "warn" and health["status"] != "ok"  # a source that is down shows
                await fake.wait_connected(timeout=15)
                attempts = fake.ws_attempts[first:]
                assert len(attempts) == refused + 1, attempts  # no storm: one attempt per delay
                gaps = [attempts[0] - dropped_at] + [b - a for a, b in zip(attempts, attempts[1:])]
                for n, gap in enumerate(gaps, 1):
                    lo, hi = expected(n)
                    assert lo - 0.02 <= gap <= hi + SLACK, (rnd, n, gap, gaps)
                await d.wait_state("connected", timeout=5)
                await fake.push([bf.danmu(f"重连后第{rnd}条", 2000 + rnd, f"观众{rnd}")])
                await d.wait_spoken(f"重连后第{rnd}条")
            s = await d.source("bili")
            assert s["reconnects"] == 3 * 4
            assert "HTTP 503" in s["last_error"] and s["counters"]["errors"] >= 12
    finally:
        await fake.stop()
