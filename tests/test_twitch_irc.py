"""Twitch IRC parsing without the network: tags and their escapes, PRIVMSG/USERNOTICE/CLEARMSG/
CLEARCHAT normalisation, emote ranges, and fuzzing that the parser never crashes or hangs."""

from __future__ import annotations

import pytest
from fakes import twitch as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from ishowttsd.messages import Deletion, Kind, Message
from ishowttsd.plugins import load_builtin

T = load_builtin("sources/twitch")


def test_tag_escapes():
    assert T.unescape_tag(r"a\sb\:c\\d\re\nf") == "a b;c\\d\re\nf"
    assert T.unescape_tag("trailing\\") == "trailing"
    assert T.unescape_tag(r"\x") == "x"
    line = T.parse_line(tf.tagged({"system-msg": "Erin subscribed; for 5 months\\yes"}, ":tmi.twitch.tv USERNOTICE #c"))
    assert line.tags["system-msg"] == "Erin subscribed; for 5 months\\yes"


def test_parse_line_shapes():
    ln = T.parse_line("@a=1;b= :nick!nick@nick.tmi.twitch.tv PRIVMSG #chan :hello :) there")
    assert (ln.command, ln.params, ln.tags, ln.nick) == ("PRIVMSG", ["#chan", "hello :) there"], {"a": "1", "b": ""}, "nick")
    assert T.parse_line("PING :tmi.twitch.tv").trailing == "tmi.twitch.tv"
    assert T.parse_line(":tmi.twitch.tv RECONNECT").command == "RECONNECT"
    assert T.parse_line(":tmi.twitch.tv CLEARCHAT #dallas").params == ["#dallas"]
    with pytest.raises(T.IrcError):
        T.parse_line("@only=tags")
    assert T.split_lines("A\r\nB\r\n\r\nC") == ["A", "B", "C"]


def test_privmsg_kinds():
    m = T.to_event(T.parse_line(tf.privmsg("c", "alice", "Kappa hi Kappa", emotes="25:0-4,9-13", badges="vip/1,subscriber/12",
                                           first_msg="1", id="x1")))  # fmt: skip
    assert isinstance(m, Message) and m.kind == Kind.DANMAKU and m.text == "Kappa hi Kappa" and m.id == "x1"
    assert m.emotes == [(0, 5), (9, 14)] and m.extra["first_msg"] is True
    assert m.user.vip and m.user.membership == "subscriber" and not m.user.moderator and m.room == "c"
    assert T.strip_emotes(m.text, [("25", 0, 4), ("25", 9, 13)]) == "hi"
    stripped = T.to_event(T.parse_line(tf.privmsg("c", "alice", "Kappa hi Kappa", emotes="25:0-4,9-13")), strip=True)
    assert stripped.text == "hi"
    bits = T.to_event(T.parse_line(tf.privmsg("c", "b", "cheer50 gg Cheer50", bits="100")))
    assert bits.kind == Kind.BITS and bits.amount == 100 and bits.currency == "bits" and bits.paid
    assert bits.text == "gg"
    red = T.to_event(T.parse_line(tf.privmsg("c", "b", "song", custom_reward_id="r1")))
    assert red.kind == Kind.REDEMPTION and red.extra["reward"] == "r1"
    noname = T.to_event(T.parse_line(tf.privmsg("c", "lowercase", "x", display_name="")))
    assert noname.user.name == "lowercase"
    action = T.to_event(T.parse_line(tf.privmsg("c", "b", "\x01ACTION waves\x01")))
    assert action.text == "waves" and action.extra["action"]
    # emote ranges index code points, so they work with astral characters too
    astral = T.to_event(T.parse_line(tf.privmsg("c", "b", "🎉 Kappa 🎉", emotes="25:2-6")), strip=True)
    assert astral.text == "🎉 🎉"


