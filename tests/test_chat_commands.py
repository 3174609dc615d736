"""Chat commands end to end: the real daemon, chat from the fake Twitch IRC server and the fake
Bilibili server, and what was said read back from the file sink."""

from __future__ import annotations

import json
import re
import time

import anyio
import pytest
from fakes import bilibili as bf
from fakes import twitch as tf
from fakes.bilibili import FakeBilibili
from fakes.bilibili_twitch_daemon import RunningDaemon
from fakes.twitch import FakeTwitch

from ishowttsd.chat_commands import ChatCommands
from ishowttsd.config import CommandsConfig
from ishowttsd.ctl import _human
from ishowttsd.events import EventBus
from ishowttsd.messages import Kind, Message, User

FAST = {"base": 0.2, "factor": 2.0, "step": 0.0, "cap": 1.0, "jitter": 0.05, "healthy_after": 0.5}

# a sink that plays in real time, like a sound card, so that something is speaking long enough to skip
PACED_SINK = '''
import anyio
from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import Sink, SinkSettings


class PacedSink(Sink):
    type = "paced"
    Settings = SinkSettings
    realtime = True
    audible = True

    async def play(self, pb):
        async for chunk in pb.chunks():
            await anyio.sleep(chunk.duration)


@hookimpl
def ishowtts_register_sinks(register):
    register(PacedSink)
'''

COMMANDS = """
[commands]
enabled = true
prefix = "!tts"
allow_users = ["twitch:carol"]
voices = ["en", "zh"]
mute_max_s = 3600

[[sinks]]
type = "paced"
"""


def _daemon(tmp_path, fake: FakeTwitch) -> RunningDaemon:
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o700, exist_ok=True)
    (plugins / "paced_sink.py").write_text(PACED_SINK)
    src = {"type": "twitch", "name": "tw", "channel": fake.channel, "url": fake.url, "reconnect": FAST}
    # ignore_commands off: command lines must still never be read
    return RunningDaemon(tmp_path, [src], daemon={"plugin_dirs": ["plugins"]}, moderation={"ignore_commands": False},
                         extra=COMMANDS)  # fmt: skip


MOD = {"badges": "moderator/1", "mod": "1"}


