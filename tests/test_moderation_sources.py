"""Moderation on messages exactly as the real sources produce them from wire data.

Twitch IRC lines go through the twitch plugin's `parse_line` + `to_event`; Bilibili commands
through the bilibili plugin's `parse_command`. What comes out must be moderated as the streamer
configured: emote ranges in the twitch source's format, emoticon danmaku, medals, guards, combos.
"""

from __future__ import annotations

import json

import pytest

from ishowttsd.builtin_plugins.sources import twitch
from ishowttsd.builtin_plugins.sources.bilibili import commands as bilibili
from ishowttsd.config import ModerationConfig
from ishowttsd.messages import Priority
from ishowttsd.moderation import Merged, Moderator, Rejection
from ishowttsd.queue import DEFAULT_TTL


def irc(tags: str, nick: str, text: str, command: str = "PRIVMSG") -> object:
    line = f"@{tags} :{nick}!{nick}@{nick}.tmi.twitch.tv {command} #chan :{text}"
    return twitch.to_event(twitch.parse_line(line))


def danmu(text, uid=1001, name="阿伟", ul=10, medal=None, guard=0, admin=0, dm_type=0, id_str="dm1"):
    meta = [0, 1, 25, 16777215, 1700000000000, 0, 0, "", 0, 0, 0, "", dm_type,
            {"emoticon_unique": "official_147"} if dm_type == 1 else "{}", "{}",
            {"extra": json.dumps({"id_str": id_str})}]  # fmt: skip
    return bilibili.parse_command({
        "cmd": "DANMU_MSG",
        "info": [meta, text, [uid, name, admin, 0, 0, 10000, 1, ""], medal or [], [ul, 0, 0, ">50000", 0], ["", ""],
                 0, guard, None, {"ts": 1700000000, "ct": "x"}, 0, 0, None, None, 0, 0, [0]],
    }, room="1")  # fmt: skip


def gift(num, combo="", coin="gold", price=100, name="辣条", tid="t1"):
    return bilibili.parse_command({"cmd": "SEND_GIFT", "data": {
        "uid": 2002, "uname": "老板", "giftName": name, "num": num, "coin_type": coin, "price": price,
        "total_coin": price * num, "batch_combo_id": combo, "tid": tid}}, room="1")  # fmt: skip


def superchat(message, sc_id=77, price=30):
    return bilibili.parse_command({"cmd": "SUPER_CHAT_MESSAGE", "data": {
        "id": sc_id, "uid": 3003, "price": price, "message": message,
        "user_info": {"uname": "大佬", "guard_level": 3}, "medal_info": {"medal_name": "猫猫", "medal_level": 21}}},
        room="1")  # fmt: skip


def guard_buy(level=3):
    return bilibili.parse_command({"cmd": "GUARD_BUY", "data": {
        "uid": 4004, "username": "新舰长", "guard_level": level, "num": 1, "price": 198000, "gift_name": "舰长",
        "start_time": 1700000000}}, room="1")  # fmt: skip