def test_usernotices_and_deletions():
    sub = T.to_event(T.parse_line(tf.usernotice("c", "e", "resub", "sys", "msg", msg_param_cumulative_months="7")))
    assert sub.kind == Kind.SUB and sub.extra["months"] == 7 and sub.text == "msg" and sub.extra["system_msg"] == "sys"
    gift = T.to_event(T.parse_line(tf.usernotice("c", "f", "subgift", "s", msg_param_recipient_display_name="G")))
    assert gift.kind == Kind.GIFT and gift.extra["recipient"] == "G" and gift.text == ""
    assert gift.paid and gift.amount == 4.99 and gift.currency == "USD"
    # the N subgifts that follow a submysterygift are not announced one by one
    assert T.to_event(T.parse_line(tf.usernotice("c", "f", "subgift", "s", msg_param_community_gift_id="123"))) is None
    mystery = T.to_event(T.parse_line(tf.usernotice("c", "f", "submysterygift", "s", msg_param_mass_gift_count="5")))
    assert mystery.kind == Kind.GIFT and mystery.extra["num"] == 5 and mystery.extra["gift"] == "subs"
    raid = T.to_event(T.parse_line(tf.usernotice("c", "r", "raid", "s", msg_param_viewerCount="9", msg_param_displayName="R")))
    assert raid.kind == Kind.RAID and raid.extra["viewers"] == 9 and raid.user.name == "R"
    assert T.to_event(T.parse_line(tf.usernotice("c", "r", "bitsbadgetier", "s"))) is None
    cm = T.to_event(T.parse_line("@login=t;target-msg-id=abc :tmi.twitch.tv CLEARMSG #c :bad"))
    assert isinstance(cm, Deletion) and cm.message_ids == ["abc"]
    ban = T.to_event(T.parse_line("@target-user-id=42 :tmi.twitch.tv CLEARCHAT #c :troll"))
    assert ban.user_id == "42" and ban.reason == "ban"
    timeout = T.to_event(T.parse_line("@ban-duration=60;target-user-id=42 :tmi.twitch.tv CLEARCHAT #c :troll"))
    assert timeout.reason == "timeout"
    everything = T.to_event(T.parse_line(":tmi.twitch.tv CLEARCHAT #c"))
    assert everything.everything


def test_emote_ranges_out_of_text_are_dropped():
    assert T.parse_emotes("1:0-4,5-99999999,7-3,a-b/:1-2/2:", 10) == [("1", 0, 4)]


# -- fuzzing -------------------------------------------------------------------------------------

irc_chars = st.characters(blacklist_categories=("Cs",))


@settings(max_examples=1000, deadline=None)
@given(st.text(irc_chars, max_size=600))
def test_fuzz_random_lines(text):
    for line in T.split_lines(text):
        try:
            parsed = T.parse_line(line)
        except T.IrcError:
            continue
        ev = T.to_event(parsed, strip=True)
        assert ev is None or isinstance(ev, (Message, Deletion))


tag_keys = st.sampled_from(["emotes", "bits", "display-name", "badges", "msg-id", "custom-reward-id", "target-msg-id",
                            "msg-param-viewerCount", "msg-param-cumulative-months", "id", "first-msg"])  # fmt: skip


@settings(max_examples=800, deadline=None)
@given(st.dictionaries(tag_keys, st.text(irc_chars, max_size=40), max_size=8),
       st.sampled_from(["PRIVMSG", "USERNOTICE", "CLEARMSG", "CLEARCHAT", "PING", "NOTICE"]),
       st.text(irc_chars, max_size=200), st.integers(0, 400))  # fmt: skip
def test_fuzz_structured_lines(tags, command, text, cut):
    line = tf.tagged(tags, f":u!u@u.tmi.twitch.tv {command} #chan :{text}") if tags else f":u {command} #chan :{text}"
    for variant in (line, line[:cut]):
        for ln in T.split_lines(variant):
            try:
                ev = T.to_event(T.parse_line(ln), strip=True)
            except T.IrcError:
                continue
            if isinstance(ev, Message):
                assert len(ev.text) <= len(ln)


def test_oversized_line_is_refused_quickly():
    with pytest.raises(T.IrcError):
        T.parse_line("@" + "a=b;" * 100_000 + " PRIVMSG #c :x")
    # a huge emote list inside the size limit is linear work, not quadratic
    ev = T.to_event(T.parse_line(tf.privmsg("c", "u", "x" * 400, emotes="1:" + ",".join(f"{i}-{i}" for i in range(400)))),
                    strip=True)  # fmt: skip
    assert ev.text == ""


def test_a_megabyte_frame_of_lines_is_linear():
    import time

    line = tf.privmsg("c", "u", "hello " * 80, emotes="1:0-4,6-10") + "\r\n"
    frame = line * (1024 * 1024 // len(line))
    t = time.perf_counter()
    n = sum(1 for ln in T.split_lines(frame) if T.to_event(T.parse_line(ln), strip=True))
    assert n == 1024 * 1024 // len(line) and time.perf_counter() - t < 10