@pytest.mark.anyio
async def test_commands_from_twitch_chat(tmp_path):
    fake = FakeTwitch()
    await fake.start()
    C = fake.channel
    try:
        async with _daemon(tmp_path, fake) as d:
            await fake.wait_joined()
            s = await d.wait_state("connected")
            assert s["follows"].startswith("not visible: Twitch chat (IRC) does not carry follows")
            long = "This sentence is long and takes many seconds to read aloud in real time. " * 6
            said = await d.call("say", {"text": long})

            async def speaking() -> bool:
                sp = (await d.call("status"))["speaker"]["speaking"]
                return sp is not None and sp["id"] == said["id"]

            deadline = time.monotonic() + 20
            while not await speaking():
                assert time.monotonic() < deadline, "the long utterance never started"
                await anyio.sleep(0.05)
            # a viewer may not skip: refused, counted, published; what speaks goes on
            await fake.send(tf.privmsg(C, "eve", "!tts skip", id="c-1"))
            await d.until("the refusal", lambda: "command.refused" in d.log())
            st = await d.call("status")
            assert st["chat"]["commands"]["refused"] == {"not_allowed": 1}
            assert st["speaker"]["speaking"]["id"] == said["id"]
            # a moderator may: the control API's skip cuts it
            await fake.send(tf.privmsg(C, "mia", "!tts skip", id="c-2", **MOD))
            await d.until("the skip", lambda: _status(d)["events"].get("cut", 0) == 1)
            st = _status(d)
            assert re.search(rf"cut id={said['id']} .*reason=skipped", d.log())
            assert st["chat"]["commands"]["done"] == {"skip": 1}
            assert st["reasons"]["filtered:command"] == 2  # neither line was read aloud
            # pause and resume from chat (an allow-listed viewer)
            await fake.send(tf.privmsg(C, "carol", "!tts pause", id="c-3"))
            await d.until("paused", lambda: _status(d)["speaker"]["paused"])
            await fake.send(tf.privmsg(C, "carol", "!TTS resume", id="c-4"))
            await d.until("resumed", lambda: not _status(d)["speaker"]["paused"])

            # mute bob for 60 s: status shows it with the time left; his chat is filtered as muted
            await fake.send(tf.privmsg(C, "bob", "first words", id="b-1"))
            await d.wait_spoken("first words")
            await fake.send(tf.privmsg(C, "mia", "!tts mute bob 60", id="c-5", **MOD))
            await d.until("the mute", lambda: _status(d)["chat"]["commands"]["mutes"])
            mute = _status(d)["chat"]["commands"]["mutes"][0]
            assert mute["platform"] == "twitch" and mute["user"] == "bob" and 55 < mute["left_s"] <= 60
            shown = _human("status", _status(d))  # what `ishowttsctl status` prints
            assert "ishowtts_muted_users 1" in d.request("metrics")["text"]
            assert re.search(r"^commands !tts  muted: bob \(twitch, \d+ s\)  refused \d+$", shown, re.M), shown
            await fake.send(tf.privmsg(C, "bob", "muted words", id="b-2"), tf.privmsg(C, "ann", "after bob", id="a-1"))
            await d.wait_spoken("after bob")
            assert not any("muted words" in r["said"] for r in d.spoken())
            assert _status(d)["reasons"]["filtered:muted"] == 1
            # bad arguments and unknown verbs are refused with the right form
            await fake.send(tf.privmsg(C, "mia", "!tts mute bob forever", id="c-6", **MOD),
                            tf.privmsg(C, "mia", "!tts dance", id="c-7", **MOD),
                            tf.privmsg(C, "mia", "!tts mute bob 99999", id="c-8", **MOD))  # fmt: skip
            await d.until("three refusals", lambda: _status(d)["chat"]["commands"]["refused_total"] == 4)
            assert _status(d)["chat"]["commands"]["refused"] == {"not_allowed": 1, "bad_argument": 2, "unknown_verb": 1}
            await fake.send(tf.privmsg(C, "mia", "!tts unmute bob", id="c-9", **MOD))
            await d.until("the unmute", lambda: not _status(d)["chat"]["commands"]["mutes"])
            await fake.send(tf.privmsg(C, "bob", "back again", id="b-3"))
            await d.wait_spoken("back again")
            # a command replayed by a reconnecting source (the same message id) does not run again
            await fake.send(tf.privmsg(C, "mia", "!tts unmute bob", id="c-9", **MOD))
            await d.until("the replay", lambda: _status(d)["reasons"].get("filtered:duplicate_id") == 1)
            assert _status(d)["chat"]["commands"]["refused_total"] == 4

            # a viewer picks a voice; command lines are never read, even with ignore_commands off
            await fake.send(tf.privmsg(C, "zoe", "!voice en", id="z-1"), tf.privmsg(C, "zoe", "!voice robot", id="z-2"))
            await d.until("the voice", lambda: _status(d)["chat"]["commands"]["voices_picked"] == 1)
            await fake.send(tf.privmsg(C, "zoe", "hello in my voice", id="z-3"))
            rec = await d.wait_spoken("hello in my voice")
            assert rec["voice"] == "en"
            await fake.send(tf.privmsg(C, "ann", "!discord is open", id="a-2"))  # another bot's command is read here
            await d.wait_spoken("!discord is open")
            assert not any("!voice" in r["said"] or "!tts" in r["said"] for r in d.spoken())
            # `clear` drops what waits
            await fake.send(tf.privmsg(C, "mia", "!tts pause", id="c-10", **MOD))
            await d.until("paused", lambda: _status(d)["speaker"]["paused"])
            for i in range(3):
                await d.call("inject", {"platform": "twitch", "user": "x", "text": f"waiting {i}", "id": f"w{i}"})
            await d.call("inject", {"platform": "twitch", "kind": "superchat", "user": "rich", "text": "paid words",
                                    "amount": 5, "currency": "USD", "id": "sc-1"})  # fmt: skip
            await fake.send(tf.privmsg(C, "mia", "!tts clear", id="c-11", **MOD))
            await d.until("cleared", lambda: _status(d)["reasons"].get("dropped:cleared", 0) >= 2)
            await fake.send(tf.privmsg(C, "mia", "!tts resume", id="c-12", **MOD))
            await d.wait_spoken("paid words")  # a moderator's clear leaves what the streamer owes
        state = json.loads((tmp_path / "state" / "chat.json").read_text())
        assert state["voices"] == {"twitch:uid-zoe": "en"}

        # after a restart zoe's voice is remembered
        async with _daemon(tmp_path, fake) as d:
            await fake.wait_joined()
            await d.wait_state("connected")
            await fake.send(tf.privmsg(C, "zoe", "still my voice", id="z-4"))
            rec = await d.wait_spoken("still my voice")
            assert rec["voice"] == "en"
            assert not any("waiting" in r["said"] for r in d.spoken())
    finally:
        await fake.stop()


def _status(d: RunningDaemon) -> dict:
    from ishowttsd.control import client_request

    return client_request(d.socket, "status", None, 10.0)


