"""The Bilibili source: discovery (web route) or the interactive session (Open Platform), the
websocket both routes share, and delivery of what it carries; see the package docstring."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
import urllib.parse
from typing import Any, Iterable

import anyio
import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from ishowttsd.config import read_secret
from ishowttsd.messages import Deletion, Kind, Message, as_int, as_str
from ishowttsd.reconnect import Reconnector, SessionEnded, describe_error
from ishowttsd.source import Source

from .commands import Event, GameEnded, Ignored, LoginNotice, parse_command
from .settings import BilibiliSettings
from .signing import open_signed_headers, wbi_key_from_url, wbi_query
from .wire import (
    OP_AUTH, OP_AUTH_REPLY, OP_HEARTBEAT, OP_HEARTBEAT_REPLY, OP_MESSAGE, Packet, auth_reply_code, make_packet, parse_frame,
)  # fmt: skip

# websockets logs every frame at DEBUG, tokens included: its logger for us never goes below INFO
_WIRE_LOG = logging.getLogger("ishowttsd.wire.bilibili")
_WIRE_LOG.setLevel(logging.INFO)
# httpx logs every request at INFO; a heartbeat every 20 s would flood the daemon's one-line-per-event log
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)
FALLBACK_WS = "wss://broadcastlv.chat.bilibili.com:443/sub"


class Retry(SessionEnded):
    """A session ended for a reason worth a status line; `rediscover` drops the cached token and hosts."""

    def __init__(self, reason: str, least: float = 0.0, rediscover: bool = False) -> None:
        super().__init__(reason, least=least)
        self.rediscover = rediscover


class RiskControl(Retry):
    """Bilibili refused us for risk control (-352, HTTP 412): retrying fast makes it last longer."""


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
    """Bilibili danmaku over the web route or the Open Platform; see the package docstring."""

    type = "bilibili"
    Settings = BilibiliSettings

    def __init__(self, settings: BilibiliSettings, ctx) -> None:
        super().__init__(settings, ctx)
        self.s: BilibiliSettings = settings
        self.open = settings.app_id is not None
        self.link = Reconnector(self, self.s.reconnect.make())
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
        session = self._open_session if self.open else self._web_session
        detail = "starting the Open Platform session" if self.open else "discovering the room"
        await self.link.run(session, detail, on_failure=self._failed)

    def _failed(self, error: BaseException) -> None:
        # the next attempt tries the next host; a refused token, or a streak, asks for fresh ones
        self._host_index += 1
        if getattr(error, "rediscover", False) or self.link.streak % self.s.rediscover_after == 0:
            self._token = None

    async def close(self) -> None:
        if self.open and self._game_id and self._http is not None:
            try:
                with anyio.fail_after(3):
                    await self._open_call("/v2/app/end", {"app_id": self.s.app_id, "game_id": self._game_id})
                self.log.info("Open Platform session %s ended", self._game_id)
            except Exception as e:
                self.log.warning("could not end the Open Platform session: %s", describe_error(e) or repr(e))
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
            if nav.get("code") == 0 and data.get("isLogin", True) and as_int(data.get("mid")):
                self.uid = as_int(data.get("mid"))
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
            self._buvid = as_str((spi.get("data") or {}).get("b_3"))
            if not self._buvid:
                raise Retry("finger/spi gave no buvid (data.b_3)")
        if self.real_room is None:
            info = await self._get_json(f"{self.s.live_api_base}/room/v1/Room/get_info?room_id={self.s.room_id}")
            if info.get("code") != 0:
                raise Retry(
                    f"room {self.s.room_id} was not found (code {info.get('code')}: {info.get('message') or info.get('msg')}); "
                    "check room_id in the config", least=self.s.reconnect.cap,
                )  # fmt: skip
            self.real_room = as_int((info.get("data") or {}).get("room_id")) or self.s.room_id

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
        token = as_str(data.get("token"))
        urls = []
        for h in data.get("host_list") or []:
            if isinstance(h, dict) and h.get("host"):
                urls.append(f"wss://{h['host']}:{as_int(h.get('wss_port'), 443)}/sub")
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
            self._game_id = as_str(data["game_info"]["game_id"])
            ws_info = data["websocket_info"]
            auth_body = ws_info["auth_body"]
            links = [u for u in ws_info.get("wss_link") or [] if isinstance(u, str)]
        except (KeyError, TypeError):
            raise Retry("Open Platform start answered without game_info / websocket_info") from None
        anchor = data.get("anchor_info") or {}
        self.real_room = as_int(anchor.get("room_id")) or self.real_room
        self.anchor = as_str(anchor.get("uname"))
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
                        self.log.info("ending Open Platform session %s failed: %s", game, describe_error(e) or repr(e))
                    else:
                        self._game_id = None

    async def _open_heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.s.open_heartbeat_interval)
            await self._open_call("/v2/app/heartbeat", {"game_id": self._game_id})
            self.counters["project_heartbeats"] += 1

    # -- the websocket, shared by both routes -----------------------------------------------------

    async def _websocket(self, url: str, auth_packet: bytes, what: str) -> None:
        self.link.connecting(f"{what} via {_host(url)}")
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
            code = auth_reply_code(reply.body)
            if code != 0:
                hint = "the token was refused; fetching a new one" if code == -101 else "authentication refused"
                raise Retry(f"websocket auth answered code {code}: {hint}", rediscover=True)
            self.link.connected(f"{what} via {_host(url)}" + (" (anonymous)" if not self.open and not self.uid else ""),
                                room=self.real_room, host=_host(url))  # fmt: skip
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


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path or url
