"""Bilibili's danmaku wire format: the 16-byte packet header, zlib/brotli bodies that hold
further packets, and the schema-less protobuf reader for SEND_GIFT_V2.

Pure functions: no I/O, fuzzed by the tests. Nothing here raises on bad input except
:func:`pb_fields` (ValueError), which the command parsers count as malformed.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import brotli

from ishowttsd.messages import as_int

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


def pb_one(fields: dict[int, list[int | bytes]], no: int, kind: type, default: Any) -> Any:
    vals = [v for v in fields.get(no, ()) if isinstance(v, kind)]
    return vals[-1] if vals else default


def pb_text(fields: dict[int, list[int | bytes]], no: int) -> str:
    return pb_one(fields, no, bytes, b"").decode("utf-8", "replace")


def auth_reply_code(body: bytes) -> int:
    """The ``code`` of an auth reply (op 8) body: 0 is accepted, -101 a refused token; -1 if unreadable."""
    try:
        obj = json.loads(body)
        return as_int(obj.get("code"), -1) if isinstance(obj, dict) else -1
    except ValueError:
        return -1
