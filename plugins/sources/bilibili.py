"""Bilibili live chat: the web danmaku route and the Open Platform (开放平台) route.

One source type, ``bilibili``; the route follows from the config:

* **web** (default): ``room_id`` (short ids are resolved), optional login through the
  ``SESSDATA`` cookie read from ``sessdata_file`` or ``sessdata_env`` (never logged, never shown
  in ``status``). Discovery: ``nav`` (uid and WBI keys), ``finger/spi`` (buvid), ``get_info``
  (the real room id), WBI-signed ``getDanmuInfo`` (token and host list). Then the websocket:
  auth packet (op 7), heartbeats every ``heartbeat_interval`` seconds, op 5 messages.
* **open platform**: set ``app_id``, the access key id and secret (files or env vars) and the
  streamer's 身份码 (``auth_code``/``auth_code_file``/``auth_code_env``). Signed ``/v2/app/start``
  gives the websocket links and ``auth_body``; ``/v2/app/heartbeat`` runs every
  ``open_heartbeat_interval`` seconds; ``/v2/app/end`` is called on shutdown.

Both routes share the packet framing (16-byte header, zlib/brotli bodies that hold further
packets) and normalise chat into :class:`ishowttsd.messages.Message`: DANMU_MSG, SEND_GIFT and
SEND_GIFT_V2 (protobuf), SUPER_CHAT_MESSAGE, GUARD_BUY / USER_TOAST_MSG_V2 (one purchase, spoken
once), the LIVE_OPEN_PLATFORM_* equivalents; SUPER_CHAT_MESSAGE_DELETE becomes a Deletion;
LOG_IN_NOTICE becomes a warning in ``status``. Other commands are counted as ``ignored``. Every endpoint is
overridable (``api_base``, ``live_api_base``, ``ws_url``, ``open_api_base``) for tests and
mirrors. Reconnects use :class:`ishowttsd.backoff.Backoff`; risk-control answers (-352, HTTP 412)
wait at least ``risk_control_delay`` seconds, because fast retries make them last longer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import json
import secrets
import struct
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import anyio
import brotli
import httpx
from pydantic import Field, model_validator
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ishowttsd.backoff import BackoffSettings
from ishowttsd.config import read_secret
from ishowttsd.hookspecs import hookimpl
from ishowttsd.messages import Deletion, Kind, Message, User
from ishowttsd.source import Source, SourceSettings

PLATFORM = "bilibili"
# websockets logs every frame at DEBUG, tokens included: its logger for us never goes below INFO
_WIRE_LOG = logging.getLogger("ishowttsd.wire.bilibili")
_WIRE_LOG.setLevel(logging.INFO)
# httpx logs every request at INFO; a heartbeat every 20 s would flood the daemon's one-line-per-event log
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)
DEFAULT_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
FALLBACK_WS = "wss://broadcastlv.chat.bilibili.com:443/sub"

# ---------------------------------------------------------------------------------------------
# Packet framing (pure functions: no I/O, fuzzed by the tests)
# ---------------------------------------------------------------------------------------------

HEADER = struct.Struct(">IHHII")  # total length, header length, protover, operation, sequence
OP_HEARTBEAT, OP_HEARTBEAT_REPLY, OP_MESSAGE, OP_AUTH, OP_AUTH_REPLY = 2, 3, 5, 7, 8
VER_JSON, VER_PLAIN, VER_ZLIB, VER_BROTLI = 0, 1, 2, 3
DEFAULT_MAX_DECOMPRESSED = 4 * 1024 * 1024


@dataclass
class Packet:
    op: int
    ver: int
    body: bytes


@dataclass
class FrameResult:
    """What one websocket frame held: its packets, and the problems met while walking it."""

    packets: list[Packet] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "truncated", "bomb", "bad_zlib", ...


def make_packet(op: int, body: bytes | str | dict = b"", ver: int = VER_PLAIN, seq: int = 1) -> bytes:
    """One packet as the client sends it (protover 1 for heartbeat and auth)."""
    if isinstance(body, dict):
        body = json.dumps(body, separators=(",", ":"))
    if isinstance(body, str):
        body = body.encode()
    return HEADER.pack(HEADER.size + len(body), HEADER.size, ver, op, seq) + body


def parse_frame(data: bytes, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> FrameResult:
    """Walk the packets of one websocket frame, opening zlib/brotli bodies one level deep.

    Packets are walked by their length field; a compressed body holds further complete
    packets. At most `max_decompressed` bytes are inflated per frame, so a decompression
    bomb costs a bounded amount of memory and is reported as the problem ``"bomb"``.
    Never raises on bad input.
    """
    result = FrameResult()
    budget = [max(0, int(max_decompressed))]
    _walk(memoryview(data), 0, result, budget)
    return result


def _walk(data: memoryview, depth: int, result: FrameResult, budget: list[int]) -> None:
    offset, n = 0, len(data)
    while offset < n:
        if n - offset < HEADER.size:
            result.problems.append("truncated")
            return
        total, hlen, ver, op, _seq = HEADER.unpack_from(data, offset)
        if hlen < HEADER.size or total < hlen or offset + total > n:
            result.problems.append("truncated" if offset + total > n and total >= hlen >= HEADER.size else "bad_header")
            return
        body = data[offset + hlen : offset + total]
        offset += total
        if op == OP_MESSAGE and ver in (VER_ZLIB, VER_BROTLI):
            if depth >= 1:  # the server never nests compression twice; refuse rather than recurse
                result.problems.append("nested_compression")
                continue
            inner = _inflate(bytes(body), ver, budget, result)
            if inner is not None:
                _walk(memoryview(inner), depth + 1, result, budget)
            continue
        result.packets.append(Packet(op, ver, bytes(body)))


def _inflate(body: bytes, ver: int, budget: list[int], result: FrameResult) -> bytes | None:
    limit = budget[0]
    if ver == VER_ZLIB:
        d = zlib.decompressobj()
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error:
            result.problems.append("bad_zlib")
            return None
        if len(out) > limit or d.unconsumed_tail:
            result.problems.append("bomb")
            return None
    else:
        b = brotli.Decompressor()
        try:
            out = b.process(body, output_buffer_limit=limit + 1)
        except brotli.error:
            result.problems.append("bad_brotli")
            return None
        if len(out) > limit or not b.can_accept_more_data():
            result.problems.append("bomb")
            return None
        if not b.is_finished():
            result.problems.append("bad_brotli")
            return None
    budget[0] -= len(out)
    return out


def command_name(obj: dict[str, Any]) -> str:
    """``DANMU_MSG:4:0:2:2:2:0`` -> ``DANMU_MSG``."""
    cmd = obj.get("cmd")
    return cmd.split(":", 1)[0] if isinstance(cmd, str) else ""


def pb_fields(data: bytes, max_fields: int = 4096) -> dict[int, list[int | bytes]]:
    """Decode one protobuf message into {field number: [values]} (varints as int, length-delimited
    as bytes; fixed32/64 as int). No schema needed; raises ValueError on malformed input."""
    out: dict[int, list[int | bytes]] = {}
    i, n, count = 0, len(data), 0
    while i < n:
        key, i = _varint(data, i)
        field_no, wire = key >> 3, key & 7
        if field_no == 0:
            raise ValueError("protobuf field 0")
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > n:
                raise ValueError("protobuf length past the end")
            value, i = bytes(data[i : i + size]), i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if i + width > n:
                raise ValueError("protobuf fixed field past the end")
            value, i = int.from_bytes(data[i : i + width], "little"), i + width
        else:
            raise ValueError(f"protobuf wire type {wire} not supported")
        out.setdefault(field_no, []).append(value)
        count += 1
        if count > max_fields:
            raise ValueError("too many protobuf fields")
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("bad protobuf varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _pb_one(fields: dict[int, list[int | bytes]], no: int, kind: type, default: Any) -> Any:
    vals = [v for v in fields.get(no, ()) if isinstance(v, kind)]
    return vals[-1] if vals else default


def _pb_text(fields: dict[int, list[int | bytes]], no: int) -> str:
    return _pb_one(fields, no, bytes, b"").decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# WBI signing and Open Platform request signing
# ---------------------------------------------------------------------------------------------

MIXIN_KEY_ENC_TAB = (
    46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35, 27, 43, 5, 49,
    33, 9, 42, 19, 29, 28, 14, 39, 12, 38, 41, 13, 37, 48, 7, 16, 24, 55, 40,
    61, 26, 17, 0, 1, 60, 51, 30, 4, 22, 25, 54, 21, 56, 59, 6, 63, 57, 62, 11,
    36, 20, 34, 44, 52,
)  # fmt: skip
_WBI_STRIP = str.maketrans("", "", "!'()*")


def wbi_key_from_url(url: str) -> str:
    """The file stem of a ``wbi_img`` URL: ``.../7cd0...77c.png`` -> ``7cd0...77c``."""
    return url.rsplit("/", 1)[-1].split(".", 1)[0]


def mixin_key(img_key: str, sub_key: str) -> str:
    raw = img_key + sub_key
    return "".join(raw[i] for i in MIXIN_KEY_ENC_TAB if i < len(raw))[:32]


def wbi_query(params: dict[str, Any], img_key: str, sub_key: str, wts: int | None = None) -> str:
    """The signed query string: params plus ``wts``, sorted, cleaned, with ``w_rid`` appended."""
    p = {k: str(v).translate(_WBI_STRIP) for k, v in params.items()}
    p["wts"] = str(int(time.time()) if wts is None else wts)
    query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(p.items()))
    w_rid = hashlib.md5((query + mixin_key(img_key, sub_key)).encode()).hexdigest()
    return f"{query}&w_rid={w_rid}"


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="-_.~")  # encodeURIComponent, as the site's own JS does


OPEN_SIGNED_HEADERS = (
    "x-bili-accesskeyid",
    "x-bili-content-md5",
    "x-bili-signature-method",
    "x-bili-signature-nonce",
    "x-bili-signature-version",
    "x-bili-timestamp",
)


def open_signed_headers(body: bytes, key_id: str, secret: str, nonce: str | None = None, ts: int | None = None) -> dict[str, str]:
    """Headers of a signed Open Platform request (HMAC-SHA256 over the x-bili-* headers)."""
    h = {
        "x-bili-accesskeyid": key_id,
        "x-bili-content-md5": hashlib.md5(body).hexdigest(),
        "x-bili-signature-method": "HMAC-SHA256",
        "x-bili-signature-nonce": nonce or secrets.token_hex(16),
        "x-bili-signature-version": "1.0",
        "x-bili-timestamp": str(int(time.time()) if ts is None else ts),
    }
    h["Authorization"] = open_signature(h, secret)
    h["Content-Type"] = "application/json"
    h["Accept"] = "application/json"
    return h


def open_signature(headers: dict[str, str], secret: str) -> str:
    text = "\n".join(f"{k}:{headers[k]}" for k in OPEN_SIGNED_HEADERS)
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# Commands -> Messages (pure)
# ---------------------------------------------------------------------------------------------

GUARD_NAMES = {1: "总督", 2: "提督", 3: "舰长"}


def membership(guard_level: int) -> str:
    """A guard level as the membership name moderation and templates read (3 -> 舰长)."""
    return GUARD_NAMES.get(guard_level, "")


def emot_spans(text: str, emots: Any) -> list[tuple[int, int]]:
    """Where the inline emoticon tokens (``[dog]``, keys of the danmaku's ``emots``) stand in
    the text, as `Message.emotes` spans (end exclusive)."""
    if not isinstance(emots, dict) or not text:
        return []
    spans = []
    for token in emots:
        if not isinstance(token, str) or not token:
            continue
        start = text.find(token)
        while start >= 0:
            spans.append((start, start + len(token)))
            start = text.find(token, start + len(token))
    spans.sort()
    out: list[tuple[int, int]] = []
    for a, b in spans:  # overlapping tokens ("[a]" inside "[a]]"): keep the first
        if not out or a >= out[-1][1]:
            out.append((a, b))
    return out


@dataclass
class LoginNotice:
    """The server masks names from now on (anonymous or rejected cookie)."""

    text: str


@dataclass
class GameEnded:
    """Open Platform: the interactive session ended server-side; start a new one."""

    game_id: str


Event = Message | Deletion | LoginNotice | GameEnded


class Ignored(Exception):
    """A well-formed command we do not speak (online counts, enter effects, ...)."""


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None else str(v))


def _uid(v: Any) -> str:
    n = _int(v)
    return str(n) if n > 0 else ""  # uid 0 is "masked / unknown", not a user


def parse_command(obj: Any, room: str = "") -> Event:
    """Normalise one JSON command of either route. Raises Ignored, or KeyError/TypeError/...

    for malformed data (the caller counts both and goes on).
    """
    if not isinstance(obj, dict):
        raise TypeError("a command must be a JSON object")
    cmd = command_name(obj)
    handler = _COMMANDS.get(cmd)
    if handler is None:
        raise Ignored(cmd or "(no cmd)")
    data = obj.get("data")
    return handler(obj, data, room)


def _danmu(obj: dict, _data: Any, room: str) -> Message:
    info = obj["info"]
    meta, text, who = info[0], info[1], info[2]
    if not isinstance(text, str):
        raise TypeError("DANMU_MSG info[1] is not text")
    name = _str(who[1])
    extra_meta = meta[15] if len(meta) > 15 and isinstance(meta[15], dict) else {}
    if not name:  # newer layouts move the name into info[0][15].user.base.name
        name = _str(((extra_meta.get("user") or {}).get("base") or {}).get("name"))
    medal = info[3] if len(info) > 3 and isinstance(info[3], list) else []
    level_info = info[4] if len(info) > 4 and isinstance(info[4], list) else []
    guard = _int(info[7]) if len(info) > 7 else 0
    dm_type = _int(meta[12]) if len(meta) > 12 else 0
    ts = _int(meta[4]) if len(meta) > 4 else 0
    msg_id = ""
    emots: Any = None
    raw_extra = extra_meta.get("extra")
    if isinstance(raw_extra, str):
        try:
            parsed = json.loads(raw_extra)
            msg_id = _str(parsed.get("id_str"))
            emots = parsed.get("emots")
        except (ValueError, AttributeError):
            msg_id = ""
    uid = _uid(who[0])
    extra: dict[str, Any] = {"dm_type": dm_type}
    if dm_type == 1:
        emo = meta[13] if len(meta) > 13 and isinstance(meta[13], dict) else {}
        extra["emoticon"] = _str(emo.get("emoticon_unique") or text)
    if len(info) > 16 and isinstance(info[16], list) and info[16]:
        extra["wealth_level"] = _int(info[16][0])
    user = User(
        id=uid,
        name=name,
        level=_int(level_info[0]) if level_info else 0,
        medal_level=_int(medal[0]) if medal else 0,
        medal_name=_str(medal[1]) if len(medal) > 1 else "",
        membership=membership(guard),
        moderator=_int(who[2]) == 1 if len(who) > 2 else False,
    )
    return Message(
        platform=PLATFORM, kind=Kind.DANMAKU, text=text, user=user, room=room,
        id=msg_id or f"dm-{uid or name}-{ts}", picture_only=dm_type == 1,
        emotes=[] if dm_type == 1 else emot_spans(text, emots), extra=extra,
    )  # fmt: skip


def _gift(_obj: dict, d: dict, room: str) -> Message:
    num = _int(d.get("num"), 1)
    paid = d.get("coin_type") == "gold"
    total = _int(d.get("total_coin")) or _int(d.get("price")) * num
    medal = d.get("medal_info") if isinstance(d.get("medal_info"), dict) else {}
    combo = _str(d.get("batch_combo_id") or d.get("combo_id"))
    return Message(
        platform=PLATFORM,
        kind=Kind.GIFT,
        user=User(
            id=_uid(d.get("uid")), name=_str(d["uname"]), membership=membership(_int(d.get("guard_level"))),
            medal_name=_str(medal.get("medal_name")), medal_level=_int(medal.get("medal_level")),
        ),  # fmt: skip
        amount=round(total / 1000, 3) if paid and total else None,  # 1000 gold = 1 CNY
        currency="CNY" if paid and total else None,
        id=_str(d.get("tid") or d.get("rnd")),
        room=room,
        extra={"gift": _str(d["giftName"]), "num": num, "combo_id": combo, "coin_type": _str(d.get("coin_type")),
               "paid": paid},
    )  # fmt: skip


def _gift_v2(_obj: dict, d: dict, room: str) -> Message:
    # data.pb (base64) is a SendGiftBroadcastProtobuf: uid 1, uname 2, guard_level 5, gift_list 10
    # (each: gift_id 1, gift_name 2, num 3, price 5, total_coin 7, coin_type 8, tid 9). Field
    # numbers come from public reverse-engineering of the web client: checked against no server.
    top = pb_fields(base64.b64decode(d["pb"], validate=True))
    items = [pb_fields(b) for b in top.get(10, ()) if isinstance(b, bytes)]
    if not items:
        raise KeyError("SEND_GIFT_V2 without gift_list")
    item = items[0]
    num = _pb_one(item, 3, int, 1) or 1
    coin_type = _pb_text(item, 8)
    paid = coin_type == "gold"
    total = _pb_one(item, 7, int, 0) or _pb_one(item, 5, int, 0) * num
    return Message(
        platform=PLATFORM, kind=Kind.GIFT,
        user=User(id=_uid(_pb_one(top, 1, int, 0)), name=_pb_text(top, 2), membership=membership(_pb_one(top, 5, int, 0))),
        amount=round(total / 1000, 3) if paid and total else None,
        currency="CNY" if paid and total else None,
        id=_pb_text(item, 9), room=room,
        extra={"gift": _pb_text(item, 2), "num": num, "coin_type": coin_type, "paid": paid, "combo_id": ""},
    )  # fmt: skip


def _superchat(_obj: dict, d: dict, room: str) -> Message:
    ui = d.get("user_info") if isinstance(d.get("user_info"), dict) else {}
    medal = d.get("medal_info") if isinstance(d.get("medal_info"), dict) else {}
    guard = _int(ui.get("guard_level"))
    return Message(
        platform=PLATFORM,
        kind=Kind.SUPERCHAT,
        text=_str(d["message"]),
        user=User(
            id=_uid(d.get("uid")), name=_str(ui.get("uname")), membership=membership(guard),
            medal_name=_str(medal.get("medal_name")), medal_level=_int(medal.get("medal_level")),
        ),  # fmt: skip
        amount=float(d["price"]),
        currency="CNY",
        id=_str(d["id"]),
        room=room,
    )


def _superchat_delete(_obj: dict, d: dict, _room: str) -> Deletion:
    ids = d["ids"]
    if not isinstance(ids, list):
        raise TypeError("SUPER_CHAT_MESSAGE_DELETE data.ids is not a list")
    return Deletion(platform=PLATFORM, message_ids=[_str(i) for i in ids], reason="superchat_deleted")


def _guard_buy(_obj: dict, d: dict, room: str) -> Message:
    level = _int(d["guard_level"])
    num = _int(d.get("num"), 1)
    price = _int(d.get("price"))
    return Message(
        platform=PLATFORM,
        kind=Kind.GUARD,
        user=User(id=_uid(d.get("uid")), name=_str(d["username"]), membership=membership(level)),
        amount=round(price * num / 1000, 3) if price else None,
        currency="CNY" if price else None,
        id=f"guard-{_uid(d.get('uid'))}-{_int(d.get('start_time'))}",
        room=room,
        extra={"guard_level": level, "num": num, "months": num, "gift": _str(d.get("gift_name"))},
    )  # fmt: skip


def _user_toast(_obj: dict, d: dict, room: str) -> Message:
    su = d["sender_uinfo"]
    gi = d.get("guard_info") or {}
    pi = d.get("pay_info") or {}
    level = _int(gi.get("guard_level"))
    num = _int(pi.get("num"), 1)
    price = _int(pi.get("price"))
    uid = _uid(su.get("uid"))
    return Message(
        platform=PLATFORM,
        kind=Kind.GUARD,
        user=User(id=uid, name=_str((su.get("base") or {}).get("name")),
                  membership=_str(gi.get("role_name")) or membership(level)),
        amount=round(price * num / 1000, 3) if price else None,
        currency="CNY" if price else None,
        id=f"guard-{uid}-{_int(gi.get('start_time'))}",
        room=room,
        extra={"guard_level": level, "num": num, "months": num, "unit": _str(pi.get("unit"))},
    )  # fmt: skip


def _login_notice(_obj: dict, d: dict, _room: str) -> LoginNotice:
    return LoginNotice(_str(d.get("notice_msg")) if isinstance(d, dict) else "")


# -- Open Platform commands (names are not masked; uid is 0, open_id identifies the user) --------


def _open_user(d: dict) -> User:
    return User(
        id=_str(d.get("open_id")) or _uid(d.get("uid")),
        name=_str(d.get("uname")),
        membership=membership(_int(d.get("guard_level"))),
        medal_name=_str(d.get("fans_medal_name")),
        medal_level=_int(d.get("fans_medal_level")),
        moderator=bool(d.get("is_admin")),
    )


def _open_dm(_obj: dict, d: dict, room: str) -> Message:
    dm_type = _int(d.get("dm_type"))
    extra: dict[str, Any] = {"dm_type": dm_type}
    if dm_type == 1:
        extra["emoticon"] = _str(d.get("emoji_img_url"))
    return Message(
        platform=PLATFORM, kind=Kind.DANMAKU, text=_str(d["msg"]), user=_open_user(d),
        id=_str(d.get("msg_id")), room=room or _str(d.get("room_id")), picture_only=dm_type == 1, extra=extra,
    )  # fmt: skip


def _open_gift(_obj: dict, d: dict, room: str) -> Message:
    num = _int(d.get("gift_num"), 1)
    paid = bool(d.get("paid"))
    price = _int(d.get("price"))  # per gift, 1000 = 1 CNY
    combo = d.get("combo_info") if isinstance(d.get("combo_info"), dict) else {}
    return Message(
        platform=PLATFORM, kind=Kind.GIFT, user=_open_user(d),
        amount=round(price * num / 1000, 3) if paid and price else None,
        currency="CNY" if paid and price else None,
        id=_str(d.get("msg_id")), room=room or _str(d.get("room_id")),
        extra={"gift": _str(d["gift_name"]), "num": num, "combo_id": _str(combo.get("combo_id")), "paid": paid},
    )  # fmt: skip


def _open_guard(_obj: dict, d: dict, room: str) -> Message:
    u = d["user_info"]
    level = _int(d.get("guard_level"))
    num = _int(d.get("guard_num"), 1)
    price = _int(d.get("price"))
    return Message(
        platform=PLATFORM, kind=Kind.GUARD,
        user=User(id=_str(u.get("open_id")) or _uid(u.get("uid")), name=_str(u.get("uname")), membership=membership(level)),
        amount=round(price * num / 1000, 3) if price else None,
        currency="CNY" if price else None,
        id=_str(d.get("msg_id")), room=room or _str(d.get("room_id")),
        extra={"guard_level": level, "num": num, "months": num, "unit": _str(d.get("guard_unit"))},
    )  # fmt: skip


def _open_superchat(_obj: dict, d: dict, room: str) -> Message:
    return Message(
        platform=PLATFORM, kind=Kind.SUPERCHAT, text=_str(d["message"]), user=_open_user(d),
        amount=float(d["rmb"]), currency="CNY", id=_str(d["message_id"]),
        room=room or _str(d.get("room_id")),
    )  # fmt: skip


def _open_superchat_del(_obj: dict, d: dict, _room: str) -> Deletion:
    ids = d["message_ids"]
    if not isinstance(ids, list):
        raise TypeError("LIVE_OPEN_PLATFORM_SUPER_CHAT_DEL data.message_ids is not a list")
    return Deletion(platform=PLATFORM, message_ids=[_str(i) for i in ids], reason="superchat_deleted")


def _open_end(_obj: dict, d: Any, _room: str) -> GameEnded:
    return GameEnded(_str(d.get("game_id")) if isinstance(d, dict) else "")


_COMMANDS = {
    "DANMU_MSG": _danmu,
    "SEND_GIFT": _gift,
    "SEND_GIFT_V2": _gift_v2,
    "SUPER_CHAT_MESSAGE": _superchat,
    "SUPER_CHAT_MESSAGE_DELETE": _superchat_delete,
    "GUARD_BUY": _guard_buy,
    "USER_TOAST_MSG_V2": _user_toast,
    "LOG_IN_NOTICE": _login_notice,
    "LIVE_OPEN_PLATFORM_DM": _open_dm,
    "LIVE_OPEN_PLATFORM_SEND_GIFT": _open_gift,
    "LIVE_OPEN_PLATFORM_GUARD": _open_guard,
    "LIVE_OPEN_PLATFORM_SUPER_CHAT": _open_superchat,
    "LIVE_OPEN_PLATFORM_SUPER_CHAT_DEL": _open_superchat_del,
    "LIVE_OPEN_PLATFORM_INTERACTION_END": _open_end,
}


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


class ReconnectSettings(BackoffSettings):
    """PROTOCOLS.md's policy for Bilibili: min(1 + 2(n-1), 20) s plus 0-3 s of jitter (the defaults)."""


class BilibiliSettings(SourceSettings):
    room_id: int | None = Field(default=None, gt=0, description="the room number in the live URL; short ids are fine")
    # web route login (optional): the SESSDATA cookie of the account whose uid is used
    sessdata_file: str | None = None
    sessdata_env: str | None = None
    user_agent: str = DEFAULT_UA
    api_base: str = "https://api.bilibili.com"
    live_api_base: str = "https://api.live.bilibili.com"
    ws_url: str | None = Field(default=None, description="replaces the discovered host list (tests, mirrors)")
    # Open Platform route: app credentials plus the streamer's 身份码
    app_id: int | None = None
    access_key_id_file: str | None = None
    access_key_id_env: str | None = None
    access_key_secret_file: str | None = None
    access_key_secret_env: str | None = None
    auth_code: str | None = Field(default=None, description="the streamer's 身份码 (or auth_code_file/_env)")
    auth_code_file: str | None = None
    auth_code_env: str | None = None
    open_api_base: str = "https://live-open.biliapi.com"
    # timings
    heartbeat_interval: float = Field(default=30.0, gt=0)
    open_heartbeat_interval: float = Field(default=20.0, gt=0)
    auth_timeout: float = Field(default=10.0, gt=0)
    http_timeout: float = Field(default=10.0, gt=0)
    wbi_key_ttl: float = Field(default=12 * 3600.0, gt=0)
    token_ttl: float = Field(default=600.0, gt=0, description="reuse a danmaku token this long across reconnects")
    rediscover_after: int = Field(default=3, ge=1, description="failures in a row before discovery is redone")
    risk_control_delay: float = Field(default=60.0, ge=0, description="least wait after -352 / HTTP 412")
    max_decompressed: int = Field(default=DEFAULT_MAX_DECOMPRESSED, ge=1024, le=256 * 1024 * 1024)
    max_frame: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)

    @model_validator(mode="after")
    def _route(self) -> BilibiliSettings:
        if self.ws_url and not self.ws_url.startswith(("ws://", "wss://")):
            raise ValueError(f"ws_url {self.ws_url!r} must start with ws:// or wss://")
        if self.app_id is None and self.room_id is None:
            raise ValueError("set room_id (web route) or app_id with the access keys and auth_code (Open Platform)")
        if self.app_id is not None:
            if not (self.access_key_id_file or self.access_key_id_env):
                raise ValueError("the Open Platform route needs access_key_id_file or access_key_id_env")
            if not (self.access_key_secret_file or self.access_key_secret_env):
                raise ValueError("the Open Platform route needs access_key_secret_file or access_key_secret_env")
            if not (self.auth_code or self.auth_code_file or self.auth_code_env):
                raise ValueError("the Open Platform route needs the streamer's 身份码: auth_code, auth_code_file or auth_code_env")
        return self


