"""Bilibili JSON commands (web route and Open Platform) as Messages and Deletions.

:func:`parse_command` normalises one command: DANMU_MSG, SEND_GIFT, SEND_GIFT_V2 (protobuf),
SUPER_CHAT_MESSAGE(_DELETE), GUARD_BUY, USER_TOAST_MSG_V2, LOG_IN_NOTICE, the room's
interactions (INTERACT_WORD, INTERACT_WORD_V2 (protobuf), LIKE_INFO_V3_CLICK,
LIKE_INFO_V3_UPDATE: read only as aggregated greetings) and the LIVE_OPEN_PLATFORM_*
equivalents. Pure functions: no I/O, fuzzed by the tests.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import partial
from typing import Any

from ishowttsd.messages import Deletion, Kind, Message, User, as_int, as_str

from .wire import pb_fields, pb_one, pb_text

PLATFORM = "bilibili"


def command_name(obj: dict[str, Any]) -> str:
    """``DANMU_MSG:4:0:2:2:2:0`` -> ``DANMU_MSG``."""
    cmd = obj.get("cmd")
    return cmd.split(":", 1)[0] if isinstance(cmd, str) else ""


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


def _uid(v: Any) -> str:
    n = as_int(v)
    return str(n) if n > 0 else ""  # uid 0 is "masked / unknown", not a user


def _gold(gold: int, paid: bool = True) -> dict[str, Any]:
    """A Message's amount and currency for a price in gold (1000 gold = 1 CNY); none when free."""
    if paid and gold:
        return {"amount": round(gold / 1000, 3), "currency": "CNY"}
    return {"amount": None, "currency": None}


def _guard(user: User, level: int, num: int, price: int, msg_id: str, room: str, **extra: Any) -> Message:
    """A guard purchase, from any route: `num` months at `price` gold a month."""
    return Message(platform=PLATFORM, kind=Kind.GUARD, user=user, id=msg_id, room=room, **_gold(price * num),
                   extra={"guard_level": level, "num": num, "months": num, **extra})  # fmt: skip


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
    name = as_str(who[1])
    extra_meta = meta[15] if len(meta) > 15 and isinstance(meta[15], dict) else {}
    if not name:  # newer layouts move the name into info[0][15].user.base.name
        name = as_str(((extra_meta.get("user") or {}).get("base") or {}).get("name"))
    medal = info[3] if len(info) > 3 and isinstance(info[3], list) else []
    level_info = info[4] if len(info) > 4 and isinstance(info[4], list) else []
    guard = as_int(info[7]) if len(info) > 7 else 0
    dm_type = as_int(meta[12]) if len(meta) > 12 else 0
    ts = as_int(meta[4]) if len(meta) > 4 else 0
    msg_id = ""
    emots: Any = None
    raw_extra = extra_meta.get("extra")
    if isinstance(raw_extra, str):
        try:
            parsed = json.loads(raw_extra)
            msg_id = as_str(parsed.get("id_str"))
            emots = parsed.get("emots")
        except (ValueError, AttributeError):
            msg_id = ""
    uid = _uid(who[0])
    extra: dict[str, Any] = {"dm_type": dm_type}
    if dm_type == 1:
        emo = meta[13] if len(meta) > 13 and isinstance(meta[13], dict) else {}
        extra["emoticon"] = as_str(emo.get("emoticon_unique") or text)
    if len(info) > 16 and isinstance(info[16], list) and info[16]:
        extra["wealth_level"] = as_int(info[16][0])
    user = User(
        id=uid,
        name=name,
        level=as_int(level_info[0]) if level_info else 0,
        medal_level=as_int(medal[0]) if medal else 0,
        medal_name=as_str(medal[1]) if len(medal) > 1 else "",
        membership=membership(guard),
        moderator=as_int(who[2]) == 1 if len(who) > 2 else False,
    )
    return Message(
        platform=PLATFORM, kind=Kind.DANMAKU, text=text, user=user, room=room,
        id=msg_id or f"dm-{uid or name}-{ts}", picture_only=dm_type == 1,
        emotes=[] if dm_type == 1 else emot_spans(text, emots), extra=extra,
    )  # fmt: skip


