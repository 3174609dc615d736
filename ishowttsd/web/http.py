"""What every HTTP answer shares: the error-code table, JSON bodies, bounded request bodies."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ishowttsd.api import ERRORS, ApiError

# an API error code -> the HTTP status that carries it (every code in ERRORS has one)
STATUS: dict[str, int] = {
    "parse_error": 400, "invalid_request": 400, "line_too_long": 413, "method_not_found": 404,
    "invalid_params": 400, "not_found": 404, "unknown_voice": 400, "not_ready": 503, "busy": 503,
    "config_error": 409, "bench_failed": 500, "baseline_not_saved": 500, "too_large": 413,
    "bad_audio": 415, "voice_failed": 422, "rate_limited": 429, "unauthorized": 401, "forbidden": 403,
    "internal_error": 500,
}  # fmt: skip
assert set(STATUS) == set(ERRORS), "every API error code needs an HTTP status"

JSON_LIMIT = 64 * 1024  # a JSON request body


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json", headers=headers)


def error_response(e: ApiError) -> Response:
    """The API's error shape, {"error": {"code", "message"}}, with its status (and Retry-After)."""
    headers = {"Retry-After": str(max(1, round(e.retry_after)))} if e.retry_after is not None else None
    return json_response({"error": {"code": e.code, "message": e.message}}, STATUS.get(e.code, 500), headers)


class TooLarge(Exception):
    """A streamed body passed its bound."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is longer than `limit` (before reading it all)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise ApiError("too_large", f"the body is over {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise ApiError("too_large", f"the body is over {limit} bytes")
    return bytes(buf)