# ---------------------------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------------------------


class Retry(Exception):
    """A session ended for a reason worth a status line; `least` is a minimum wait."""

    def __init__(self, message: str, least: float = 0.0, rediscover: bool = False) -> None:
        super().__init__(message)
        self.least = least
        self.rediscover = rediscover


class RiskControl(Retry):
    pass


# Open Platform answer codes worth a sentence in `status` (from the platform's public error table)
OPEN_ERRORS = {
    4001: "the access key id is not valid; check access_key_id_file / access_key_id_env",
    4002: "the signature was refused; check the access key secret (access_key_secret_file / _env)",
    4003: "the request timestamp is too old; check this machine's clock (NTP)",
    4012: "the body MD5 did not match (a proxy rewrote the request?)",
    7001: "the previous session is still being settled; retrying in a little while",
    7002: "this room already runs an interactive session; close the other tool, or wait for it to time out",
    7003: "the interactive session expired (heartbeat missed or game closed); starting a new one",
    7007: "the 身份码 (auth_code) is wrong; the streamer finds it in the live tool under 互动玩法",
    7010: "too many connections to this room; close other tools using this app, or wait for old sessions to expire",
    8002: "this app has no access to the project; check app_id",
}
# codes that retrying soon cannot fix: wait at least the backoff cap
OPEN_FATALISH = {4001, 4002, 7002, 7007, 7010, 8002}


