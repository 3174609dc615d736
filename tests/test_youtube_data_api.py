"""The real daemon reading a fake YouTube through the Data API v3 route: discovery through the
channel's page and videos.list, liveChatMessages.list at its pollingIntervalMillis, deletions
and bans, a used-up quota waited out, a page token that survives the reconnect, the key only
ever in the x-goog-api-key header."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from fakes import youtube as yf
from fakes.bilibili_twitch_daemon import RunningDaemon
from fakes.youtube import FakeYouTube

FAST = {"base": 0.1, "factor": 2.0, "step": 0.0, "cap": 0.3, "jitter": 0.05, "healthy_after": 0.3}


@pytest.mark.anyio
async def test_data_api_route_end_to_end(tmp_path, monkeypatch):
    yt = FakeYouTube(api_interval_ms=250)
    await yt.start()
    yt.start_stream("apiVideo001", "API stream", api_history=[yf.api_text("h1", "@early", "UCearly", "said before we came")])
    monkeypatch.setenv("TEST_YT_KEY", yt.data_api_key)
    src = {"type": "youtube", "name": "yt", "channel": yt.handle, "base_url": yt.base, "api_base": yt.api_base,
           "api_key_env": "TEST_YT_KEY", "not_live_interval": 0.3, "min_poll_interval": 0.05, "quota_delay": 0.6,
           "reconnect": FAST}  # fmt: skip
    try:
        async with RunningDaemon(tmp_path, [src]) as d:
            s = await d.wait_state("connected")
            assert s["route"] == "data_api" and s["video_id"] == "apiVideo001" and s["title"] == "API stream"
            yt.push_api(yf.api_text("a1", "@alice", "UCalice", "hello via the api :_wave:", moderator=True),
                        yf.api_superchat("a2", "@bob", "UCbob", 5_000_000, "USD", "$5.00", "api money"),
                        yf.api_new_sponsor("a3", "@dan", "UCdan", "Gold"))  # fmt: skip
            a = await d.wait_spoken("hello via the api")
            assert a["said"] == "alice says: hello via the api" and a["priority"] == "moderator"
            sc = await d.wait_spoken("api money")
            assert sc["said"] == "bob sent a 5 USD Super Chat. api money" and sc["priority"] == "paid"
            new = await d.wait_spoken("dan: Welcome to Gold!")
            assert new["priority"] == "membership"

            await d.call("pause")
            yt.push_api(yf.api_text("x1", "@troll", "UCtroll", "delete me"),
                        yf.api_text("x2", "@spam", "UCspam", "spam spam spam"))  # fmt: skip
            with anyio.fail_after(10):
                while not any("spam" in u["text"] for q in [await d.call("queue")] for u in q["pending"] + q["prepared"]):
                    await anyio.sleep(0.05)
            yt.push_api(yf.api_deleted("d1", "x1", "UCmod"), yf.api_banned("d2", "UCspam", "UCmod"))
            await d.until("two deletions", lambda: d.log().count("deletion platform=youtube") >= 2)
            await d.call("resume")

            # the quota runs out: explained, waited out (quota_delay), and the page token carries on
            yt.fault("messages", "quota")
            with anyio.fail_after(10):
                while (await d.source("yt"))["counters"].get("quota_exceeded", 0) < 1:
                    await anyio.sleep(0.05)
            t0 = time.monotonic()
            yt.push_api(yf.api_text("a4", "@alice", "UCalice", "after the quota"))
            await d.wait_spoken("after the quota")
            assert time.monotonic() - t0 >= 0.4
            assert "the Data API quota is used up (quotaExceeded)" in d.log()

            yt.end_stream()
            s = await d.wait_state("not_live")
            assert (await d.source("yt"))["video_id"] is None
            said = [x["said"] for x in d.spoken()]
            for gone in ("said before we came", "delete me", "spam"):
                assert not any(gone in x for x in said), gone
            assert sum("after the quota" in x for x in said) == 1
            api = [r for r in yt.requests if r.path.startswith("/youtube/v3/")]
            assert api and all(r.headers.get("x-goog-api-key") == yt.data_api_key and "key" not in r.query for r in api)
            tokens = [r.query.get("pageToken") for r in api if r.path.endswith("/messages")]
            assert tokens[0] is None and all(tokens[1:])  # history once; after the quota the token went on
            status_text = json.dumps(await d.call("status"))
        assert yt.data_api_key not in status_text and yt.data_api_key not in d.log()
    finally:
        await yt.stop()


@pytest.mark.anyio
async def test_a_refused_key_is_explained(tmp_path):
    yt = FakeYouTube()
    await yt.start()
    yt.start_stream("apiVideo002")
    (tmp_path / "key").write_text("not-the-key\n")
    try:
        src = await yf.run_source(tmp_path, lambda s: s.last_error, channel="apiVideo002", base_url=yt.base,
                                  api_base=yt.api_base, api_key_file=str(tmp_path / "key"),
                                  reconnect={"base": 0.05, "cap": 0.05, "jitter": 0})  # fmt: skip
    finally:
        await yt.stop()
    assert "the Data API refused videos.list (HTTP 400, badRequest" in src.last_error
    assert "api_key_file / api_key_env" in src.last_error and "not-the-key" not in src.last_error
    assert not [r for r in yt.requests if r.path.endswith("/live")]  # a video id needs no page: videos.list alone