@pytest.mark.anyio
async def test_commands_from_bilibili_room_admins(tmp_path):
    """A Bilibili room admin (房管) runs commands; the line is not read, a viewer's is refused."""
    fake = FakeBilibili()
    await fake.start()
    src = {"type": "bilibili", "name": "bili", "room_id": fake.short_room, "api_base": fake.base,
           "live_api_base": fake.base, "ws_url": fake.ws_url, "heartbeat_interval": 0.3, "risk_control_delay": 0.3,
           "reconnect": {"base": 0.05, "step": 0.05, "cap": 0.5, "jitter": 0.05, "healthy_after": 1.0}}  # fmt: skip
    try:
        async with RunningDaemon(tmp_path, [src], moderation={"ignore_commands": False},
                                 extra="[commands]\nenabled = true\n") as d:  # fmt: skip
            await fake.wait_connected()
            await fake.push([bf.danmu("!tts pause", 1001, "房管", id_str="d-1", admin=1),
                             bf.danmu("!tts resume", 1002, "路人", id_str="d-2")])  # fmt: skip
            await d.until("paused", lambda: _status(d)["speaker"]["paused"])
            await d.until("the refusal", lambda: _status(d)["chat"]["commands"]["refused"].get("not_allowed") == 1)
            assert _status(d)["speaker"]["paused"]
            await fake.push([bf.danmu("!tts mute 路人 30", 1001, "房管", id_str="d-3", admin=1),
                             bf.danmu("!tts resume", 1001, "房管", id_str="d-4", admin=1),
                             bf.danmu("我被禁言了吗", 1002, "路人", id_str="d-5"),
                             bf.danmu("大家好", 1003, "小明", id_str="d-6")])  # fmt: skip
            await d.wait_spoken("大家好")
            said = " ".join(r["said"] for r in d.spoken())
            assert "我被禁言了吗" not in said and "!tts" not in said
            assert [m["user"] for m in _status(d)["chat"]["commands"]["mutes"]] == ["路人"]
    finally:
        await fake.stop()


def test_command_lines_are_recognised_and_checked(tmp_path):
    cfg = CommandsConfig(enabled=True, voices=["en"], roles=["broadcaster"])
    bus = EventBus(strict=True)
    c = ChatCommands(cfg, tmp_path, bus, has_voice=lambda v: v == "en", clock=lambda: 1000.0)

    def msg(text: str, **user) -> Message:
        return Message(platform="twitch", kind=Kind.DANMAKU, text=text, user=User(**{"id": "u1", "name": "u", **user}))

    assert c.is_command(msg("!tts skip")) and c.is_command(msg("  !TTS")) and c.is_command(msg("!voice en"))
    assert not c.is_command(msg("!ttsx skip")) and not c.is_command(msg("hello !tts"))
    assert not c.is_command(Message(platform="twitch", kind=Kind.SUPERCHAT, text="!tts skip"))
    assert c.handle(msg("!tts")).reason == "unknown_verb"
    assert c.handle(msg("!tts skip", moderator=True)).reason == "not_allowed"  # roles: broadcaster only
    assert c.handle(msg("!tts skip now", broadcaster=True)).reason == "bad_argument"
    assert c.handle(msg("!tts skip", broadcaster=True)).done
    assert c.handle(msg("!tts mute", broadcaster=True)).reason == "bad_argument"
    assert c.handle(msg("!tts mute x nan", broadcaster=True)).reason == "bad_argument"
    assert c.handle(msg("!tts mute x inf", broadcaster=True)).reason == "bad_argument"
    assert c.handle(msg("!tts mute @X 5", broadcaster=True)).done
    assert c.muted(msg("hi", name="x", id="9")) == pytest.approx(5.0)
    assert c.handle(msg("!voice")).reason == "bad_argument"
    assert c.handle(msg("!voice en")).done and c.voice_for(msg("hi")) == "en"
    assert c.handle(msg("!voice default")).done and c.voice_for(msg("hi")) is None
    c.flush()
    saved = json.loads((tmp_path / "chat.json").read_text())
    assert saved["mutes"] == [{"platform": "twitch", "user": "x", "until": 1005.0}]
    # a damaged state file is reported, not fatal
    (tmp_path / "chat.json").write_text("{not json")
    again = ChatCommands(cfg, tmp_path, bus, has_voice=lambda v: True)
    assert "unreadable" in again.status()["problem"]
    off = ChatCommands(CommandsConfig(), tmp_path / "off", bus, has_voice=lambda v: True)
    out = off.handle(msg("!tts skip", broadcaster=True))
    assert not out.done and out.reason == "off" and off.status()["refused_total"] == 0
