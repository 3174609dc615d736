"""The real daemon against a fake YouTube on loopback: the web client's route end to end (chat,
Super Chats and Stickers journaled as paid, memberships, deletions and bans that take queued
speech back), and a channel whose stream ends and starts again."""

from __future__ import annotations

import json
import sqlite3
import statistics
import time

import anyio
import pytest
from fakes import youtube as yf
from fakes.bilibili_twitch_daemon import RunningDaemon
from fakes.youtube import FakeYouTube

FAST = {"base": 0.1, "factor": 2.0, "step": 0.0, "cap": 0.4, "jitter": 0.05, "healthy_after": 0.5}


def source(fake: FakeYouTube, **kw) -> dict:
    s = {"type": "youtube", "name": "yt", "channel": fake.handle, "base_url": fake.base, "api_base": fake.api_base,
         "not_live_interval": 0.3, "min_poll_interval": 0.05, "rate_limit_delay": 0.2, "reconnect": FAST}  # fmt: skip
    s.update(kw)
    return s


async def queued(d: RunningDaemon, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        q = await d.call("queue")
        if any(text in u["text"] for u in [*q["pending"], *q["prepared"]]):
            return
        assert time.monotonic() < deadline, f"{text!r} never queued\n{d.log()[-3000:]}"
        await anyio.sleep(0.05)


def journal_rows(d: RunningDaemon) -> list[dict]:
    db = sqlite3.connect(d.tmp / "state" / "journal.sqlite3")
    try:
        rows = db.execute("SELECT state, priority, message FROM utterances").fetchall()
    finally:
        db.close()
    return [{"state": st, "priority": pr, "message": json.loads(m) if m else None} for st, pr, m in rows]


@pytest.mark.anyio
async def test_web_route_end_to_end(tmp_path):
    fake = FakeYouTube(timeout_ms=300)
    await fake.start()
    fake.start_stream("liveVideo01", "Friday stream", history=[yf.text_message("h1", "@early", "UCearly", "said before we came")])
    try:
        async with RunningDaemon(tmp_path, [source(fake)]) as d:
            s = await d.wait_state("connected")
            assert s["video_id"] == "liveVideo01" and s["title"] == "Friday stream" and s["route"] == "web"
            assert s["channel"] == "@fakestreamer" and s["live"] is True and s["chat"] == "live"
            # the chat frame and get_live_chat were asked for the Live chat view, with the page's key and context
            frame = next(r for r in fake.requests if r.path == "/live_chat")
            assert frame.query["continuation"] == "reload-liveVideo01-live"
            paid = yf.paid_message("p1", "@bob", "UCbob", "$5.00", "take my money")
            fake.push(
                yf.text_message("m1", "@alice", "UCalice", "hello from youtube ", yf.emoji(":_wave:"),
                                badges=(yf.badge("moderator"),)),
                yf.text_message("m2", "@pic", "UCpic", yf.emoji(":_a:"), yf.emoji(":_b:")),
                paid, yf.ticker_for(paid), yf.paid_sticker("s1", "@carol", "UCcarol", "¥500", "A cat dancing"),
                yf.new_member("n1", "@dan", "UCdan", "Gold Tier"),
                yf.milestone("ms1", "@eve", "UCeve", 8, "Gold Tier", "still here"),
                yf.gift_purchase("g1", "@frank", "UCfrank", 5), yf.gift_redemption("r1", "@gina", "UCgina", "frank"),
                yf.engagement("Welcome to live chat!"),
            )  # fmt: skip
            a = await d.wait_spoken("hello from youtube")
            assert a["said"] == "alice says: hello from youtube" and a["user_id"] == "UCalice"
            assert a["priority"] == "moderator" and a["platform"] == "youtube" and a["message_id"] == "m1"
            sc = await d.wait_spoken("take my money")
            assert sc["said"] == "bob sent a 5 USD Super Chat. take my money" and sc["kind"] == "superchat" and sc["priority"] == "paid"
            sticker = await d.wait_spoken("carol sent a 500 JPY Super Chat.")
            assert sticker["priority"] == "paid"
            new = await d.wait_spoken("Welcome to Gold Tier!")
            assert new["said"] == "dan: Welcome to Gold Tier!" and new["kind"] == "sub" and new["priority"] == "membership"
            await d.wait_spoken("eve: Member for 8 months: still here")
            gift = await d.wait_spoken("frank: Gifted 5")
            assert gift["priority"] == "membership"
            # a Super Chat amount no one can pay, and a currency we do not know: still paid, said plainly
            fake.push(yf.paid_message("p8", "@rich", "UCrich", "$" + "9" * 40, "big spender"),
                      yf.paid_message("p9", "@odd", "UCodd", "₿ 3", "odd money"))  # fmt: skip
            rich = await d.wait_spoken("big spender")
            assert rich["said"] == "rich sent a Super Chat. big spender" and rich["priority"] == "paid"
            odd = await d.wait_spoken("odd money")
            assert odd["said"] == "odd sent a 3 ₿ Super Chat. odd money" and odd["priority"] == "paid"

            # a moderator deletes one message and bans an author while their speech is queued
            await d.call("pause")
            fake.push(yf.text_message("x1", "@troll", "UCtroll", "delete me please"),
                      yf.text_message("x2", "@spam", "UCspam", "spam number one"),
                      yf.paid_message("x3", "@spam", "UCspam", "$1.00", "spam number two"))  # fmt: skip
            await queued(d, "spam number two")
            fake.push(yf.mark_deleted("x1"), yf.remove_by_author("UCspam"))
            await d.until("two deletions", lambda: d.log().count("deletion platform=youtube") >= 2)
            await d.call("resume")
            fake.push(yf.text_message("m9", "@alice", "UCalice", "the last word"))
            await d.wait_spoken("the last word")
            said = [x["said"] for x in d.spoken()]
            for gone in ("said before we came", "delete me", "spam number", ":_a:", "gina", "Welcome to live chat"):
                assert not any(gone in x for x in said), gone
            assert sum("take my money" in x for x in said) == 1  # the ticker repeats the Super Chat: said once
            assert not any("pic" in x for x in said)  # a message of custom emoji alone is a picture

            # paid speech was journaled with its amount and currency; the deleted one too, as dropped
            rows = {r["message"]["id"]: r for r in journal_rows(d) if r["message"]}
            assert rows["p1"]["state"] == "spoken" and rows["p1"]["priority"] == "paid"
            assert (rows["p1"]["message"]["amount"], rows["p1"]["message"]["currency"]) == (5.0, "USD")
            assert rows["x3"]["state"] in ("dropped", "cut") and rows["n1"]["priority"] == "membership"

            # polling followed the server's timeoutMs (300 ms): never faster
            times = [r.at for r in fake.polls()]
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert len(gaps) >= 3 and min(gaps) >= 0.28 and statistics.median(gaps) < 0.6, gaps
            s = await d.source("yt")
            assert s["poll_interval_s"] == 0.3 and s["seconds_since_poll"] is not None
            c = s["counters"]
            assert c["ticker"] >= 1 and c["gift_redemptions"] == 1 and c["history_skipped"] == 1 and c["deletions"] == 2
            assert c.get("reconnects", 0) == 0 and fake.context_errors == []
            assert c["implausible"] == 1 and c["unknown_currency"] == 1 and s["unknown_currencies"] == ["₿"]
            health = await d.call("health")
            assert next(x for x in health["checks"] if x["check"] == "source:yt")["level"] == "ok"
    finally:
        await fake.stop()


@pytest.mark.anyio
async def test_a_channel_goes_live_ends_and_goes_live_again(tmp_path):
    fake = FakeYouTube(timeout_ms=200)
    await fake.start()
    try:
        async with RunningDaemon(tmp_path, [source(fake)]) as d:
            s = await d.wait_state("not_live")
            assert s["detail"].startswith("@fakestreamer is not live; checking again in 0.3 s") and s["video_id"] is None
            health = await d.call("health")
            assert next(x for x in health["checks"] if x["check"] == "source:yt")["level"] == "ok"  # waiting is no fault
            checks = len([r for r in fake.requests if r.path.endswith("/live")])
            await anyio.sleep(1.0)
            asked = len([r for r in fake.requests if r.path.endswith("/live")]) - checks
            assert 2 <= asked <= 5, asked  # every not_live_interval (0.3 s), not faster

            fake.start_stream("firstStream", "first", history=[yf.text_message("o1", "@o", "UCo", "an old one")])
            s = await d.wait_state("connected")
            assert s["video_id"] == "firstStream"
            fake.push(yf.text_message("f1", "@alice", "UCalice", "first stream hello"))
            await d.wait_spoken("first stream hello")

            fake.end_stream()
            await d.wait_state("not_live")
            await d.until("the end reported", lambda: "YouTube sent no next continuation" in d.log())
            fake.start_stream("secondStrea", "second", history=[yf.text_message("o2", "@o", "UCo", "said while we looked")])
            s = await d.wait_state("connected")
            assert s["video_id"] == "secondStrea" and s["streams"] == 2
            fake.push(yf.text_message("s1", "@bob", "UCbob", "second stream hello"))
            await d.wait_spoken("second stream hello")
            said = " ".join(x["said"] for x in d.spoken())
            assert "an old one" not in said and "said while we looked" not in said
            s = await d.source("yt")
            assert s["counters"]["chats_ended"] == 1 and s["counters"].get("errors", 0) == 0
    finally:
        await fake.stop()


def _check_config(path, env=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ishowttsd", "--config", str(path), "--check-config"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD="1", **(env or {})))  # fmt: skip


def test_bad_tables_explain_themselves(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sources]]\ntype = "youtube"\nchannel = "just a name"\n')
    r = _check_config(bad)
    assert r.returncode == 78 and "sources[0].channel" in r.stderr and "channel handle (@name)" in r.stderr
    bad.write_text('[[sources]]\ntype = "youtube"\nchannel = "@someone"\napi_key_env = "NOPE_UNSET_YT"\n')
    r = _check_config(bad)
    assert r.returncode == 78 and "environment variable NOPE_UNSET_YT is not set" in r.stderr
    bad.write_text('[[sources]]\ntype = "youtube"\nchannel = "@someone"\nmin_poll_interval = 5.0\nmax_poll_interval = 2.0\n')
    r = _check_config(bad)
    assert r.returncode == 78 and "max_poll_interval must be at least min_poll_interval" in r.stderr
