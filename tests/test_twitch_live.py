"""The real daemon against a fake Twitch chat (IRC over websocket) on loopback."""

from __future__ import annotations

import json
import re
import time

import anyio
import pytest
from fakes import twitch as tf
from fakes.bilibili_twitch_daemon import RunningDaemon
from fakes.twitch import FakeTwitch

FAST = {"base": 0.2, "factor": 2.0, "step": 0.0, "cap": 1.0, "jitter": 0.05, "healthy_after": 0.5}
TOKEN = "abcd1234secrettoken"


def source(fake: FakeTwitch, **kw) -> dict:
    s = {"type": "twitch", "name": "tw", "channel": "SomeChannel", "url": fake.url, "reconnect": FAST}
    s.update(kw)
    return s


@pytest.mark.anyio
async def test_anonymous_chat_end_to_end(tmp_path):
    fake = FakeTwitch()
    await fake.start()
    C = fake.channel
    try:
        async with RunningDaemon(tmp_path, [source(fake, strip_emotes=True)]) as d:
            await fake.wait_joined()
            assert fake.received[0] == "CAP REQ :twitch.tv/tags twitch.tv/commands"
            assert any(re.fullmatch(r"NICK justinfan\d+", ln) for ln in fake.received)
            assert f"JOIN #{C}" in fake.received
            await d.wait_state("connected")
            # several lines in one frame; escapes in tags; emotes stripped; empty display-name
            await fake.send(
                tf.privmsg(C, "alice", "Kappa hello there Kappa", emotes="25:0-4,18-22", id="m-1", badges="moderator/1",
                           mod="1"),
                tf.privmsg(C, "bob", "no display name here", display_name="", id="m-2"),
                tf.privmsg(C, "carol", "cheer100 great stream", bits="100", id="m-3"),
                tf.privmsg(C, "dave", "play the song", custom_reward_id="rw-42", id="m-4"),
            )
            a = await d.wait_spoken("hello there")
            assert "Kappa" not in a["said"] and a["user"] == "Alice" and a["message_id"] == "m-1"
            assert a["priority"] == "moderator" and a["user_id"] == "uid-alice"
            b = await d.wait_spoken("no display name here")
            assert b["user"] == "bob"
            c = await d.wait_spoken("great stream")
            assert c["kind"] == "bits" and c["priority"] == "paid" and "100 bits" in c["said"]
            r = await d.wait_spoken("play the song")
            assert r["kind"] == "redemption" and "rw-42" in r["said"]
            await fake.send(
                tf.usernotice(C, "erin", "resub", "Erin subscribed at Tier 1. They've subscribed for 5 months!",
                              "five months; yay", msg_param_cumulative_months="5", msg_param_sub_plan="1000"),
                tf.usernotice(C, "frank", "subgift", "Frank gifted a Tier 1 sub to Gina!",
                              msg_param_recipient_display_name="Gina"),
                tf.usernotice(C, "raider", "raid", "15 raiders from Raider have joined!", msg_param_viewerCount="15",
                              msg_param_displayName="Raider"),
            )
            e = await d.wait_spoken("five months; yay")  # the \s and \: escapes in system-msg decoded too
            assert e["kind"] == "sub" and e["user"] == "Erin"
            g = await d.wait_spoken("Frank gifted 1 sub")  # the gifter gave a gift; they did not subscribe
            assert g["kind"] == "gift" and g["priority"] == "paid"
            rd = await d.wait_spoken("raiding with 15 viewers")
            assert rd["kind"] == "raid" and rd["user"] == "Raider"

            # CLEARMSG and CLEARCHAT remove queued speech
            await d.call("pause")
            await fake.send(tf.privmsg(C, "troll", "delete me please", id="bad-1"),
                            tf.privmsg(C, "spammer", "spam one", id="sp-1", user_id="u-spam"),
                            tf.privmsg(C, "spammer", "spam two", id="sp-2", user_id="u-spam"))  # fmt: skip
            await d.until("three received", lambda: d.log().count("received source=tw") >= 10)
            await fake.send(tf.tagged({"login": "troll", "target-msg-id": "bad-1"}, f":tmi.twitch.tv CLEARMSG #{C} :delete me please"),
                            tf.tagged({"ban-duration": "600", "target-user-id": "u-spam"}, f":tmi.twitch.tv CLEARCHAT #{C} :spammer"))  # fmt: skip
            await d.until("two deletions", lambda: d.log().count("deletion platform=twitch") >= 2)
            await d.call("resume")
            # PING answered, then RECONNECT: a new connection, joined again, chat keeps flowing
            pongs = fake.pongs
            await fake.ping()
            await d.until("PONG", lambda: fake.pongs > pongs)
            joins = len(fake.joins)
            await fake.reconnect()
            await d.until("a rejoin", lambda: len(fake.joins) > joins)
            await fake.wait_joined()
            await fake.send(tf.privmsg(C, "alice", "after reconnect", id="m-9"))
            await d.wait_spoken("after reconnect")
            said = " ".join(x["said"] for x in d.spoken())
            assert "delete me" not in said and "spam" not in said
            s = await d.source("tw")
            assert s["state"] == "connected" and s["anonymous"] is True and s["channel"] == "somechannel"
            assert s["counters"]["deletions"] == 2 and s["counters"]["pings"] >= 1 and s["reconnects"] == 1
            # a planned RECONNECT reconnects at once: no backoff wait, not counted as an error
            assert 'state=connecting detail="Twitch asked us to reconnect (RECONNECT)"' in d.log()
            assert "RECONNECT); reconnecting in" not in d.log()
    finally:
        await fake.stop()


