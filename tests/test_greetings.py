"""Greetings: Bilibili's entries, follows, shares and likes (JSON and protobuf) gathered into one
throttled line of the lowest class; unit tests of the greeter, fuzzing of the protobuf
variant, and the real daemon against the fake Bilibili server."""

from __future__ import annotations

import base64
import json
import time

import anyio
import pytest
from fakes import bilibili as bf
from fakes.bilibili import FakeBilibili
from fakes.bilibili_twitch_daemon import RunningDaemon
from hypothesis import given, settings
from hypothesis import strategies as st

from ishowttsd.builtin_plugins.sources.bilibili import commands
from ishowttsd.config import ConfigError, GreetingsConfig, parse_config
from ishowttsd.events import EventBus
from ishowttsd.greetings import MAX_SEEN, Greeter
from ishowttsd.messages import Kind, Message, Priority, User, Utterance
from ishowttsd.queue import SpeechQueue

ERRORS = (commands.Ignored, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError, OverflowError)


# -- the Bilibili commands ------------------------------------------------------------------------------


def test_interact_word_json_and_protobuf_agree():
    for msg_type, kind in [(1, Kind.ENTER), (2, Kind.FOLLOW), (3, Kind.SHARE), (4, Kind.FOLLOW), (5, Kind.FOLLOW)]:
        a = commands.parse_command(bf.interact_word("小明", 1001, msg_type), "7")
        b = commands.parse_command(bf.interact_word_v2("小明", 1001, msg_type), "7")
        for m in (a, b):
            assert m.kind == kind and m.user.name == "小明" and m.user.id == "1001" and m.room == "7"
            assert m.user.medal_name == "猫猫" and m.user.medal_level == 5 and m.extra["msg_type"] == msg_type
        assert a.id == b.id
    with pytest.raises(commands.Ignored):
        commands.parse_command(bf.interact_word("小明", 1001, 9))


def test_interact_word_v2_published_layout():
    # the first fields of an INTERACT_WORD_V2 captured from the web client (room 33989), as
    # published with its base64: uid 1, uname 2, identities 4, msg_type 5, roomid 6, timestamp 7
    pb = "CLq62owBEgzmpaDmnKhIb3RhcnUiAgMBKAEwxYkCOP7v19MGQJTT9+z9Mw=="
    m = commands.parse_command({"cmd": "INTERACT_WORD_V2", "data": {"dmscore": 10, "pb": pb}})
    assert (m.kind, m.user.id, m.user.name) == (Kind.ENTER, "295083322", "楠木Hotaru")


def test_likes():
    m = commands.parse_command(bf.like_click("阿花", 1002))
    assert m.kind == Kind.LIKE and m.user.name == "阿花" and m.user.id == "1002"
    t = commands.parse_command(bf.like_update(1234))
    assert t.kind == Kind.LIKE and t.extra == {"total": 1234} and not t.user.name
    with pytest.raises(ValueError):
        commands.parse_command({"cmd": "LIKE_INFO_V3_UPDATE", "data": {"click_count": "many"}})
    o = commands.parse_command({"cmd": "LIVE_OPEN_PLATFORM_LIKE", "data": {"uname": "开放", "open_id": "o-1", "uid": 0,
                                "like_text": "为主播点赞了", "like_count": 3, "room_id": 5, "msg_id": "l1"}})  # fmt: skip
    assert o.kind == Kind.LIKE and o.user.id == "o-1" and o.user.name == "开放" and o.room == "5"


def _pb(cmd_bytes: bytes) -> dict:
    return {"cmd": "INTERACT_WORD_V2", "data": {"pb": base64.b64encode(cmd_bytes).decode()}}


REAL_V2 = base64.b64decode(bf.interact_word_v2("小明", 1001, 2)["data"]["pb"])


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_fuzz_interact_word_v2_protobuf(data):
    """Truncated, bit-flipped, spliced or random protobuf: a Message or a counted error, never a crash."""
    choice = data.draw(st.sampled_from(["truncate", "flip", "splice", "random"]))
    raw = bytearray(REAL_V2)
    if choice == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif choice == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif choice == "splice":
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(max_size=40))
    else:
        raw = bytearray(data.draw(st.binary(max_size=200)))
    for obj in (_pb(bytes(raw)), {"cmd": "INTERACT_WORD_V2", "data": {"pb": data.draw(st.text(max_size=40))}}):
        try:
            m = commands.parse_command(obj, "1")
        except ERRORS:
            continue
        assert isinstance(m, Message) and m.kind in (Kind.ENTER, Kind.FOLLOW, Kind.SHARE)
        json.dumps(m.to_dict(), ensure_ascii=False)


