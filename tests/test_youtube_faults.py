"""A YouTube that misbehaves: 5xx, 429 with Retry-After, junk and hostile JSON, 50 MB answers,
dropped connections, a looping continuation, a page whose shape changed, a chat that closes as
it opens. Each is a clear state and error, counted, backed off through the one reconnect
policy; nothing garbled is said, nothing is lost or repeated, and Twitch keeps speaking."""

from __future__ import annotations

import re

import anyio
import pytest
from fakes import twitch as tf
from fakes import youtube as yf
from fakes.bilibili_twitch_daemon import RunningDaemon
from fakes.twitch import FakeTwitch
from fakes.youtube import FakeYouTube

FAST = {"base": 0.1, "factor": 2.0, "step": 0.0, "cap": 0.3, "jitter": 0.05, "healthy_after": 0.3}


def source(fake: FakeYouTube, **kw) -> dict:
    s = {"type": "youtube", "name": "yt", "channel": fake.handle, "base_url": fake.base, "not_live_interval": 0.3,
         "min_poll_interval": 0.05, "rate_limit_delay": 0.2, "reconnect": FAST}  # fmt: skip
    s.update(kw)
    return s


async def errors_above(d: RunningDaemon, n: int, timeout: float = 15.0) -> dict:
    with anyio.fail_after(timeout):
        while True:
            s = await d.source("yt")
            if s["counters"].get("errors", 0) > n:
                return s
            await anyio.sleep(0.05)


def backoff_reasons(log: str) -> list[str]:
    return re.findall(r'source\.state source=yt state=backoff detail="(.*?); reconnecting in', log)


@pytest.mark.anyio
async def test_transport_faults_back_off_and_twitch_keeps_speaking(tmp_path):
    yt, tw = FakeYouTube(timeout_ms=200, retry_after="1"), FakeTwitch()
    await yt.start()
    await tw.start()
    yt.start_stream("faultyVideo")
    twitch = {"type": "twitch", "name": "tw", "channel": tw.channel, "url": tw.url}
    try:
        async with RunningDaemon(tmp_path, [source(yt), twitch]) as d:
            await d.wait_state("connected", name="yt")
            await tw.wait_joined()
            faults = [503, "junk", "hostile", "huge", "huge_declared", 429, "drop"]
            for n, fault in enumerate(faults):
                yt.fault("get_live_chat", fault)
                s = await errors_above(d, n)
                assert s["state"] in ("backoff", "down", "connecting"), s
                await tw.send(tf.privmsg(tw.channel, "viewer", f"twitch still talks {n}", id=f"tw{n}"))
                await d.wait_spoken(f"twitch still talks {n}")
                await d.wait_state("connected", name="yt", timeout=15)
                yt.push(yf.text_message(f"back{n}", "@alice", "UCalice", f"youtube is back {n}"))
                await d.wait_spoken(f"youtube is back {n}")
            reasons = backoff_reasons(d.log())
            expected = ["HTTP 503 for get_live_chat", "not JSON", "not JSON (JSON nested too deeply)",
                        "more than max_response_bytes", "more than max_response_bytes", "rate-limited get_live_chat (HTTP 429)",
                        "talking to 127.0.0.1"]  # fmt: skip
            assert len(reasons) == len(expected), reasons
            for reason, want in zip(reasons, expected):
                assert want in reason, (reason, want)
            # 429: the next request waited for Retry-After (1 s), longer than rate_limit_delay (0.2 s)
            i = next(i for i, r in enumerate(yt.requests) if r.fault == 429)
            assert yt.requests[i + 1].at - yt.requests[i].at >= 1.0
            assert yt.huge_sent < 30 * 1024 * 1024  # the 50 MB answer was refused while streaming
            s = await d.source("yt")
            c = s["counters"]
            assert c["server_errors"] == 1 and c["malformed_answers"] == 2 and c["oversize"] == 2 and c["rate_limited"] == 1
            assert s["reconnects"] == len(faults) and s["state"] == "connected"
            said = [x["said"] for x in d.spoken()]
            assert all(sum(f"youtube is back {n}" in x for x in said) == 1 for n in range(len(faults)))
            assert not any("padding" in x or "xxxx" in x for x in said)
            health = await d.call("health")
            assert next(x for x in health["checks"] if x["check"] == "source:yt")["level"] == "ok"
    finally:
        await yt.stop()
        await tw.stop()


@pytest.mark.anyio
async def test_loops_changed_pages_and_drops_lose_nothing_and_repeat_nothing(tmp_path):
    yt = FakeYouTube(timeout_ms=150)
    await yt.start()
    yt.start_stream("loopyVideo1", history=[yf.text_message("h0", "@early", "UCearly", "from before we came")])
    try:
        async with RunningDaemon(tmp_path, [source(yt, loop_limit=3)]) as d:
            await d.wait_state("connected")
            yt.push(yf.text_message("a1", "@alice", "UCalice", "before the loop"))
            await d.wait_spoken("before the loop")
            # the continuation loops: the same token and the same message, again and again
            yt.fault("get_live_chat", "loop", "loop", "loop")
            await errors_above(d, 0)
            await d.wait_state("connected")
            yt.push(yf.text_message("a2", "@alice", "UCalice", "after the loop"))
            await d.wait_spoken("after the loop")
            assert "the chat continuation of loopyVideo1 loops" in d.log()

            # the watch page changed its shape once: explained, waited out, then read again
            yt.fault("get_live_chat", 503)
            yt.fault("watch", "changed")
            await errors_above(d, 2)
            await d.wait_state("connected", timeout=15)
            assert "YouTube changed its pages" in d.log()

            # the connection drops; what is said meanwhile comes with the reopened chat frame
            yt.fault("get_live_chat", "drop")
            await errors_above(d, 3)
            yt.push(yf.text_message("a3", "@bob", "UCbob", "said during the drop"))
            await d.wait_spoken("said during the drop")
            yt.push(yf.text_message("a4", "@bob", "UCbob", "the end"))
            await d.wait_spoken("the end")
            said = [x["said"] for x in d.spoken()]
            for line in ("before the loop", "after the loop", "said during the drop", "the end"):
                assert sum(line in x for x in said) == 1, (line, said)
            assert not any("from before we came" in x for x in said)
            s = await d.source("yt")
            c = s["counters"]
            assert c["continuation_loops"] == 1 and c["page_changed"] == 1 and c["duplicates"] >= 3
            assert c["history_skipped"] >= 1 and yt.context_errors == []
    finally:
        await yt.stop()


@pytest.mark.anyio
async def test_a_live_stream_whose_chat_keeps_closing_is_an_error_not_a_storm(tmp_path):
    yt = FakeYouTube()
    await yt.start()
    yt.start_stream("closedChat1").chat_closed = True
    try:
        src = await yf.run_source(tmp_path, lambda s: s.counters["errors"] >= 2, channel=yt.handle, base_url=yt.base,
                                  loop_limit=2, not_live_interval=0.1, reconnect={"base": 0.2, "cap": 0.2, "jitter": 0})  # fmt: skip
    finally:
        await yt.stop()
    assert "its chat ends as soon as it is opened" in src.last_error
    frames = [r.at for r in yt.requests if r.path == "/live_chat"]
    gaps = [b - a for a, b in zip(frames, frames[1:])]
    assert len(frames) >= 4 and min(gaps) >= 0.09, gaps  # at least not_live_interval between opens: never a storm