class BilibiliSource(Source):
    """Bilibili danmaku over the web route or the Open Platform; see the module docstring."""

    type = "bilibili"
    Settings = BilibiliSettings

    def __init__(self, settings: BilibiliSettings, ctx) -> None:
        super().__init__(settings, ctx)
        self.s: BilibiliSettings = settings
        self.open = settings.app_id is not None
        self.backoff = self.s.reconnect.make()
        # secrets are read up front so a bad path is a config error at start, not a retry loop
        cfg = ctx.config
        self._sessdata = read_secret(self.s.sessdata_file, self.s.sessdata_env, f"sources[{self.name}].sessdata", cfg)
        self._key_id = self._secret = self._code = None
        if self.open:
            self._key_id = read_secret(self.s.access_key_id_file, self.s.access_key_id_env, f"sources[{self.name}].access_key_id", cfg)
            self._secret = read_secret(self.s.access_key_secret_file, self.s.access_key_secret_env, f"sources[{self.name}].access_key_secret", cfg)
            self._code = self.s.auth_code or read_secret(self.s.auth_code_file, self.s.auth_code_env, f"sources[{self.name}].auth_code", cfg)
        self._http: httpx.AsyncClient | None = None
        self.uid = 0
        self.real_room: int | None = None
        self.anchor = ""
        self._buvid = ""
        self._wbi: tuple[str, str, float] | None = None  # img key, sub key, fetched at
        self._token: tuple[str, list[str], float] | None = None  # token, urls, fetched at
        self._host_index = 0
        self._streak = 0
        self._game_id: str | None = None
        self._recent_guards: dict[tuple[str, int], float] = {}
        self.warnings: list[str] = []
        self.popularity: int | None = None

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update(
            route="open_platform" if self.open else "web",
            room_id=self.real_room or self.s.room_id,
            logged_in=bool(self.uid) if not self.open else None,
            warnings=list(self.warnings),
            popularity=self.popularity,
            reconnects=self.counters.get("reconnects", 0),
        )
        return st

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            self.log.warning("%s", text)
            self.ctx.events.publish("source.warning", source=self.name, warning=text)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        self._http = httpx.AsyncClient(
            timeout=self.s.http_timeout, headers={"User-Agent": self.s.user_agent}, follow_redirects=True
        )
        while True:
            self._connecting("starting the Open Platform session" if self.open else "discovering the room")
            try:
                if self.open:
                    await self._open_session()
                else:
                    await self._web_session()
                raise Retry("the server closed the connection")
            except Exception as exc:
                e = first_error(exc)
                least, rediscover = 0.0, False
                if isinstance(e, Retry):
                    reason, least, rediscover = str(e), e.least, e.rediscover
                elif isinstance(e, (httpx.HTTPError, OSError, WebSocketException, TimeoutError, asyncio.TimeoutError)):
                    reason = _describe(e)
                else:  # a bug or a surprise: report it and keep the source alive
                    self.log.error("unexpected error in the session", exc_info=e)
                    reason = f"unexpected {type(e).__name__}: {e}"
            self._streak += 1
            self._host_index += 1
            if rediscover or self._streak % self.s.rediscover_after == 0:
                self._token = None
            delay = max(self.backoff.next_delay(), least)
            self.counters["reconnects"] += 1
            self.set_state("backoff", f"{reason}; reconnecting in {delay:.1f} s", error=reason)
            await anyio.sleep(delay)

    async def close(self) -> None:
        if self.open and self._game_id and self._http is not None:
            try:
                with anyio.fail_after(3):
                    await self._open_call("/v2/app/end", {"app_id": self.s.app_id, "game_id": self._game_id})
                self.log.info("Open Platform session %s ended", self._game_id)
            except Exception as e:
                self.log.warning("could not end the Open Platform session: %s", _describe(e))
            self._game_id = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self.set_state("stopped")

    # -- web route: discovery ----------------------------------------------------------------

    async def _get_json(self, url: str, cookies: dict[str, str] | None = None) -> dict[str, Any]:
        assert self._http is not None
        headers = {"Referer": "https://live.bilibili.com/"}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items() if v)
        r = await self._http.get(url, headers=headers)
        if r.status_code == 412:
            raise RiskControl(
                f"Bilibili risk control (HTTP 412) on {_path(url)}: this IP is rate-limited; waiting before retrying",
                least=self.s.risk_control_delay,
            )
        r.raise_for_status()
        try:
            body = r.json()
        except ValueError:
            raise Retry(f"{_path(url)} did not answer JSON (HTTP {r.status_code})") from None
        if not isinstance(body, dict):
            raise Retry(f"{_path(url)} answered {type(body).__name__}, not a JSON object")
        if body.get("code") == -352:
            self._wbi = None
            self._buvid = ""
            raise RiskControl(
                f"Bilibili risk control (-352) on {_path(url)}: the request was refused; refreshing WBI keys and "
                f"buvid and waiting", least=self.s.risk_control_delay,
            )  # fmt: skip
        return body

    def _cookies(self) -> dict[str, str]:
        c = {"buvid3": self._buvid}
        if self._sessdata:
            c["SESSDATA"] = self._sessdata
        return c

    async def _discover(self) -> None:
        now = time.monotonic()
        if self._wbi is None or now - self._wbi[2] > self.s.wbi_key_ttl:
            nav = await self._get_json(f"{self.s.api_base}/x/web-interface/nav", self._cookies())
            data = nav.get("data") or {}
            img = (data.get("wbi_img") or {})
            try:
                self._wbi = (wbi_key_from_url(img["img_url"]), wbi_key_from_url(img["sub_url"]), now)
            except (KeyError, TypeError, AttributeError):
                raise Retry("nav did not carry WBI keys (data.wbi_img); the API may have changed") from None
            if nav.get("code") == 0 and data.get("isLogin", True) and _int(data.get("mid")):
                self.uid = _int(data.get("mid"))
            else:
                if self._sessdata:
                    self._warn(
                        "Bilibili did not accept the SESSDATA cookie (nav code "
                        f"{nav.get('code')}); connecting anonymously, names will be masked. Refresh the cookie "
                        "in the file or variable named by sessdata_file / sessdata_env"
                    )
                self.uid = 0
        if not self._buvid:
            spi = await self._get_json(f"{self.s.api_base}/x/frontend/finger/spi")
            self._buvid = _str((spi.get("data") or {}).get("b_3"))
            if not self._buvid:
                raise Retry("finger/spi gave no buvid (data.b_3)")
        if self.real_room is None:
            info = await self._get_json(f"{self.s.live_api_base}/room/v1/Room/get_info?room_id={self.s.room_id}")
            if info.get("code") != 0:
                raise Retry(
                    f"room {self.s.room_id} was not found (code {info.get('code')}: {info.get('message') or info.get('msg')}); "
                    "check room_id in the config", least=self.s.reconnect.cap,
                )  # fmt: skip
            self.real_room = _int((info.get("data") or {}).get("room_id")) or self.s.room_id

    async def _danmu_info(self) -> tuple[str, list[str]]:
        now = time.monotonic()
        if self._token is not None and now - self._token[2] < self.s.token_ttl:
            return self._token[0], self._token[1]
        assert self._wbi is not None
        q = wbi_query({"id": self.real_room, "type": 0, "web_location": "444.8"}, self._wbi[0], self._wbi[1])
        body = await self._get_json(f"{self.s.live_api_base}/xlive/web-room/v1/index/getDanmuInfo?{q}", self._cookies())
        if body.get("code") != 0:
            raise Retry(f"getDanmuInfo answered code {body.get('code')} ({body.get('message')})")
        data = body.get("data") or {}
        token = _str(data.get("token"))
        urls = []
        for h in data.get("host_list") or []:
            if isinstance(h, dict) and h.get("host"):
                urls.append(f"wss://{h['host']}:{_int(h.get('wss_port'), 443)}/sub")
        if not urls:
            urls = [FALLBACK_WS]
        self._token = (token, urls, now)
        self._host_index = 0
        return token, urls

    # -- web route: the session --------------------------------------------------------------

    async def _web_session(self) -> None:
        await self._discover()
        token, urls = await self._danmu_info()
        url = self.s.ws_url or urls[self._host_index % len(urls)]
        auth = {"uid": self.uid, "roomid": self.real_room, "protover": 3, "platform": "web", "type": 2,
                "buvid": self._buvid, "key": token}  # fmt: skip
        await self._websocket(url, make_packet(OP_AUTH, auth), f"room {self.real_room}")

    # -- Open Platform route -------------------------------------------------------------------

    async def _open_call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None and self._key_id and self._secret
        body = json.dumps(payload, separators=(",", ":")).encode()
        r = await self._http.post(self.s.open_api_base + path, content=body,
                                  headers=open_signed_headers(body, self._key_id, self._secret))  # fmt: skip
        if r.status_code == 412:
            raise RiskControl(f"Open Platform {path}: HTTP 412 (rate-limited); waiting", least=self.s.risk_control_delay)
        r.raise_for_status()
        try:
            resp = r.json()
        except ValueError:
            raise Retry(f"Open Platform {path} did not answer JSON") from None
        code = resp.get("code") if isinstance(resp, dict) else None
        if code != 0:
            why = OPEN_ERRORS.get(code, resp.get("message") if isinstance(resp, dict) else "")
            least = self.s.reconnect.cap if code in OPEN_FATALISH else (10.0 if code == 7001 else 0.0)
            raise Retry(f"Open Platform {path} error {code}: {why}", least=least)
        return resp.get("data") or {}

    async def _open_session(self) -> None:
        data = await self._open_call("/v2/app/start", {"code": self._code, "app_id": self.s.app_id})
        try:
            self._game_id = _str(data["game_info"]["game_id"])
            ws_info = data["websocket_info"]
            auth_body = ws_info["auth_body"]
            links = [u for u in ws_info.get("wss_link") or [] if isinstance(u, str)]
        except (KeyError, TypeError):
            raise Retry("Open Platform start answered without game_info / websocket_info") from None
        anchor = data.get("anchor_info") or {}
        self.real_room = _int(anchor.get("room_id")) or self.real_room
        self.anchor = _str(anchor.get("uname"))
        url = self.s.ws_url or (links[self._host_index % len(links)] if links else None)
        if not url:
            raise Retry("Open Platform start gave no websocket link")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._open_heartbeat)
                await self._websocket(url, make_packet(OP_AUTH, auth_body), f"room {self.real_room} ({self.anchor})")
                tg.cancel_scope.cancel()
        finally:
            # a new start makes a new game; end this one so the room does not refuse us (7010)
            game, self._game_id = self._game_id, None
            if game and self._http is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(3):
                    try:
                        await self._open_call("/v2/app/end", {"app_id": self.s.app_id, "game_id": game})
                    except Exception as e:
                        self.log.info("ending Open Platform session %s failed: %s", game, _describe(e))
                    else:
                        self._game_id = None

    async def _open_heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.s.open_heartbeat_interval)
            await self._open_call("/v2/app/heartbeat", {"game_id": self._game_id})
            self.counters["project_heartbeats"] += 1

    # -- the websocket, shared by both routes -----------------------------------------------------

    def _connecting(self, detail: str) -> None:
        # after a failure the source stays "down" (a warning in health) until it is connected again
        if self._streak:
            self.set_state("down", f"reconnecting (attempt {self._streak + 1}): {detail}")
        else:
            self.set_state("connecting", detail)

    async def _websocket(self, url: str, auth_packet: bytes, what: str) -> None:
        self._connecting(f"{what} via {_host(url)}")
        headers = {"Origin": "https://live.bilibili.com"}
        async with ws_connect(
            url, additional_headers=headers, user_agent_header=self.s.user_agent, max_size=self.s.max_frame,
            open_timeout=self.s.auth_timeout, ping_interval=None, close_timeout=2, compression=None, logger=_WIRE_LOG,
        ) as ws:  # fmt: skip
            await ws.send(auth_packet)
            try:
                with anyio.fail_after(self.s.auth_timeout):
                    while True:
                        frame = await ws.recv()
                        reply = next((p for p in self._packets(frame) if p.op == OP_AUTH_REPLY), None)
                        if reply is not None:
                            break
            except TimeoutError:
                raise Retry(f"no answer to the auth packet within {self.s.auth_timeout:g} s", rediscover=True) from None
            code = _auth_code(reply.body)
            if code != 0:
                hint = "the token was refused; fetching a new one" if code == -101 else "authentication refused"
                raise Retry(f"websocket auth answered code {code}: {hint}", rediscover=True)
            self.backoff.connected()
            self._streak = 0
            self.set_state("connected", f"{what} via {_host(url)}" + (" (anonymous)" if not self.open and not self.uid else ""))
            self.ctx.events.publish("source.connected", source=self.name, room=self.real_room, host=_host(url))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, ws)
                try:
                    while True:
                        with anyio.fail_after(self.s.heartbeat_interval * 2 + 5):
                            frame = await ws.recv()
                        self._handle(self._packets(frame))
                except ConnectionClosed as e:
                    raise Retry(f"the server closed the connection ({e.rcvd.code if e.rcvd else 'no close frame'})") from None
                except (TimeoutError, asyncio.TimeoutError):  # distinct classes on Python 3.10
                    raise Retry("no data for too long (missed heartbeat replies); reconnecting") from None
                finally:
                    tg.cancel_scope.cancel()

    async def _heartbeat(self, ws) -> None:
        beat = make_packet(OP_HEARTBEAT, b"{}")
        while True:
            await ws.send(beat)
            self.counters["heartbeats"] += 1
            await anyio.sleep(self.s.heartbeat_interval)

    def _packets(self, frame: bytes | str) -> list[Packet]:
        if isinstance(frame, str):
            frame = frame.encode()
        res = parse_frame(frame, self.s.max_decompressed)
        for p in res.problems:
            self.counters[f"frame_{p}"] += 1
            if p == "bomb":
                self.log.warning("refused a packet that inflates past max_decompressed (%d bytes)", self.s.max_decompressed)
        return res.packets

    def _handle(self, packets: Iterable[Packet]) -> None:
        room = str(self.real_room or "")
        for p in packets:
            if p.op == OP_HEARTBEAT_REPLY:
                if len(p.body) >= 4:
                    self.popularity = struct.unpack_from(">I", p.body)[0]
                continue
            if p.op != OP_MESSAGE:
                continue
            try:
                obj = json.loads(p.body)
                ev = parse_command(obj, room)
            except Ignored:
                self.counters["ignored"] += 1
                continue
            except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError, OverflowError):
                self.counters["malformed"] += 1
                continue
            self._deliver(ev)

    def _deliver(self, ev: Event) -> None:
        if isinstance(ev, Deletion):
            self.delete(ev)
        elif isinstance(ev, LoginNotice):
            self.counters["login_notices"] += 1
            if self.uid:
                self._warn(f"Bilibili sent LOG_IN_NOTICE although logged in as uid {self.uid}: the SESSDATA cookie "
                           "may have expired; refresh it (sessdata_file / sessdata_env)")  # fmt: skip
            else:
                self._warn("Bilibili masks viewer names and ids for anonymous clients (LOG_IN_NOTICE: "
                           f"{ev.text or 'log in to see names'}); put a logged-in SESSDATA cookie in the file or "
                           "variable named by sessdata_file / sessdata_env")  # fmt: skip
        elif isinstance(ev, GameEnded):
            raise Retry("the Open Platform ended the interactive session; starting a new one")
        elif isinstance(ev, Message):
            if ev.kind == Kind.GUARD and self._duplicate_guard(ev):
                self.counters["duplicate_guard"] += 1
                return
            self.emit(ev)

    def _duplicate_guard(self, m: Message) -> bool:
        # GUARD_BUY and USER_TOAST_MSG_V2 announce the same purchase: speak it once
        now = time.monotonic()
        self._recent_guards = {k: t for k, t in self._recent_guards.items() if now - t < 30}
        key = (m.user.id or m.user.name, m.extra.get("guard_level"))
        if key in self._recent_guards:
            return True
        self._recent_guards[key] = now
        return False


def _auth_code(body: bytes) -> int:
    try:
        obj = json.loads(body)
        return _int(obj.get("code"), -1) if isinstance(obj, dict) else -1
    except ValueError:
        return -1


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path or url


def _describe(e: BaseException) -> str:
    """A one-line, secret-free description of a connection error."""
    if isinstance(e, InvalidStatus):
        return f"websocket handshake refused (HTTP {e.response.status_code})"
    if isinstance(e, httpx.HTTPStatusError):
        return f"HTTP {e.response.status_code} from {_path(str(e.request.url))}"
    if isinstance(e, httpx.HTTPError):
        try:
            where = _host(str(e.request.url))
        except RuntimeError:
            where = "the API"
        return f"{type(e).__name__} talking to {where}: {e}".rstrip(": ")
    if isinstance(e, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(e, OSError):
        return f"cannot connect: {e.strerror or e}"
    return f"{type(e).__name__}: {e}"


def first_error(e: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups from task groups."""
    while getattr(e, "exceptions", None):
        e = e.exceptions[0]
    return e


@hookimpl
def ishowtts_register_sources(register):
    register(BilibiliSource)
