"""The real daemon against a fake Bilibili on loopback: web route and Open Platform, end to end
into the file sink."""

from __future__ import annotations

import json
import re
import time

import anyio
import pytest
from fakes import bilibili as bf
from fakes.bilibili import FakeBilibili
from fakes.bilibili_twitch_daemon import RunningDaemon

SECRET = "SECRET-SESSDATA-4f1c2a"


async def until(d: RunningDaemon, what: str, pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred(await d.call("queue")):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.05)


def waiting(q: dict, text: str) -> bool:
    return any(text in u["text"] for u in [*q["pending"], *q["prepared"]])


FAST = {"base": 0.05, "step": 0.05, "cap": 0.5, "jitter": 0.05, "healthy_after": 1.0}


def web_source(fake: FakeBilibili, **kw) -> dict:
    s = {
        "type": "bilibili", "name": "bili", "room_id": fake.short_room, "api_base": fake.base,
        "live_api_base": fake.base, "ws_url": fake.ws_url, "heartbeat_interval": 0.3,
        "risk_control_delay": 0.3, "reconnect": FAST,
    }  # fmt: skip
    s.update(kw)
    return s


@pytest.mark.anyio
async def test_web_route_logged_in_end_to_end(tmp_path):
    fake = FakeBilibili(sessdata=SECRET, danmu_info_faults=["352", "412"], auth_failures=1)
    await fake.start()
    (tmp_path / "sessdata.txt").write_text(SECRET + "\n")
    try:
        async with RunningDaemon(tmp_path, [web_source(fake, sessdata_file="sessdata.txt")]) as d:
            await fake.wait_connected()
            # risk control (-352, then 412) and a refused auth were each retried, after a wait
            info_times = [r.at for r in fake.requests if r.path.endswith("getDanmuInfo")]
            assert len(info_times) >= 3
            assert info_times[1] - info_times[0] >= 0.3 and info_times[2] - info_times[1] >= 0.3
            assert fake.wbi_errors == []  # every getDanmuInfo was correctly WBI-signed
            # -352 made the source refresh its WBI keys and buvid before trying again
            assert sum(r.path == "/x/web-interface/nav" for r in fake.requests) >= 2
            assert sum(r.path == "/x/frontend/finger/spi" for r in fake.requests) >= 2
            assert len(fake.auths) >= 2
            auth = fake.auths[-1]
            assert auth["uid"] == fake.login_uid and auth["roomid"] == fake.real_room  # short id resolved
            assert auth["key"] == fake.token and auth["buvid"] == "FAKE-BUVID3-infoc" and auth["protover"] == 3
            log = d.log()
            assert "risk control (-352)" in log and "HTTP 412" in log and "websocket auth answered code -101" in log

            # several brotli packets in one frame, then zlib, then raw JSON
            await fake.push([bf.danmu("主播晚上好", 1001, "小明", id_str="dm-1", medal=[8, "猫猫", "主播", 66], guard=3),
                             bf.gift("老板", 1002, "小电视", 2, 1000)], ver=3, split=2)  # fmt: skip
            await fake.push([bf.superchat(501, "大佬", 1003, "唱首歌吧", 30), bf.gift_v2("新版", 1008, "粉丝团灯牌", 1, 1000)],
                            ver=2)  # fmt: skip
            await fake.push([bf.guard_buy("舰长君", 1004), bf.user_toast("舰长君", 1004)], ver=0)
            await fake.push([bf.danmu("[dog]", 1005, "表情党", dm_type=1)], ver=3)
            r = await d.wait_spoken("主播晚上好")
            assert r["user"] == "小明" and r["user_id"] == "1001" and r["message_id"] == "dm-1" and r["kind"] == "danmaku"
            g = await d.wait_spoken("小电视")
            assert g["kind"] == "gift" and g["user"] == "老板"
            g2 = await d.wait_spoken("粉丝团灯牌")  # SEND_GIFT_V2: protobuf in data.pb
            assert g2["user"] == "新版" and g2["priority"] == "paid"
            sc = await d.wait_spoken("唱首歌吧")
            assert sc["kind"] == "superchat" and sc["message_id"] == "501" and sc["priority"] == "paid"
            await d.wait_spoken("舰长君")
            await fake.push([bf.danmu("marker-1", 1006, "路人")])
            await d.wait_spoken("marker-1")
            said = [x["said"] for x in d.spoken()]
            assert sum("舰长君" in s for s in said) == 1  # GUARD_BUY + USER_TOAST_MSG_V2: spoken once
            assert not any("dog" in s for s in said)  # emoticon danmaku is not read out

            # a super chat deleted by a moderator while queued is never spoken
            await d.call("pause")
            await fake.push([bf.superchat(777, "坏人", 1007, "删掉我", 50)])
            await until(d, "the super chat queued", lambda q: waiting(q, "删掉我"))
            await fake.push([bf.superchat_delete(777)])
            await d.until("the deletion to remove or cut it", lambda: re.search(r"deletion .*777.*(removed=1|cut=1)", d.log()))
            await d.call("resume")
            await fake.push([bf.danmu("marker-2", 1006, "路人")])
            await d.wait_spoken("marker-2")
            assert not any("删掉我" in x["said"] for x in d.spoken())

            # heartbeats flow both ways; LOG_IN_NOTICE while logged in says the cookie may have expired
            await d.until("two heartbeats", lambda: fake.heartbeats >= 2)
            await fake.push([bf.log_in_notice()])
            await d.until("the login warning", lambda: "LOG_IN_NOTICE" in d.log())
            src = await d.source("bili")
            assert src["state"] == "connected" and src["logged_in"] is True and src["room_id"] == fake.real_room
            assert src["popularity"] == fake.popularity
            assert any("SESSDATA" in w for w in src["warnings"])
            assert src["counters"]["messages"] >= 5 and src["counters"]["deletions"] == 1
            assert src["seconds_since_last_message"] is not None
            status_text = json.dumps(await d.call("status"), ensure_ascii=False)
        # the cookie is never logged nor shown
        assert SECRET not in status_text and SECRET not in d.log()
        assert all(SECRET not in r.path + json.dumps(r.query) for r in fake.requests)
        nav = [r for r in fake.requests if r.path == "/x/web-interface/nav"]
        assert nav and f"SESSDATA={SECRET}" in nav[0].headers["cookie"]  # but it is sent to Bilibili
    finally:
        await fake.stop()