@pytest.mark.anyio
async def test_token_login_never_logged_and_reconnect_backoff(tmp_path, monkeypatch):
    fake = FakeTwitch(valid_token=TOKEN)
    await fake.start()
    monkeypatch.setenv("TEST_TWITCH_TOKEN", TOKEN)
    try:
        async with RunningDaemon(tmp_path, [source(fake, login="MyBot", token_env="TEST_TWITCH_TOKEN")]) as d:
            await fake.wait_joined()
            assert f"PASS oauth:{TOKEN}" in fake.received and "NICK mybot" in fake.received
            await d.wait_state("connected")
            for rnd in range(2):
                await anyio.sleep(FAST["healthy_after"] + 0.2)
                fake.refuse_handshakes = 2
                first = len(fake.attempts)
                t0 = time.monotonic()
                await fake.drop_all()
                await fake.wait_joined(timeout=15)
                at = fake.attempts[first:]
                assert len(at) == 3
                gaps = [at[0] - t0, at[1] - at[0], at[2] - at[1]]
                for n, gap in enumerate(gaps):  # 0.2, 0.4, 0.8 (+ jitter): doubling, reset after healthy
                    lo = FAST["base"] * 2**n
                    assert lo - 0.02 <= gap <= lo + FAST["jitter"] + 0.6, gaps
                await fake.send(tf.privmsg(fake.channel, "alice", f"round {rnd} back", id=f"r{rnd}"))
                await d.wait_spoken(f"round {rnd} back")
            status_text = json.dumps(await d.call("status"))
            assert (await d.source("tw"))["anonymous"] is False
        assert TOKEN not in status_text and TOKEN not in d.log()
    finally:
        await fake.stop()


@pytest.mark.anyio
async def test_refused_token_is_explained(tmp_path):
    fake = FakeTwitch(valid_token=TOKEN)
    await fake.start()
    (tmp_path / "token").write_text("oauth:wrong-token-value\n")
    try:
        async with RunningDaemon(tmp_path, [source(fake, login="MyBot", token_file="token")]) as d:
            await d.until("two refused logins", lambda: sum(ln.startswith("PASS") for ln in fake.received) >= 2)
            s = await d.source("tw")
            assert s["state"] in ("backoff", "down") and "refused the token" in s["last_error"]
            health = await d.call("health")
            assert next(c for c in health["checks"] if c["check"] == "source:tw")["level"] == "warn"
        assert "wrong-token-value" not in d.log()
    finally:
        await fake.stop()
