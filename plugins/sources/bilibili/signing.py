"""Request signing: WBI for the web API's ``getDanmuInfo`` and HMAC-SHA256 for the Open Platform.

Pure functions; the fake Bilibili in the tests checks both with code of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse
from typing import Any

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