@pytest.mark.anyio
async def test_web_route_anonymous_survives_bombs_and_junk(tmp_path):
    import brotli

    fake = FakeBilibili()
    await fake.start()
    try:
        src = web_source(fake, max_decompressed=64 * 1024)
        async with RunningDaemon(tmp_path, [src]) as d:
            await fake.wait_connected()
            assert fake.auths[-1]["uid"] == 0
            bomb = bf.packet(5, brotli.compress(b"\0" * (8 * 1024 * 1024), quality=5), 3)
            await fake.send_raw(bomb)
            await fake.send_raw(bf.packet(5, b"{not json", 0) + bf.packet(5, b'{"cmd":"ONLINE_RANK_COUNT"}', 0))
            await fake.send_raw(bf.packet(5, b'{"cmd":"DANMU_MSG","info":[[],1]}', 0))  # malformed fields
            await fake.send_raw(b"\x00\x00\x00\x30\x00\x10")  # truncated header
            await fake.push([bf.log_in_notice(), bf.danmu("还活着", 0, "提***")])
            r = await d.wait_spoken("还活着")
            assert r["user"] == "提***" and r["user_id"] == ""
            s = await d.source("bili")
            c = s["counters"]
            assert s["state"] == "connected" and c["frame_bomb"] == 1 and c["malformed"] == 2 and c["ignored"] == 1
            assert c["frame_truncated"] == 1 and c.get("reconnects", 0) == 0
            assert s["logged_in"] is False
            assert any("anonymous" in w and "sessdata_file" in w for w in s["warnings"])
    finally:
        await fake.stop()