def _gift(_obj: dict, d: dict, room: str) -> Message:
    num = as_int(d.get("num"), 1)
    paid = d.get("coin_type") == "gold"
    total = as_int(d.get("total_coin")) or as_int(d.get("price")) * num
    medal = d.get("medal_info") if isinstance(d.get("medal_info"), dict) else {}
    combo = as_str(d.get("batch_combo_id") or d.get("combo_id"))
    return Message(
        platform=PLATFORM,
        kind=Kind.GIFT,
        user=User(
            id=_uid(d.get("uid")), name=as_str(d["uname"]), membership=membership(as_int(d.get("guard_level"))),
            medal_name=as_str(medal.get("medal_name")), medal_level=as_int(medal.get("medal_level")),
        ),  # fmt: skip
        **_gold(total, paid),
        id=as_str(d.get("tid") or d.get("rnd")),
        room=room,
        extra={"gift": as_str(d["giftName"]), "num": num, "combo_id": combo, "coin_type": as_str(d.get("coin_type")),
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
    num = pb_one(item, 3, int, 1) or 1
    coin_type = pb_text(item, 8)
    paid = coin_type == "gold"
    total = pb_one(item, 7, int, 0) or pb_one(item, 5, int, 0) * num
    return Message(
        platform=PLATFORM, kind=Kind.GIFT,
        user=User(id=_uid(pb_one(top, 1, int, 0)), name=pb_text(top, 2), membership=membership(pb_one(top, 5, int, 0))),
        **_gold(total, paid), id=pb_text(item, 9), room=room,
        extra={"gift": pb_text(item, 2), "num": num, "coin_type": coin_type, "paid": paid, "combo_id": ""},
    )  # fmt: skip


def _superchat(_obj: dict, d: dict, room: str) -> Message:
    ui = d.get("user_info") if isinstance(d.get("user_info"), dict) else {}
    medal = d.get("medal_info") if isinstance(d.get("medal_info"), dict) else {}
    guard = as_int(ui.get("guard_level"))
    return Message(
        platform=PLATFORM,
        kind=Kind.SUPERCHAT,
        text=as_str(d["message"]),
        user=User(
            id=_uid(d.get("uid")), name=as_str(ui.get("uname")), membership=membership(guard),
            medal_name=as_str(medal.get("medal_name")), medal_level=as_int(medal.get("medal_level")),
        ),  # fmt: skip
        amount=float(d["price"]),
        currency="CNY",
        id=as_str(d["id"]),
        room=room,
    )


def _superchat_delete(obj: dict, d: dict, _room: str, ids_key: str) -> Deletion:
    # both routes take super chats back the same way; only the key of the id list differs
    ids = d[ids_key]
    if not isinstance(ids, list):
        raise TypeError(f"{command_name(obj)} data.{ids_key} is not a list")
    return Deletion(platform=PLATFORM, message_ids=[as_str(i) for i in ids], reason="superchat_deleted")


def _guard_buy(_obj: dict, d: dict, room: str) -> Message:
    level = as_int(d["guard_level"])
    uid = _uid(d.get("uid"))
    user = User(id=uid, name=as_str(d["username"]), membership=membership(level))
    return _guard(user, level, as_int(d.get("num"), 1), as_int(d.get("price")),
                  f"guard-{uid}-{as_int(d.get('start_time'))}", room, gift=as_str(d.get("gift_name")))  # fmt: skip


def _user_toast(_obj: dict, d: dict, room: str) -> Message:
    su = d["sender_uinfo"]
    gi = d.get("guard_info") or {}
    pi = d.get("pay_info") or {}
    level = as_int(gi.get("guard_level"))
    uid = _uid(su.get("uid"))
    user = User(id=uid, name=as_str((su.get("base") or {}).get("name")),
                membership=as_str(gi.get("role_name")) or membership(level))  # fmt: skip
    return _guard(user, level, as_int(pi.get("num"), 1), as_int(pi.get("price")),
                  f"guard-{uid}-{as_int(gi.get('start_time'))}", room, unit=as_str(pi.get("unit")))  # fmt: skip


# INTERACT_WORD msg_type: 1 entered, 2 followed, 3 shared, 4 special follow, 5 mutual follow
INTERACT_KINDS = {1: Kind.ENTER, 2: Kind.FOLLOW, 3: Kind.SHARE, 4: Kind.FOLLOW, 5: Kind.FOLLOW}


def _interact(user: User, msg_type: int, room: str, ts: int, medal_name: str = "", medal_level: int = 0) -> Message:
    kind = INTERACT_KINDS.get(msg_type)
    if kind is None:
        raise Ignored(f"INTERACT_WORD msg_type {msg_type}")
    user.medal_name, user.medal_level = medal_name, medal_level
    return Message(platform=PLATFORM, kind=kind, user=user, room=room,
                   id=f"iw-{msg_type}-{user.id or user.name}-{ts}", extra={"msg_type": msg_type})  # fmt: skip


def _interact_word(_obj: dict, d: dict, room: str) -> Message:
    medal = d.get("fans_medal") if isinstance(d.get("fans_medal"), dict) else {}
    name = as_str(d.get("uname"))
    if not name:  # newer layouts carry the name in uinfo.base.name
        uinfo = d.get("uinfo") if isinstance(d.get("uinfo"), dict) else {}
        name = as_str((uinfo.get("base") or {}).get("name")) if isinstance(uinfo.get("base"), dict) else ""
    user = User(id=_uid(d.get("uid")), name=name)
    return _interact(user, as_int(d["msg_type"]), room, as_int(d.get("timestamp")),
                     as_str(medal.get("medal_name")), as_int(medal.get("medal_level")))  # fmt: skip


def _interact_word_v2(_obj: dict, d: dict, room: str) -> Message:
    # data.pb (base64) is an InteractWordV2: uid 1, uname 2, identities 4, msg_type 5, roomid 6,
    # timestamp 7, score 8, fans_medal 9 (target_id 1, medal_level 2, medal_name 3). Checked
    # against a published capture of the web client's traffic (room 33989).
    top = pb_fields(base64.b64decode(d["pb"], validate=True))
    if 5 not in top:
        raise KeyError("INTERACT_WORD_V2 without msg_type")
    medal = {}
    raw_medal = pb_one(top, 9, bytes, b"")
    if raw_medal:
        medal = pb_fields(raw_medal)
    user = User(id=_uid(pb_one(top, 1, int, 0)), name=pb_text(top, 2))
    return _interact(user, pb_one(top, 5, int, 0), room, pb_one(top, 7, int, 0),
                     pb_text(medal, 3) if medal else "", pb_one(medal, 2, int, 0) if medal else 0)  # fmt: skip


def _like_click(_obj: dict, d: dict, room: str) -> Message:
    medal = d.get("fans_medal") if isinstance(d.get("fans_medal"), dict) else {}
    user = User(id=_uid(d.get("uid")), name=as_str(d["uname"]), medal_name=as_str(medal.get("medal_name")),
                medal_level=as_int(medal.get("medal_level")))  # fmt: skip
    if not user.id and not user.name:
        raise KeyError("LIKE_INFO_V3_CLICK without a user")
    return Message(platform=PLATFORM, kind=Kind.LIKE, user=user, room=room, text=as_str(d.get("like_text")))


def _like_update(_obj: dict, d: dict, room: str) -> Message:
    total = as_int(d["click_count"], -1)
    if total < 0:
        raise ValueError("LIKE_INFO_V3_UPDATE click_count is not a count")
    return Message(platform=PLATFORM, kind=Kind.LIKE, room=room, extra={"total": total})


def _login_notice(_obj: dict, d: dict, _room: str) -> LoginNotice:
    return LoginNotice(as_str(d.get("notice_msg")) if isinstance(d, dict) else "")


# -- Open Platform commands (names are not masked; uid is 0, open_id identifies the user) --------


def _open_user(d: dict) -> User:
    return User(
        id=as_str(d.get("open_id")) or _uid(d.get("uid")),
        name=as_str(d.get("uname")),
        membership=membership(as_int(d.get("guard_level"))),
        medal_name=as_str(d.get("fans_medal_name")),
        medal_level=as_int(d.get("fans_medal_level")),
        moderator=bool(d.get("is_admin")),
    )


def _open_dm(_obj: dict, d: dict, room: str) -> Message:
    dm_type = as_int(d.get("dm_type"))
    extra: dict[str, Any] = {"dm_type": dm_type}
    if dm_type == 1:
        extra["emoticon"] = as_str(d.get("emoji_img_url"))
    return Message(
        platform=PLATFORM, kind=Kind.DANMAKU, text=as_str(d["msg"]), user=_open_user(d),
        id=as_str(d.get("msg_id")), room=room or as_str(d.get("room_id")), picture_only=dm_type == 1, extra=extra,
    )  # fmt: skip


def _open_gift(_obj: dict, d: dict, room: str) -> Message:
    num = as_int(d.get("gift_num"), 1)
    paid = bool(d.get("paid"))
    price = as_int(d.get("price"))  # per gift, 1000 = 1 CNY
    combo = d.get("combo_info") if isinstance(d.get("combo_info"), dict) else {}
    return Message(
        platform=PLATFORM, kind=Kind.GIFT, user=_open_user(d), **_gold(price * num, paid),
        id=as_str(d.get("msg_id")), room=room or as_str(d.get("room_id")),
        extra={"gift": as_str(d["gift_name"]), "num": num, "combo_id": as_str(combo.get("combo_id")), "paid": paid},
    )  # fmt: skip


def _open_guard(_obj: dict, d: dict, room: str) -> Message:
    u = d["user_info"]
    level = as_int(d.get("guard_level"))
    user = User(id=as_str(u.get("open_id")) or _uid(u.get("uid")), name=as_str(u.get("uname")), membership=membership(level))
    return _guard(user, level, as_int(d.get("guard_num"), 1), as_int(d.get("price")), as_str(d.get("msg_id")),
                  room or as_str(d.get("room_id")), unit=as_str(d.get("guard_unit")))  # fmt: skip


def _open_superchat(_obj: dict, d: dict, room: str) -> Message:
    return Message(
        platform=PLATFORM, kind=Kind.SUPERCHAT, text=as_str(d["message"]), user=_open_user(d),
        amount=float(d["rmb"]), currency="CNY", id=as_str(d["message_id"]),
        room=room or as_str(d.get("room_id")),
    )  # fmt: skip


def _open_like(_obj: dict, d: dict, room: str) -> Message:
    user = _open_user(d)
    if not user.id and not user.name:
        raise KeyError("LIVE_OPEN_PLATFORM_LIKE without a user")
    return Message(platform=PLATFORM, kind=Kind.LIKE, user=user, room=room or as_str(d.get("room_id")),
                   extra={"num": as_int(d.get("like_count"), 1)})  # fmt: skip


def _open_end(_obj: dict, d: Any, _room: str) -> GameEnded:
    return GameEnded(as_str(d.get("game_id")) if isinstance(d, dict) else "")


_COMMANDS = {
    "DANMU_MSG": _danmu,
    "SEND_GIFT": _gift,
    "SEND_GIFT_V2": _gift_v2,
    "SUPER_CHAT_MESSAGE": _superchat,
    "SUPER_CHAT_MESSAGE_DELETE": partial(_superchat_delete, ids_key="ids"),
    "GUARD_BUY": _guard_buy,
    "USER_TOAST_MSG_V2": _user_toast,
    "LOG_IN_NOTICE": _login_notice,
    "INTERACT_WORD": _interact_word,
    "INTERACT_WORD_V2": _interact_word_v2,
    "LIKE_INFO_V3_CLICK": _like_click,
    "LIKE_INFO_V3_UPDATE": _like_update,
    "LIVE_OPEN_PLATFORM_DM": _open_dm,
    "LIVE_OPEN_PLATFORM_SEND_GIFT": _open_gift,
    "LIVE_OPEN_PLATFORM_GUARD": _open_guard,
    "LIVE_OPEN_PLATFORM_SUPER_CHAT": _open_superchat,
    "LIVE_OPEN_PLATFORM_SUPER_CHAT_DEL": partial(_superchat_delete, ids_key="message_ids"),
    "LIVE_OPEN_PLATFORM_LIKE": _open_like,
    "LIVE_OPEN_PLATFORM_INTERACTION_END": _open_end,
}
