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
mirrors. Reconnects use :class:`ishowttsd.reconnect.Backoff`; risk-control answers (-352, HTTP 412)
wait at least ``risk_control_delay`` seconds, because fast retries make them last longer.

The package's files are named for their jobs: ``wire.py`` (packet framing and protobuf),
``signing.py`` (WBI and Open Platform signatures), ``commands.py`` (commands to Messages),
``settings.py`` (the ``[[sources]]`` table), ``source.py`` (discovery, sessions, delivery).
"""

from __future__ import annotations

from ishowttsd.hookspecs import hookimpl

from .source import BilibiliSource


@hookimpl
def ishowtts_register_sources(register):
    register(BilibiliSource)