@pytest.mark.anyio
async def test_open_platform_end_to_end(tmp_path, monkeypatch):
    fake = FakeBilibili(open_start_faults=[7007, 7010])
    await fake.start()
    monkeypatch.setenv("TEST_BILI_KEY_ID", fake.key_id)
    monkeypatch.setenv("TEST_BILI_KEY_SECRET", fake.key_secret)
    (tmp_path / "code.txt").write_text(fake.code)
    src = {
        "type": "bilibili", "name": "open", "app_id": fake.app_id, "access_key_id_env": "TEST_BILI_KEY_ID",
        "access_key_secret_env": "TEST_BILI_KEY_SECRET", "auth_code_file": "code.txt",
        "open_api_base": fake.base, "open_heartbeat_interval": 0.3, "heartbeat_interval": 0.3,
        "reconnect": {**FAST, "cap": 0.3},
    }  # fmt: skip
    try:
        async with RunningDaemon(tmp_path, [src]) as d:
            await fake.wait_connected()
            # the first starts were refused, and the status line said why
            assert "error 7007: the 身份码 (auth_code) is wrong" in d.log()
            assert "error 7010: too many connections to this room" in d.log()
            assert fake.signature_errors == []
            assert fake.auths[-1]["game_id"] == "game-1"
            await fake.push([bf.open_dm("开放平台你好", "oid-1", "真名", "msg-1"),
                             bf.open_gift("oid-2", "送礼人", "辣条", 3, 100, False)], ver=2)  # fmt: skip
            await fake.push([bf.open_superchat(88, "醒目留言内容", "oid-3", "金主", 30)], ver=2)
            r = await d.wait_spoken("开放平台你好")
            assert r["user"] == "真名" and r["user_id"] == "oid-1" and r["message_id"] == "msg-1"
            sc = await d.wait_spoken("醒目留言内容")
            assert sc["kind"] == "superchat" and sc["message_id"] == "88"
            await d.wait_spoken("辣条")
            await d.until("project heartbeats", lambda: fake.open_heartbeats >= 2)
            # the server forgets the game (a missed heartbeat): 7003, so a new game is started
            fake._games.clear()
            await d.until("a second game", lambda: len(fake.games_started) >= 2, timeout=15)
            await d.until("re-auth", lambda: fake.auths[-1].get("game_id") == "game-2")
            await fake.wait_connected()
            assert "7003" in d.log()
            await fake.push([bf.open_dm("又回来了", "oid-1", "真名", "msg-2")], ver=2)
            await d.wait_spoken("又回来了")
            s = await d.source("open")
            assert s["route"] == "open_platform" and s["state"] == "connected"
            status_text = json.dumps(await d.call("status"))
        assert "game-2" in fake.games_ended  # `end` called on shutdown
        assert fake.key_secret not in status_text and fake.key_secret not in d.log()
    finally:
        await fake.stop()