CASES = [
    ("twitch-emotes-stripped", {},
     lambda: irc("emotes=25:0-4,12-16;user-id=7;display-name=Viewer", "viewer", "Kappa hello Kappa"),
     "Viewer says: hello", Priority.NORMAL),
    ("twitch-unicode-offsets", {},
     lambda: irc("emotes=25:2-6;user-id=7;display-name=Viewer", "viewer", "😀 Kappa ok"),
     "Viewer says: 😀 ok", Priority.NORMAL),
    ("twitch-only-emotes", {},
     lambda: irc("emotes=25:0-4/1902:6-10;user-id=7;display-name=Viewer", "viewer", "Kappa Keepo"),
     "empty", None),
    ("twitch-bits-cheer-removed", {},
     lambda: irc("bits=100;emotes=;user-id=7;display-name=Viewer", "viewer", "cheer100 great stream"),
     "Viewer cheered 100 bits. great stream", Priority.PAID),
    ("twitch-mod-passes-member-rule", {"require_member": True},
     lambda: irc("mod=1;badges=moderator/1;user-id=8;display-name=Mod", "mod", "be nice"),
     "Mod says: be nice", Priority.MODERATOR),
    ("twitch-sub-badge-member", {"require_member": True},
     lambda: irc("subscriber=1;badges=subscriber/12;user-id=9;display-name=Sub", "sub", "hi"),
     "Sub says: hi", Priority.NORMAL),
    ("twitch-not-member", {"require_member": True},
     lambda: irc("user-id=10;display-name=Rando", "rando", "hi"), "not_member", None),
    ("twitch-nightbot", {},
     lambda: irc("user-id=11;display-name=Nightbot", "nightbot", "Follow the stream!"), "bot", None),
    ("twitch-command", {}, lambda: irc("user-id=12;display-name=V", "v", "!discord"), "command", None),
    ("twitch-link", {}, lambda: irc("user-id=13;display-name=V", "v", "clip https://clips.twitch.tv/abc"),
     "V says: clip", Priority.NORMAL),
    ("bili-danmaku", {}, lambda: danmu("主播晚上好"), "阿伟说：主播晚上好", Priority.NORMAL),
    ("bili-emoticon-danmaku", {}, lambda: danmu("赞", dm_type=1), "emoticon", None),
    ("bili-ul-too-low", {"min_user_level": 20}, lambda: danmu("hi", ul=5), "user_level", None),
    ("bili-medal-ok", {"min_medal_level": 10, "medal_name": "猫猫"},
     lambda: danmu("hi", medal=[12, "猫猫", "主播", 1, 0]), "阿伟说：hi", Priority.NORMAL),
    ("bili-medal-other-room", {"min_medal_level": 10, "medal_name": "猫猫"},
     lambda: danmu("hi", medal=[25, "狗狗", "别人", 2, 0]), "medal_level", None),
    ("bili-guard-member", {"require_member": True}, lambda: danmu("hi", guard=3), "阿伟说：hi", Priority.NORMAL),
    ("bili-room-admin", {"min_user_level": 50}, lambda: danmu("hi", admin=1), "阿伟说：hi", Priority.MODERATOR),
    ("bili-paid-gift", {}, lambda: gift(15), "感谢老板送的15个辣条", Priority.PAID),
    ("bili-free-gift", {}, lambda: gift(1, coin="silver", price=0, name="小心心"), "感谢老板送的1个小心心", Priority.LOW),
    ("bili-free-gift-off", {"read_free_gifts": False}, lambda: gift(1, coin="silver", price=0, name="小心心"),
     "free_gift", None),
    ("bili-gift-under-min", {"min_gift_value": 1.0}, lambda: gift(1, price=100), "gift_value", None),
    ("bili-superchat", {}, lambda: superchat("加油"), "大佬的醒目留言：加油", Priority.PAID),
    ("bili-superchat-not-gated", {"min_user_level": 60, "require_member": True}, lambda: superchat("冲"),
     "大佬的醒目留言：冲", Priority.PAID),
    ("bili-guard-buy", {}, lambda: guard_buy(), "感谢新舰长开通舰长", Priority.MEMBERSHIP),
]


@pytest.mark.parametrize("cfg,make,expected,prio", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_source_shapes(cfg, make, expected, prio):
    mod = Moderator(ModerationConfig(**cfg), DEFAULT_TTL)
    out = mod.moderate(make(), source="live")
    if prio is None:
        assert isinstance(out, Rejection) and out.reason == expected, out
    else:
        assert not isinstance(out, Rejection), out
        assert (out.text, out.priority) == (expected, prio)


def test_bilibili_batch_combo_merges():
    mod = Moderator(ModerationConfig(combo_window_s=5), DEFAULT_TTL)
    pending: set[int] = set()
    first = mod.moderate(gift(1, combo="batch:gift:combo_id:2002:1", tid="a"), is_pending=pending.__contains__)
    pending.add(first.id)
    for i, tid in enumerate("bcde"):
        out = mod.moderate(gift(2, combo="batch:gift:combo_id:2002:1", tid=tid), is_pending=pending.__contains__)
        assert isinstance(out, Merged)
    assert first.text == "感谢老板送的9个辣条"


def test_the_same_superchat_twice_is_read_once():
    mod = Moderator(ModerationConfig(), DEFAULT_TTL)
    assert not isinstance(mod.moderate(superchat("谢谢", sc_id=5)), Rejection)
    assert mod.moderate(superchat("谢谢", sc_id=5)).reason == "duplicate_id"


def test_twitch_source_that_strips_emotes_itself_hands_no_spans():
    line = twitch.parse_line("@emotes=25:0-4,18-22;user-id=7;display-name=A :a!a@a.tmi.twitch.tv PRIVMSG #c "
                             ":Kappa hello there Kappa")  # fmt: skip
    m = twitch.to_event(line, strip=True)
    assert m.text == "hello there" and m.emotes == []
    mod = Moderator(ModerationConfig(duplicate_window_s=0), DEFAULT_TTL)
    assert mod.moderate(m).text == "A says: hello there"
    m = twitch.to_event(line, strip=False)
    assert m.text == "Kappa hello there Kappa" and m.emotes == [(0, 5), (18, 23)]
    assert mod.moderate(m).text == "A says: hello there"


def test_emote_ranges_that_do_not_fit_are_not_handed_on():
    spans = twitch.emote_spans
    assert spans("hello Kappa", [("25", 0, 4), ("25", 6, 10)]) == []  # one id, two words
    assert spans("great stream", [("25", 0, 3)]) == []  # not a whole word
    assert spans("Kappa gg", [("25", 0, 4), ("9", 20, 24)]) == []  # out of range
    assert spans("Kappa gg", [("25", 0, 4)]) == [(0, 5)]


def test_bilibili_inline_emoticons_become_spans():
    assert bilibili.emot_spans("好耶[dog][妙啊][dog]", {"[dog]": {}, "[妙啊]": {}}) == [(2, 7), (7, 11), (11, 16)]
    assert bilibili.emot_spans("hi", "not a dict") == []
