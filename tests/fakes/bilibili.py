"""A fake Bilibili on loopback: the discovery HTTP API (with a real WBI signature check), the
Open Platform HTTP API (with a real HMAC-SHA256 signature check) and the danmaku websocket
(16-byte packets, brotli and zlib bodies, several packets per frame, heartbeat replies).

Written independently of the plugin (its own signing code) so a wrong signature in the plugin
fails the tests. Knobs script the failures a real client meets: -352 and HTTP 412 answers,
an auth failure, refused handshakes, dropped connections, LOG_IN_NOTICE.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Any

import brotli
from websockets.asyncio.server import ServerConnection, serve

MIXIN = [46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35, 27, 43, 5, 49, 33, 9, 42, 19, 29, 28, 14,
         39, 12, 38, 41, 13, 37, 48, 7, 16, 24, 55, 40, 61, 26, 17, 0, 1, 60, 51, 30, 4, 22, 25, 54, 21, 56, 59,
         6, 63, 57, 62, 11, 36, 20, 34, 44, 52]  # fmt: skip


def packet(op: int, body: bytes, ver: int = 0) -> bytes:
    return struct.pack(">IHHII", 16 + len(body), 16, ver, op, 1) + body


def command_packets(cmds: list[dict], ver: int = 3) -> bytes:
    """One op-5 packet whose body (brotli for ver 3, zlib for ver 2) holds one packet per command."""
    inner = b"".join(packet(5, json.dumps(c, ensure_ascii=False).encode(), 0) for c in cmds)
    if ver == 0:
        return inner
    body = brotli.compress(inner) if ver == 3 else zlib.compress(inner)
    return packet(5, body, ver)


def check_wbi(query: dict[str, str], img_key: str, sub_key: str) -> str | None:
    """Return None when the w_rid is right, else why not."""
    q = dict(query)
    w_rid = q.pop("w_rid", None)
    if not w_rid or "wts" not in q:
        return "unsigned"
    if abs(time.time() - int(q["wts"])) > 300:
        return "stale wts"
    raw = img_key + sub_key
    key = "".join(raw[i] for i in MIXIN)[:32]
    cleaned = {k: "".join(ch for ch in v if ch not in "!'()*") for k, v in q.items()}
    text = urllib.parse.urlencode(sorted(cleaned.items()), quote_via=urllib.parse.quote)
    want = hashlib.md5((text + key).encode()).hexdigest()
    return None if want == w_rid else "bad w_rid"


@dataclass
class Request:
    at: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeBilibili:
    short_room: int = 66
    real_room: int = 21000066
    img_key: str = "7cd084941338484aae1ad9425b84077c"
    sub_key: str = "4932caff0ff746eab6f01bf08b70ac45"
    sessdata: str | None = None  # the cookie value that counts as logged in
    login_uid: int = 4242
    token: str = "danmu-token-1"
    hosts: list[dict] | None = None  # getDanmuInfo host_list; default: this fake's websocket
    popularity: int = 777
    # Open Platform
    app_id: int = 1234
    key_id: str = "kid"
    key_secret: str = "ksecret-9d8e7f6a"
    code: str = "IDCODE"
    # scripted failures
    danmu_info_faults: list[str] = field(default_factory=list)  # "352" / "412", one per request
    auth_failures: int = 0  # websocket auths answered -101 before one succeeds
    refuse_handshakes: int = 0  # websocket handshakes refused with HTTP 503
    open_start_faults: list[int] = field(default_factory=list)  # Open Platform start codes, e.g. 7007
    # what happened
    requests: list[Request] = field(default_factory=list)
    ws_attempts: list[float] = field(default_factory=list)
    auths: list[dict] = field(default_factory=list)
    heartbeats: int = 0
    games_started: list[str] = field(default_factory=list)
    games_ended: list[str] = field(default_factory=list)
    open_heartbeats: int = 0
    signature_errors: list[str] = field(default_factory=list)
    wbi_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conns: set[ServerConnection] = set()
        self.connected = asyncio.Event()
        self._http_server: asyncio.Server | None = None
        self._ws_server = None
        self.http_port = 0
        self.ws_port = 0
        self._games: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._http_server = await asyncio.start_server(self._http, "127.0.0.1", self.http_port)
        self.http_port = self._http_server.sockets[0].getsockname()[1]
        await self.start_ws()

    async def start_ws(self) -> None:
        self._ws_server = await serve(self._ws, "127.0.0.1", self.ws_port, process_request=self._process,
                                      compression=None, ping_interval=None)  # fmt: skip
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]

    async def stop_ws(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        self.conns.clear()
        self.connected.clear()

    async def stop(self) -> None:
        await self.stop_ws()
        if self._http_server is not None:
            self._http_server.close()
            await self._http_server.wait_closed()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/sub"

    # -- pushing ---------------------------------------------------------------------------

    async def push(self, cmds: list[dict], ver: int = 3, split: int = 1) -> None:
        """Send commands to every authenticated client; `split` > 1 packs that many
        compressed packets into one frame."""
        if split > 1:
            parts = [cmds[i::split] for i in range(split)]
            frame = b"".join(command_packets(p, ver) for p in parts if p)
        else:
            frame = command_packets(cmds, ver)
        await self.send_raw(frame)

    async def send_raw(self, frame: bytes) -> None:
        for c in list(self.conns):
            try:
                await c.send(frame)
            except Exception:
                self.conns.discard(c)

    async def drop_all(self) -> None:
        for c in list(self.conns):
            c.transport.abort()  # like a network drop: no close frame
        self.conns.clear()
        self.connected.clear()

    async def wait_connected(self, timeout: float = 15.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    # -- websocket -------------------------------------------------------------------------

    def _process(self, connection: ServerConnection, request):
        self.ws_attempts.append(time.monotonic())
        if self.refuse_handshakes > 0:
            self.refuse_handshakes -= 1
            return connection.respond(503, "try later\n")
        return None

    async def _ws(self, ws: ServerConnection) -> None:
        try:
            first = await asyncio.wait_for(ws.recv(), 5)
        except Exception:
            return
        if not isinstance(first, bytes) or len(first) < 16:
            await ws.close(1002, "expected an auth packet")
            return
        total, hlen, ver, op, _ = struct.unpack_from(">IHHII", first)
        if op != 7 or total != len(first):
            await ws.close(1002, "expected an auth packet")
            return
        auth = json.loads(first[hlen:])
        if isinstance(auth, str):  # Open Platform: the auth_body string
            auth = json.loads(auth)
        self.auths.append(auth)
        ok = self._auth_ok(auth)
        if self.auth_failures > 0:
            self.auth_failures -= 1
            ok = False
        await ws.send(packet(8, json.dumps({"code": 0 if ok else -101}).encode(), 1))
        if not ok:
            await ws.close()
            return
        self.conns.add(ws)
        self.connected.set()
        try:
            async for msg in ws:
                if isinstance(msg, bytes) and len(msg) >= 16 and struct.unpack_from(">IHHII", msg)[3] == 2:
                    self.heartbeats += 1
                    await ws.send(packet(3, struct.pack(">I", self.popularity), 1))
        except Exception:
            pass
        finally:
            self.conns.discard(ws)
            if not self.conns:
                self.connected.clear()

    def _auth_ok(self, auth: dict) -> bool:
        if "game_id" in auth:  # Open Platform auth_body
            return auth.get("game_id") in self._games
        if auth.get("key") != self.token or auth.get("roomid") != self.real_room:
            return False
        if auth.get("protover") != 3 or not auth.get("buvid"):
            return False
        # a logged-in uid must match the cookie's account (the real server disconnects otherwise)
        return auth.get("uid") in (0, self.login_uid)

    # -- HTTP ------------------------------------------------------------------------------

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            url = urllib.parse.urlsplit(target)
            query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            req = Request(time.monotonic(), method, url.path, query, headers, body)
            self.requests.append(req)
            status, payload = self._route(req)
            data = json.dumps(payload, ensure_ascii=False).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n".encode() + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def _cookies(self, req: Request) -> dict[str, str]:
        out = {}
        for part in req.headers.get("cookie", "").split(";"):
            if "=" in part:
                k, v = part.strip().split("=", 1)
                out[k] = v
        return out

    def _route(self, req: Request) -> tuple[int, Any]:
        p = req.path
        if p == "/x/web-interface/nav":
            wbi = {"img_url": f"http://127.0.0.1/bfs/wbi/{self.img_key}.png",
                   "sub_url": f"http://127.0.0.1/bfs/wbi/{self.sub_key}.png"}  # fmt: skip
            if self.sessdata and self._cookies(req).get("SESSDATA") == self.sessdata:
                return 200, {"code": 0, "data": {"isLogin": True, "mid": self.login_uid, "wbi_img": wbi}}
            return 200, {"code": -101, "message": "账号未登录", "data": {"isLogin": False, "wbi_img": wbi}}
        if p == "/x/frontend/finger/spi":
            return 200, {"code": 0, "data": {"b_3": "FAKE-BUVID3-infoc", "b_4": "b4"}}
        if p == "/room/v1/Room/get_info":
            if int(req.query.get("room_id", 0)) in (self.short_room, self.real_room):
                return 200, {"code": 0, "data": {"room_id": self.real_room, "short_id": self.short_room, "uid": 9}}
            return 200, {"code": 1, "msg": "未找到该房间", "message": "未找到该房间"}
        if p == "/xlive/web-room/v1/index/getDanmuInfo":
            if self.danmu_info_faults:
                fault = self.danmu_info_faults.pop(0)
                if fault == "412":
                    return 412, {"code": -412, "message": "请求被拦截"}
                return 200, {"code": -352, "message": "-352"}
            why = check_wbi(req.query, self.img_key, self.sub_key)
            if why:
                self.wbi_errors.append(why)
                return 200, {"code": -352, "message": why}
            if int(req.query.get("id", 0)) != self.real_room:
                return 200, {"code": 1, "message": "wrong room"}
            hosts = self.hosts or [{"host": "127.0.0.1", "port": self.ws_port, "wss_port": self.ws_port,
                                    "ws_port": self.ws_port}]  # fmt: skip
            return 200, {"code": 0, "data": {"token": self.token, "host_list": hosts}}
        if p.startswith("/v2/app/"):
            return self._open(req)
        return 404, {"code": 404}

    def _open(self, req: Request) -> tuple[int, Any]:
        h = req.headers
        why, code = None, 0
        names = ["x-bili-accesskeyid", "x-bili-content-md5", "x-bili-signature-method",
                 "x-bili-signature-nonce", "x-bili-signature-version", "x-bili-timestamp"]  # fmt: skip
        if any(n not in h for n in names):
            why, code = "missing signature headers", 4000
        elif h["x-bili-accesskeyid"] != self.key_id:
            why, code = "unknown access key", 4001
        elif abs(time.time() - int(h["x-bili-timestamp"])) > 300:
            why, code = "stale timestamp", 4003
        elif h["x-bili-content-md5"] != hashlib.md5(req.body).hexdigest():
            why, code = "content md5 mismatch", 4012
        elif h.get("content-type") != "application/json" or h.get("accept") != "application/json":
            why, code = "content-type/accept must be application/json", 4011
        else:
            text = "\n".join(f"{n}:{h[n]}" for n in names)
            want = hmac.new(self.key_secret.encode(), text.encode(), hashlib.sha256).hexdigest()
            if h.get("authorization") != want:
                why, code = "bad signature", 4002
        if why:
            self.signature_errors.append(why)
            return 200, {"code": code, "message": why}
        body = json.loads(req.body or b"{}")
        if req.path == "/v2/app/start":
            if self.open_start_faults:
                return 200, {"code": self.open_start_faults.pop(0), "message": "scripted"}
            if body.get("code") != self.code or body.get("app_id") != self.app_id:
                return 200, {"code": 7007, "message": "身份码错误"}
            gid = f"game-{len(self.games_started) + 1}"
            self._games.add(gid)
            self.games_started.append(gid)
            auth_body = json.dumps({"roomid": self.real_room, "protoover": 2, "uid": 0, "key": "open-key",
                                    "group": "open", "game_id": gid})  # fmt: skip
            return 200, {"code": 0, "message": "0", "data": {
                "game_info": {"game_id": gid},
                "websocket_info": {"auth_body": auth_body, "wss_link": [self.ws_url]},
                "anchor_info": {"room_id": self.real_room, "uname": "主播", "open_id": "anchor-open-id", "uid": 0},
            }}  # fmt: skip
        if req.path == "/v2/app/heartbeat":
            if body.get("game_id") not in self._games:
                return 200, {"code": 7003, "message": "心跳过期或GameId错误"}
            self.open_heartbeats += 1
            return 200, {"code": 0, "message": "0", "data": {}}
        if req.path == "/v2/app/end":
            gid = body.get("game_id")
            self._games.discard(gid)
            self.games_ended.append(gid)
            return 200, {"code": 0, "message": "0", "data": {}}
        return 404, {"code": 404}


# -- commands as the real server sends them ---------------------------------------------------


def danmu(text: str, uid: int, name: str, *, dm_type: int = 0, id_str: str = "", level: int = 12,
          medal: list | None = None, guard: int = 0, admin: int = 0) -> dict:
    meta: list[Any] = [0, 1, 25, 16777215, int(time.time() * 1000), 0, 0, "hash", 0, 0, 0, "", dm_type,
                       {"emoticon_unique": "official_1"} if dm_type == 1 else "{}", "{}",
                       {"extra": json.dumps({"id_str": id_str}), "user": {"base": {"name": name}}}]  # fmt: skip
    return {"cmd": "DANMU_MSG:4:0:2:2:2:0", "info": [meta, text, [uid, name, admin, 0, 0, 10000, 1, ""],
            medal or [], [level, 0, 9868950, ">50000", 0], ["", ""], 0, guard, None, {"ts": 1, "ct": "C"}, 0, 0,
            None, None, 0, 105, [0]]}  # fmt: skip


def gift(uname: str, uid: int, name: str, num: int, price: int, coin_type: str = "gold") -> dict:
    return {"cmd": "SEND_GIFT", "data": {"giftName": name, "num": num, "uname": uname, "uid": uid, "price": price,
            "coin_type": coin_type, "total_coin": price * num, "batch_combo_id": "combo-1", "tid": f"tid-{uid}-{num}"}}


def superchat(sc_id: int, uname: str, uid: int, text: str, price: int) -> dict:
    return {"cmd": "SUPER_CHAT_MESSAGE", "data": {"id": sc_id, "uid": uid, "price": price, "message": text,
            "user_info": {"uname": uname, "guard_level": 0}, "medal_info": {"medal_name": "牌子", "medal_level": 3}}}


def superchat_delete(*ids: int) -> dict:
    return {"cmd": "SUPER_CHAT_MESSAGE_DELETE", "data": {"ids": list(ids)}}


def guard_buy(uname: str, uid: int, level: int = 3) -> dict:
    return {"cmd": "GUARD_BUY", "data": {"uid": uid, "username": uname, "guard_level": level, "num": 1,
            "price": 198000, "gift_name": "舰长", "start_time": 1700000000}}


def user_toast(uname: str, uid: int, level: int = 3) -> dict:
    return {"cmd": "USER_TOAST_MSG_V2", "data": {"sender_uinfo": {"uid": uid, "base": {"name": uname}},
            "guard_info": {"guard_level": level, "role_name": "舰长", "start_time": 1700000000},
            "pay_info": {"num": 1, "price": 198000, "unit": "月"}}}


def log_in_notice() -> dict:
    return {"cmd": "LOG_IN_NOTICE", "data": {"notice_msg": "为保护用户隐私，未登录无法查看他人昵称"}}


def open_dm(text: str, open_id: str, uname: str, msg_id: str) -> dict:
    return {"cmd": "LIVE_OPEN_PLATFORM_DM", "data": {"uname": uname, "open_id": open_id, "uid": 0, "msg": text,
            "msg_id": msg_id, "dm_type": 0, "guard_level": 0, "fans_medal_level": 5, "fans_medal_name": "牌",
            "is_admin": 0, "room_id": 21000066}}


def open_superchat(message_id: int, text: str, open_id: str, uname: str, rmb: int) -> dict:
    return {"cmd": "LIVE_OPEN_PLATFORM_SUPER_CHAT", "data": {"room_id": 21000066, "uid": 0, "open_id": open_id,
            "uname": uname, "message_id": message_id, "message": text, "rmb": rmb, "msg_id": f"m{message_id}"}}


def open_gift(open_id: str, uname: str, gift_name: str, num: int, price: int, paid: bool) -> dict:
    return {"cmd": "LIVE_OPEN_PLATFORM_SEND_GIFT", "data": {"open_id": open_id, "uid": 0, "uname": uname,
            "gift_name": gift_name, "gift_num": num, "price": price, "paid": paid, "msg_id": f"g-{open_id}",
            "combo_info": {"combo_id": "c1"}}}


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_encode(fields: list[tuple[int, int | str | bytes]]) -> bytes:
    """A protobuf message from (field number, value) pairs: ints as varints, str/bytes length-delimited."""
    out = b""
    for no, v in fields:
        if isinstance(v, int):
            out += _pb_varint(no << 3) + _pb_varint(v)
        else:
            raw = v.encode() if isinstance(v, str) else v
            out += _pb_varint(no << 3 | 2) + _pb_varint(len(raw)) + raw
    return out


def gift_v2(uname: str, uid: int, name: str, num: int, price: int, coin_type: str = "gold", tid: str = "t-v2") -> dict:
    item = pb_encode([(1, 31036), (2, name), (3, num), (5, price), (7, price * num), (8, coin_type), (9, tid),
                      (10, 1700000000)])  # fmt: skip
    top = pb_encode([(1, uid), (2, uname), (3, "https://face"), (5, 3), (10, item), (11, 1)])
    return {"cmd": "SEND_GIFT_V2", "data": {"pb": base64.b64encode(top).decode()}}


# -- the room's interactions (greetings) -------------------------------------------------------------


def interact_word(uname: str, uid: int, msg_type: int = 1, ts: int = 1700000000) -> dict:
    """INTERACT_WORD as JSON: msg_type 1 entered, 2 followed, 3 shared, 4 special follow, 5 mutual follow."""
    return {"cmd": "INTERACT_WORD", "data": {"contribution": {"grade": 0}, "dmscore": 12, "fans_medal": {
        "anchor_roomid": 0, "guard_level": 0, "medal_level": 5, "medal_name": "猫猫", "target_id": 0},
        "identities": [1], "is_spread": 0, "msg_type": msg_type, "roomid": 21000066, "score": 1700000000000,
        "spread_desc": "", "timestamp": ts, "trigger_time": ts * 10**9, "uid": uid, "uname": uname,
        "uname_color": ""}}  # fmt: skip


def interact_word_v2(uname: str, uid: int, msg_type: int = 1, ts: int = 1700000000) -> dict:
    """INTERACT_WORD_V2: the same in protobuf (data.pb, base64), laid out as the web client receives it:
    uid 1, uname 2, identities 4 (packed), msg_type 5, roomid 6, timestamp 7, score 8, fans_medal 9."""
    medal = pb_encode([(1, 1000), (2, 5), (3, "猫猫"), (4, 6126494)])
    top = pb_encode([(1, uid), (2, uname), (4, b"\x03\x01"), (5, msg_type), (6, 21000066), (7, ts),
                     (8, ts * 1000 + 1), (9, medal), (15, ts * 10**9)])  # fmt: skip
    return {"cmd": "INTERACT_WORD_V2", "data": {"dmscore": 10, "pb": base64.b64encode(top).decode()}}


def like_click(uname: str, uid: int) -> dict:
    return {"cmd": "LIKE_INFO_V3_CLICK", "data": {"show_area": 0, "msg_type": 6, "like_icon": "https://icon",
            "uid": uid, "like_text": "为主播点赞了", "uname": uname, "uname_color": "", "identities": [1],
            "fans_medal": {"medal_level": 0, "medal_name": ""}, "contribution_info": {"grade": 0}, "dmscore": 20}}  # fmt: skip


def like_update(total: int) -> dict:
    return {"cmd": "LIKE_INFO_V3_UPDATE", "data": {"click_count": total}}