@pytest.mark.anyio
async def test_host_list_rotation_and_rediscovery(tmp_path):
    """Without ws_url the source walks getDanmuInfo's host list, one host per attempt, and asks
    for a fresh token and host list after `rediscover_after` failures in a row."""
    from ishowttsd.config import Config
    from ishowttsd.events import EventBus
    from ishowttsd.builtin_plugins.sources.bilibili.settings import BilibiliSettings
    from ishowttsd.builtin_plugins.sources.bilibili.source import BilibiliSource
    from ishowttsd.source import SourceContext

    dead = []
    for _ in range(3):  # ports with nothing listening: each attempt fails at once
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead.append(s.getsockname()[1])
        s.close()
    fake = FakeBilibili(hosts=[{"host": "127.0.0.1", "wss_port": p} for p in dead])
    await fake.start()
    events = EventBus()
    sub = events.subscribe()
    ctx = SourceContext(lambda s, m: None, lambda s, d: None, events, Config(), tmp_path)
    settings = BilibiliSettings(type="bilibili", room_id=fake.short_room, api_base=fake.base, live_api_base=fake.base,
                                rediscover_after=3, reconnect={"base": 0.01, "step": 0, "jitter": 0, "cap": 0.01})
    src = BilibiliSource(settings, ctx)
    seen: list[str] = []
    try:
        with sub, anyio.move_on_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(src.run)
                while len(seen) < 7:
                    ev = await sub.receive()
                    m = re.search(r"via 127\.0\.0\.1:(\d+)", ev.get("detail", ""))
                    if ev["event"] == "source.state" and m and ev["state"] in ("connecting", "down"):
                        seen.append(m.group(1))
                tg.cancel_scope.cancel()
        await src.close()
    finally:
        await fake.stop()
    p = [str(x) for x in dead]
    assert seen == [p[0], p[1], p[2], p[0], p[1], p[2], p[0]]
    infos = [r for r in fake.requests if r.path.endswith("getDanmuInfo")]
    assert len(infos) == 3  # a fresh token after each 3 failures in a row
    assert src.status()["state"] == "stopped" and "cannot connect" in src.last_error


def _check_config(path, env=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ishowttsd", "--config", str(path), "--check-config"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD="1", **(env or {})))  # fmt: skip


def test_example_config_validates_and_bad_tables_explain_themselves(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "config" / "example-sources.toml"
    r = _check_config(example)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sources]]\ntype = "bilibili"\n[[sources]]\ntype = "twitch"\nchannel = "no spaces allowed"\n')
    r = _check_config(bad)
    assert r.returncode == 78
    assert "sources[0]" in r.stderr and "set room_id (web route) or app_id" in r.stderr
    bad.write_text('[[sources]]\ntype = "bilibili"\napp_id = 1\naccess_key_id_env = "NOPE_UNSET_1"\n'
                   'access_key_secret_env = "NOPE_UNSET_2"\nauth_code = "x"\n')  # fmt: skip
    r = _check_config(bad)
    assert r.returncode == 78 and "environment variable NOPE_UNSET_1 is not set" in r.stderr
    bad.write_text('[[sources]]\ntype = "twitch"\nchannel = "a b"\n')
    r = _check_config(bad)
    assert r.returncode == 78 and "sources[0].channel" in r.stderr and "letters, digits or _" in r.stderr


@pytest.mark.anyio
async def test_open_platform_wrong_secret_is_explained(tmp_path, monkeypatch):
    from ishowttsd.config import Config
    from ishowttsd.events import EventBus
    from ishowttsd.builtin_plugins.sources.bilibili.settings import BilibiliSettings
    from ishowttsd.builtin_plugins.sources.bilibili.source import BilibiliSource
    from ishowttsd.source import SourceContext

    fake = FakeBilibili()
    await fake.start()
    monkeypatch.setenv("T_KID", fake.key_id)
    monkeypatch.setenv("T_SECRET", "not-the-secret")
    ctx = SourceContext(lambda s, m: None, lambda s, d: None, EventBus(), Config(), tmp_path)
    settings = BilibiliSettings(type="bilibili", app_id=fake.app_id, access_key_id_env="T_KID",
                                access_key_secret_env="T_SECRET", auth_code=fake.code, open_api_base=fake.base,
                                reconnect={"base": 0.01, "step": 0, "jitter": 0, "cap": 0.05})  # fmt: skip
    src = BilibiliSource(settings, ctx)
    try:
        with anyio.move_on_after(1):
            await src.run()
        await src.close()
    finally:
        await fake.stop()
    assert fake.signature_errors and set(fake.signature_errors) == {"bad signature"}
    assert "error 4002" in src.last_error and "access key secret" in src.last_error
    assert "not-the-secret" not in src.last_error and not fake.games_started