# -- the greeter ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Speaker:
    """Stands in for the speaker (cut_where is all the greeter asks of it)."""

    current = None

    def __init__(self) -> None:
        self.cut: list[int] = []
        self.prepared: list[Utterance] = []

    def status(self):
        return {"prepared": [u.summary() for u in self.prepared]}

    def cut_where(self, pred, reason):
        out = [u for u in self.prepared if pred(u)]
        self.cut += [u.id for u in out]
        return out


def _greeter(**cfg):
    clock, bus = Clock(), EventBus(strict=True)
    queue = SpeechQueue(50, bus, clock=clock)
    speaker = Speaker()
    g = Greeter(GreetingsConfig(**cfg), queue.put, queue, speaker, bus, clock=clock)
    return g, queue, clock, speaker, bus


def ev(kind: Kind, name: str, uid: str = "", **extra) -> Message:
    return Message(platform="bilibili", kind=kind, user=User(id=uid or name, name=name), extra=extra)


def test_one_line_for_everything_gathered():
    g, q, clock, _, _ = _greeter(kinds=["enter", "follow", "like"], max_names=2, interval_s=5)
    for name in ["小明", "阿花", "小红", "小刚", "小李"]:
        assert g.add(ev(Kind.ENTER, name))
    g.add(ev(Kind.FOLLOW, "小明"))
    for name in ["a", "b", "c"]:
        g.add(ev(Kind.LIKE, name))
    g.add(ev(Kind.SHARE, "x"))  # share is not enabled: only counted
    u = g.tick()
    assert u is not None and u.priority is Priority.GREETING and u.source == "greetings"
    assert u.text == "感谢 小明 的关注；欢迎 小明、阿花 等 5 位进入直播间；感谢 3 位点赞"
    assert u.deadline == clock.t + 15.0 and not u.priority.owed
    assert q.pending() == [u]
    assert g.status()["off"] == 1 and g.status()["lines"] == 1


def test_throttled_one_line_per_interval_and_one_at_a_time():
    g, q, clock, _, _ = _greeter(kinds=["enter"], interval_s=10, ttl_s=30)
    g.add(ev(Kind.ENTER, "a"))
    first = g.tick()
    assert first.text == "欢迎 a 进入直播间"
    q.get_nowait()
    g.add(ev(Kind.ENTER, "b"))
    clock.t += 5
    assert g.tick() is None  # within the interval
    clock.t += 6
    assert g.tick() is None  # the first line is not said yet (prepared or speaking)
    g.ended(first, "spoken", "")
    second = g.tick()
    assert second is not None and second.text == "欢迎 b 进入直播间"


def test_greetings_wait_for_chat_and_go_stale():
    g, q, clock, _, bus = _greeter(kinds=["follow"], interval_s=1, ttl_s=10)
    chat = Utterance(text="chat", priority=Priority.NORMAL)
    q.put(chat)
    g.add(ev(Kind.FOLLOW, "a"))
    clock.t += 2
    assert g.tick() is None  # chat waits: the greeting waits too
    clock.t += 9
    assert g.tick() is None
    assert g.status()["stale"] == 1 and bus.counts["greeting.stale"] == 1 and not g.status()["gathered"]
    q.get_nowait()
    g.add(ev(Kind.FOLLOW, "b"))
    assert g.tick().text == "感谢 b 的关注"


