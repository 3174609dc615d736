"""Bilibili wire code without the network: WBI and Open Platform signing, the packet walker
(nested brotli/zlib, several packets per frame, truncation, decompression bombs), the command
normaliser, and property-based fuzzing that they never crash, hang or use unbounded memory."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib
from functools import lru_cache

import brotli
import pytest
from fakes import bilibili as bf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ishowttsd.builtin_plugins.sources.bilibili import commands, signing, wire
from ishowttsd.messages import Deletion, Kind, Message

CAP = 256 * 1024


def test_wbi_signature_matches_the_published_example():
    # the worked example of bilibili-API-collect's WBI document
    q = signing.wbi_query({"foo": "114", "bar": "514", "zab": 1919810},
                          "7cd084941338484aae1ad9425b84077c", "4932caff0ff746eab6f01bf08b70ac45", wts=1702204169)  # fmt: skip
    assert q == "bar=514&foo=114&wts=1702204169&zab=1919810&w_rid=8f6f2b5b3d485fe1886cec6a0be8c5d4"
    assert signing.mixin_key("7cd084941338484aae1ad9425b84077c", "4932caff0ff746eab6f01bf08b70ac45") == (
        "ea1db124af3c7062474693fa704f4ff8"
    )


def test_wbi_strips_forbidden_characters_and_the_fake_accepts_it():
    import urllib.parse

    q = signing.wbi_query({"keyword": "a(b)!c*'d e", "id": 5}, "k" * 32, "s" * 32)
    parsed = dict(urllib.parse.parse_qsl(q))
    assert parsed["keyword"] == "abcd e"
    assert bf.check_wbi(parsed, "k" * 32, "s" * 32) is None
    parsed["id"] = "6"
    assert bf.check_wbi(parsed, "k" * 32, "s" * 32) == "bad w_rid"


def test_open_platform_signature():
    h = signing.open_signed_headers(b'{"a":1}', "kid", "secret", nonce="n1", ts=1700000000)
    text = "\n".join([
        "x-bili-accesskeyid:kid", "x-bili-content-md5:" + __import__("hashlib").md5(b'{"a":1}').hexdigest(),
        "x-bili-signature-method:HMAC-SHA256", "x-bili-signature-nonce:n1", "x-bili-signature-version:1.0",
        "x-bili-timestamp:1700000000",
    ])  # fmt: skip
    import hashlib
    import hmac

    assert h["Authorization"] == hmac.new(b"secret", text.encode(), hashlib.sha256).hexdigest()


def test_packets_nested_and_batched():
    cmds = [{"cmd": "A", "n": i} for i in range(5)]
    frame = bf.command_packets(cmds[:2], 3) + bf.command_packets(cmds[2:4], 2) + bf.command_packets(cmds[4:], 0)
    frame += wire.make_packet(wire.OP_HEARTBEAT_REPLY, struct.pack(">I", 12))
    res = wire.parse_frame(frame, CAP)
    assert res.problems == []
    assert [json.loads(p.body)["n"] for p in res.packets if p.op == 5] == [0, 1, 2, 3, 4]
    assert res.packets[-1].op == wire.OP_HEARTBEAT_REPLY


def test_make_packet_header():
    p = wire.make_packet(wire.OP_AUTH, {"uid": 0})
    total, hlen, ver, op, seq = struct.unpack_from(">IHHII", p)
    assert (total, hlen, ver, op, seq) == (len(p), 16, 1, 7, 1) and p[16:] == b'{"uid":0}'


def test_truncated_and_bad_headers():
    good = bf.command_packets([{"cmd": "X"}], 0)
    assert wire.parse_frame(good[:-1]).problems == ["truncated"]
    assert wire.parse_frame(good[:10]).problems == ["truncated"]
    bad = struct.pack(">IHHII", 16, 8, 0, 5, 1)
    assert wire.parse_frame(bad).problems == ["bad_header"]
    assert wire.parse_frame(wire.make_packet(5, b"x" * 10, ver=2)).problems == ["bad_zlib"]
    assert wire.parse_frame(wire.make_packet(5, b"x" * 10, ver=3)).problems == ["bad_brotli"]
    # compression inside compression is refused (the server never does it; a bomb could)
    nested = wire.make_packet(5, zlib.compress(wire.make_packet(5, zlib.compress(b"{}"), ver=2)), ver=2)
    assert wire.parse_frame(nested).problems == ["nested_compression"]


@lru_cache(maxsize=None)
def bombs() -> tuple[bytes, bytes]:
    raw = b"\0" * (64 * 1024 * 1024)
    return (wire.make_packet(5, brotli.compress(raw, quality=5), ver=3), wire.make_packet(5, zlib.compress(raw, 9), ver=2))


@pytest.mark.parametrize("which", [0, 1], ids=["brotli", "zlib"])
def test_decompression_bomb_is_refused_with_bounded_memory(which):
    bomb = bombs()[which]
    assert len(bomb) < 200_000  # 64 MiB behind a small frame
    tracemalloc.start()
    try:
        res = wire.parse_frame(bomb + bf.command_packets([{"cmd": "after"}], 0), CAP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.problems == ["bomb"]
    assert [json.loads(p.body)["cmd"] for p in res.packets] == ["after"]  # the rest of the frame survives
    assert peak < 8 * CAP, peak


def test_budget_is_per_frame_across_packets():
    body = b"".join(wire.make_packet(5, json.dumps({"cmd": "X", "pad": "a" * 1000}).encode(), 0) for _ in range(100))
    one = wire.make_packet(5, zlib.compress(body), 2)
    assert wire.parse_frame(one * 2, len(body) * 2).problems == []
    assert wire.parse_frame(one * 3, len(body) * 2).problems == ["bomb"]


# -- commands ------------------------------------------------------------------------------------


def test_danmaku_fields():
    m = commands.parse_command(bf.danmu("你好", 42, "某人", id_str="abc", medal=[9, "粉丝", "主播", 1], guard=2, level=21,
                                        admin=1), "66")  # fmt: skip
    assert isinstance(m, Message) and m.kind == Kind.DANMAKU and m.text == "你好" and m.id == "abc"
    u = m.user
    assert (u.id, u.name, u.level, u.medal_name, u.medal_level, u.membership, u.moderator) == (
        "42", "某人", 21, "粉丝", 9, "提督", True)
    emo = commands.parse_command(bf.danmu("[doge]", 1, "x", dm_type=1))
    assert emo.picture_only and emo.extra["emoticon"] == "official_1"
    masked = commands.parse_command(bf.danmu("hi", 0, "提***"))
    assert masked.user.id == "" and masked.user.name == "提***"


def test_gift_superchat_guard_deletion():
    paid = commands.parse_command(bf.gift("a", 1, "小电视", 2, 1000))
    assert paid.kind == Kind.GIFT and paid.amount == 2.0 and paid.currency == "CNY" and paid.paid
    assert paid.extra["combo_id"] == "combo-1" and paid.extra["num"] == 2
    free = commands.parse_command(bf.gift("a", 1, "辣条", 5, 100, coin_type="silver"))
    assert free.amount is None and not free.paid
    sc = commands.parse_command(bf.superchat(9, "b", 2, "hi", 30))
    assert sc.kind == Kind.SUPERCHAT and sc.amount == 30 and sc.id == "9" and sc.user.medal_level == 3
    d = commands.parse_command(bf.superchat_delete(9, 10))
    assert isinstance(d, Deletion) and d.message_ids == ["9", "10"]
    g = commands.parse_command(bf.guard_buy("c", 3, 1))
    assert g.kind == Kind.GUARD and g.user.membership == "总督" and g.amount == 198.0
    t = commands.parse_command(bf.user_toast("c", 3, 3))
    assert t.kind == Kind.GUARD and t.user.name == "c" and t.user.membership == "舰长"
    assert isinstance(commands.parse_command(bf.log_in_notice()), commands.LoginNotice)
    with pytest.raises(commands.Ignored):
        commands.parse_command({"cmd": "ONLINE_RANK_COUNT:1"})
    assert commands.command_name({"cmd": "DANMU_MSG:4:0:2:2:2:0"}) == "DANMU_MSG"


def test_send_gift_v2_protobuf():
    m = commands.parse_command(bf.gift_v2("新版礼物人", 321, "粉丝团灯牌", 3, 1000, tid="tid-9"))
    assert m.kind == Kind.GIFT and m.user.name == "新版礼物人" and m.user.id == "321" and m.user.membership == "舰长"
    assert m.extra["gift"] == "粉丝团灯牌" and m.extra["num"] == 3 and m.amount == 3.0 and m.paid and m.id == "tid-9"
    free = commands.parse_command(bf.gift_v2("x", 1, "辣条", 1, 100, coin_type="silver"))
    assert not free.paid and free.amount is None
    for bad in ({"pb": "!!notbase64"}, {"pb": ""}, {"pb": "CP///w=="}, {}):
        with pytest.raises((ValueError, KeyError)):
            commands.parse_command({"cmd": "SEND_GIFT_V2", "data": bad})
    assert wire.pb_fields(bf.pb_encode([(1, 2**63), (2, "x")])) == {1: [2**63], 2: [b"x"]}


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_protobuf_reader(data):
    try:
        fields = wire.pb_fields(data)
    except ValueError:
        return
    assert sum(len(v) for v in fields.values()) <= len(data)


def test_open_platform_commands():
    m = commands.parse_command(bf.open_dm("hi", "oid", "名字", "mid"))
    assert m.user.id == "oid" and m.user.name == "名字" and m.id == "mid" and m.user.medal_level == 5
    g = commands.parse_command(bf.open_gift("o", "n", "小花花", 10, 100, True))
    assert g.amount == 1.0 and g.paid
    sc = commands.parse_command(bf.open_superchat(5, "t", "o", "n", 30))
    assert sc.kind == Kind.SUPERCHAT and sc.id == "5" and sc.amount == 30
    d = commands.parse_command({"cmd": "LIVE_OPEN_PLATFORM_SUPER_CHAT_DEL", "data": {"message_ids": [5]}})
    assert isinstance(d, Deletion) and d.message_ids == ["5"] and d.reason == "superchat_deleted"


@pytest.mark.parametrize("cmd, key", [("SUPER_CHAT_MESSAGE_DELETE", "ids"), ("LIVE_OPEN_PLATFORM_SUPER_CHAT_DEL", "message_ids")])
def test_superchat_deletions_of_both_routes_read_their_own_key(cmd, key):
    d = commands.parse_command({"cmd": cmd, "data": {key: [7, "8"]}})
    assert d == Deletion(platform="bilibili", message_ids=["7", "8"], reason="superchat_deleted")
    other = "message_ids" if key == "ids" else "ids"
    with pytest.raises(KeyError):
        commands.parse_command({"cmd": cmd, "data": {other: [7]}})
    with pytest.raises(TypeError, match=f"{cmd} data.{key} is not a list"):
        commands.parse_command({"cmd": cmd, "data": {key: "7"}})
    guard = commands.parse_command({"cmd": "LIVE_OPEN_PLATFORM_GUARD", "data": {
        "user_info": {"open_id": "o", "uname": "n"}, "guard_level": 3, "guard_num": 1, "price": 198000}})
    assert guard.kind == Kind.GUARD and guard.user.id == "o"
    assert isinstance(commands.parse_command({"cmd": "LIVE_OPEN_PLATFORM_INTERACTION_END", "data": {"game_id": "g"}}),
                      commands.GameEnded)  # fmt: skip


# -- fuzzing -------------------------------------------------------------------------------------

ERRORS = (commands.Ignored, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError, OverflowError)


def _packet_strategy():
    body = st.binary(max_size=300)
    return st.builds(lambda op, ver, b: wire.make_packet(op, b, ver), st.sampled_from([2, 3, 5, 7, 8, 99]),
                     st.sampled_from([0, 1, 2, 3, 7]), body)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_packet_strategy(), max_size=6), st.integers(0, 400), st.binary(max_size=64))
def test_fuzz_frames_never_crash(packets, cut, junk):
    frame = b"".join(packets)
    for data in (frame, frame[:cut], frame + junk, junk + frame):
        res = wire.parse_frame(data, 4096)
        assert sum(len(p.body) for p in res.packets) <= len(data) + 4096


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from([2, 3]), st.integers(0, 65535), st.integers(0, 2**32 - 1))
def test_fuzz_compressed_bodies_and_headers(body, ver, hlen, total):
    # random compressed bodies, valid compressed random data, and lying length fields
    for b in (body, zlib.compress(body) if ver == 2 else brotli.compress(body)):
        wire.parse_frame(wire.make_packet(5, b, ver), 1024)
    wire.parse_frame(struct.pack(">IHHII", total, hlen, ver, 5, 1) + body, 1024)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=10), c, max_size=6),
    max_leaves=40,
)
cmd_names = st.sampled_from(sorted(commands._COMMANDS)) | st.text(max_size=12)


@settings(max_examples=600, deadline=None)
@given(cmd_names, json_values, json_values)
def test_fuzz_commands_raise_only_counted_errors(cmd, data, info):
    for obj in ({"cmd": cmd, "data": data}, {"cmd": cmd + ":1:2", "info": info, "data": data}, data):
        try:
            ev = commands.parse_command(obj, "1")
        except ERRORS:
            continue
        assert isinstance(ev, (Message, Deletion, commands.LoginNotice, commands.GameEnded))
        if isinstance(ev, Message):
            json.dumps(ev.to_dict(), ensure_ascii=False)  # the daemon can log and journal it


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([bf.danmu("x", 1, "n"), bf.gift("a", 1, "g", 1, 100), bf.superchat(1, "u", 1, "t", 30),
                                 bf.gift_v2("a", 1, "g", 1, 100),
                                 bf.guard_buy("g", 1), bf.user_toast("g", 1), bf.superchat_delete(1)]), min_size=1),
       st.data())  # fmt: skip
def test_fuzz_mutated_real_commands(cmds, data):
    # real commands with one field replaced by a random value: parsed or refused, never a crash
    for c in cmds:
        c = json.loads(json.dumps(c))
        target = c.get("data") if isinstance(c.get("data"), dict) else None
        if target:
            key = data.draw(st.sampled_from(sorted(target)))
            target[key] = data.draw(json_values)
        elif "info" in c:
            i = data.draw(st.integers(0, len(c["info"]) - 1))
            c["info"][i] = data.draw(json_values)
        try:
            commands.parse_command(c)
        except ERRORS:
            pass


def test_worst_case_frames_are_linear():
    import time

    tiny = wire.make_packet(5, b"", ver=0) * (1024 * 1024 // 16)  # a 1 MiB frame of empty packets
    t = time.perf_counter()
    res = wire.parse_frame(tiny, CAP)
    assert len(res.packets) == 65536 and time.perf_counter() - t < 5
    inner = wire.make_packet(5, b"{}", ver=0) * 50_000
    many = wire.make_packet(5, zlib.compress(inner), ver=2)
    t = time.perf_counter()
    res = wire.parse_frame(many, len(inner))
    assert len(res.packets) == 50_000 and time.perf_counter() - t < 5