def test_a_prepared_greeting_yields_to_chat():
    g, q, clock, speaker, _ = _greeter(kinds=["enter"])
    g.add(ev(Kind.ENTER, "a"))
    line = g.tick()
    assert q.get_nowait() is line
    speaker.prepared.append(line)  # the speaker prepared it ahead
    g.other_speech(Utterance(text="paid", priority=Priority.PAID))
    assert speaker.cut == [line.id] and g.status()["yielded"] == 1
    # speech that did not come through chat (an operator's say) is seen at the next tick
    g.ended(line)
    clock.t += 20
    g.add(ev(Kind.ENTER, "b"))
    again = g.tick()
    assert q.get_nowait() is again
    speaker.prepared = [again]
    q.put(Utterance(text="say", priority=Priority.URGENT))
    g.tick()
    assert speaker.cut == [line.id, again.id]


def test_masked_repeated_and_english():
    g, *_ = _greeter(kinds=["enter", "like"], language="en", max_names=3)
    for name, uid in [("a***", "0"), ("b***", "1"), ("Ann", "2"), ("Ann", "2")]:
        g.add(ev(Kind.ENTER, name, uid))
    g.add(ev(Kind.LIKE, "", "", total=99))  # a like total, no user
    u = g.tick()
    assert u.text == "Welcome Ann and 2 more!"  # masked names counted, never read; Ann once
    g2, *_ = _greeter(kinds=["enter"], max_names=0, templates={"enter_count": "{count} joined"})
    g2.add(ev(Kind.ENTER, "x"))
    assert g2.tick().text == "1 joined"


def test_flood_costs_o1_per_event_and_one_line():
    g, q, clock, _, _ = _greeter(kinds=["enter", "like"], interval_s=10)
    n = 200_000
    t0 = time.perf_counter()
    for i in range(n):
        g.add(ev(Kind.ENTER if i % 2 else Kind.LIKE, f"user{i}", str(i)))
    per_event_us = (time.perf_counter() - t0) / n * 1e6
    lines = [g.tick() for _ in range(100)]
    assert sum(x is not None for x in lines) == 1
    assert len(q) == 1
    gathered = sum(len(x.seen) for x in g._gathered.values())
    assert gathered == 0  # said and forgotten
    g.add(ev(Kind.ENTER, "late"))
    assert all(len(x.seen) <= MAX_SEEN for x in g._gathered.values())
    print(f"greeter: {per_event_us:.2f} µs per event over {n} events")


def test_config_is_checked():
    for bad in ({"kinds": ["wave"]}, {"language": "fr"}, {"templates": {"enter": "{who}"}}, {"templates": {"hi": "x"}},
                {"interval_s": 0}):  # fmt: skip
        with pytest.raises(ConfigError):
            parse_config({"greetings": bad})
    assert parse_config({}).greetings.kinds == []  # off by default


# -- end to end ---------------------------------------------------------------------------------------------

def _source(fake: FakeBilibili) -> dict:
    return {"type": "bilibili", "name": "bili", "room_id": fake.short_room, "api_base": fake.base,
            "live_api_base": fake.base, "ws_url": fake.ws_url, "heartbeat_interval": 0.3, "risk_control_delay": 0.3,
            "reconnect": {"base": 0.05, "step": 0.05, "cap": 0.5, "jitter": 0.05, "healthy_after": 1.0}}  # fmt: skip


GREETINGS_ON = """
[greetings]
kinds = ["enter", "follow", "like"]
interval_s = 1
max_names = 2
"""


@pytest.mark.anyio
async def test_greetings_from_bilibili_end_to_end(tmp_path):
    fake = FakeBilibili()
    await fake.start()
    try:
        async with RunningDaemon(tmp_path, [_source(fake)]) as d:
            await fake.wait_connected()
            # off by default: entries and likes are counted, never said
            await fake.push([bf.interact_word("小明", 1001), bf.interact_word_v2("阿花", 1002, 2), bf.like_click("小红", 1003),
                             bf.danmu("第一句", 1004, "观众", id_str="d-1")])  # fmt: skip
            await d.wait_spoken("第一句")
            await anyio.sleep(1.5)
            st = await d.call("status")
            assert st["chat"]["greetings"]["off"] == 3 and st["chat"]["greetings"]["lines"] == 0
            assert [r["said"] for r in d.spoken()] == ["观众: 第一句"]

            # switched on by a reload
            d.config_path.write_text(d.config_path.read_text() + GREETINGS_ON)
            r = await d.call("reload")
            assert "greetings" in r["changed"]
            # speech is paused: chat and paid speech wait, so greetings wait behind them
            await d.call("pause")
            await fake.push([bf.danmu("第二句", 1004, "观众", id_str="d-2"), bf.superchat(9, "大佬", 1009, "醒目", 30)])
            await d.until("chat waiting", lambda: len(_status(d)["speaker"]["prepared"]) + _status(d)["queue"]["pending"] == 2)
            await fake.push([bf.interact_word("小明", 1001), bf.interact_word_v2("阿花", 1002, 1),
                             bf.interact_word("小刚", 1005), bf.interact_word_v2("小明", 1001, 1),  # the same viewer again
                             bf.interact_word("小李", 1006), bf.interact_word_v2("小王", 1007, 2),
                             bf.like_click("小红", 1003), bf.like_click("小绿", 1008), bf.like_update(88)])  # fmt: skip
            await d.until("the greetings gathered", lambda: _gathered(d) == {"enter": 4, "follow": 1, "like": 2})
            await anyio.sleep(1.5)  # past the interval: still no line, chat is waiting
            q = await d.call("queue")
            assert not any(u["priority"] == "greeting" for u in q["pending"] + q["prepared"])
            await d.call("resume")
            line = await d.wait_spoken("进入直播间")
            said = [r["said"] for r in d.spoken()]
            assert line["said"] == "感谢 小王 的关注；欢迎 小明、阿花 等 4 位进入直播间；感谢 小红、小绿 的点赞"
            assert line["priority"] == "greeting" and line["source"] == "greetings" and line["kind"] == "follow"
            assert said.index(line["said"]) > said.index("观众: 第二句") and said.index(line["said"]) > said.index("大佬的醒目留言：醒目")
            assert sum("进入直播间" in s for s in said) == 1

            # a flood of entries and likes: one line per interval, and chat still goes first
            flood = [bf.interact_word(f"路人{i}", 20000 + i) if i % 2 else bf.like_click(f"路人{i}", 20000 + i)
                     for i in range(3000)]  # fmt: skip
            await d.call("pause")
            await fake.push([bf.danmu("洪水里的一句", 1004, "观众", id_str="d-3")])
            await d.until("chat waiting", lambda: len(_status(d)["speaker"]["prepared"]) + _status(d)["queue"]["pending"] == 1)
            t0 = time.monotonic()
            for i in range(0, 3000, 500):
                await fake.push(flood[i : i + 500])
            await d.until("the flood gathered", lambda: _gathered(d) == {"enter": 1500, "like": 1500})
            print(f"3000 interactions through the socket in {time.monotonic() - t0:.2f} s")
            await d.call("resume")
            await d.until("the flood's line", lambda: sum("进入直播间" in r["said"] for r in d.spoken()) == 2)
            await anyio.sleep(2.5)
            said = [r["said"] for r in d.spoken()]
            flood_lines = [x for x in said if "路人" in x]
            assert len(flood_lines) == 1, flood_lines
            assert said.index("观众: 洪水里的一句") < said.index(flood_lines[0])
            assert "等 1500 位进入直播间" in flood_lines[0] and "感谢 1500 位点赞" in flood_lines[0]
            st = await d.call("status")
            assert st["chat"]["greetings"]["received"]["enter"] >= 1504
            assert st["journal"]["pending"] == 0  # greetings are never journaled as owed
            # a flood of greetings is not a flood of events: none is logged or counted one by one
            assert st["counts"]["received"] < 20

            # broken protobuf is counted by the source; the daemon goes on
            await fake.push([{"cmd": "INTERACT_WORD_V2", "data": {"pb": "!!not base64"}}, _pb(b"\x08\xff"),
                             bf.danmu("还活着", 1004, "观众", id_str="d-4")])  # fmt: skip
            await d.wait_spoken("还活着")
            s = await d.source("bili")
            assert s["counters"]["malformed"] >= 2
    finally:
        await fake.stop()


def _status(d: RunningDaemon) -> dict:
    from ishowttsd.control import client_request

    return client_request(d.socket, "status", None, 10.0)


def _gathered(d: RunningDaemon) -> dict:
    return _status(d)["chat"]["greetings"]["gathered"]
