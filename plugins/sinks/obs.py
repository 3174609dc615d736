"""OBS sink: shows what is being said in an OBS text source, and can play it through OBS.

Speaks obs-websocket v5 (JSON subprotocol) directly with the `websockets` library: Hello,
Identify with the authentication string, then one request at a time. While an utterance
plays, the text source shows it (``template``, e.g. ``"{user}: {text}"``) and is cleared
when it ends or is skipped. With ``media_source`` set, the utterance's WAV is written, the
media source's ``local_file`` pointed at it and the input restarted: for streamers whose
sound goes only through OBS.

OBS may be closed, restarted or misconfigured at any moment. Every request has a short
timeout; a failure is reported in `status` with what to fix (``disconnected``,
``auth_failed``, ``missing_source``) and this sink lets utterances pass until OBS is back,
retrying the connection with the project's Backoff. Speech on the other sinks never waits.
The password comes from a file or an environment variable and is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import time
import wave
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from pydantic import Field

from ishowttsd.reconnect import Backoff
from ishowttsd.config import read_secret
from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import NotPlayed, Playback, Sink, SinkSettings

# websockets logs every frame at DEBUG, the Identify (auth) frame included: never below INFO
_WIRE_LOG = logging.getLogger("ishowttsd.wire.obs")
_WIRE_LOG.setLevel(logging.INFO)

RPC_VERSION = 1
OP_HELLO, OP_IDENTIFY, OP_IDENTIFIED, OP_REQUEST, OP_RESPONSE = 0, 1, 2, 6, 7
CODE_NOT_FOUND = 600
CLOSE_AUTH_FAILED, CLOSE_UNSUPPORTED_RPC = 4009, 4010
RESTART = "OBS_WEBSOCKET_MEDIA_INPUT_ACTION_RESTART"
STOP = "OBS_WEBSOCKET_MEDIA_INPUT_ACTION_STOP"


class ObsSettings(SinkSettings):
    url: str = Field(default="ws://127.0.0.1:4455", description="obs-websocket v5 (OBS 28+: Tools > WebSocket Server Settings)")
    password_file: str | None = Field(default=None, description="file holding the obs-websocket password")
    password_env: str | None = Field(default=None, description="or an environment variable holding it")
    text_source: str | None = Field(default="TTS Text", description="text source that shows what is said; none: no text")
    template: str = Field(default="{user}: {text}", description="{user} {text} {message} {platform} {kind} {priority}")
    template_no_user: str = Field(default="{text}", description="for `say` and other utterances without a chat user")
    linger_s: float = Field(default=0.0, ge=0.0, le=60.0, description="keep the text this long after the sound ends")
    media_source: str | None = Field(default=None, description="media source that plays the audio in OBS")
    media_dir: str | None = Field(default=None, description="where the WAVs for OBS go; default <state_dir>/obs")
    media_keep: int = Field(default=4, ge=2, le=1000, description="WAVs kept for OBS (it may still be reading the last)")
    timeout_s: float = Field(default=2.0, gt=0.0, le=30.0, description="per connection attempt and per request")
    retry_s: float = Field(default=1.0, gt=0.0, le=60.0)
    retry_max_s: float = Field(default=20.0, gt=0.0, le=600.0)


class ObsError(Exception):
    """A request OBS answered with a failure status."""

    def __init__(self, request: str, code: int, comment: str) -> None:
        super().__init__(f"{request} failed with code {code}: {comment}")
        self.request, self.code, self.comment = request, code, comment


class ObsUnavailable(Exception):
    """No usable connection: not running, refused, wrong password, closed."""

    def __init__(self, state: str, detail: str) -> None:
        super().__init__(detail)
        self.state, self.detail = state, detail


def auth_string(password: str, salt: str, challenge: str) -> str:
    """obs-websocket v5: base64(sha256(base64(sha256(password + salt)) + challenge))."""
    secret = base64.b64encode(hashlib.sha256((password + salt).encode()).digest()).decode()
    return base64.b64encode(hashlib.sha256((secret + challenge).encode()).digest()).decode()


class ObsSink(Sink):
    type = "obs"
    Settings = ObsSettings

    @property
    def delivers_audio(self) -> bool:
        """OBS delivers audio to the stream when it plays it through a media source."""
        if self.settings.audible is not None:
            return self.settings.audible
        return bool(self.settings.media_source)

    def __init__(self, settings: ObsSettings, ctx) -> None:
        super().__init__(settings, ctx)
        self._password: str | None = None
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._lock = anyio.Lock()
        self._backoff = Backoff(base=settings.retry_s, step=2 * settings.retry_s, cap=settings.retry_max_s,
                                jitter=min(3.0, settings.retry_s))  # fmt: skip
        self._next_try = 0.0
        self._down = ("disconnected", "")
        self._media_files: list[Path] = []
        self._paused_total = 0.0
        self._paused_at: float | None = None

    async def start(self) -> None:
        s = self.settings
        self._password = read_secret(s.password_file, s.password_env, f"sinks[{self.name}] obs password", self.ctx.config)
        if s.media_source:
            d = self.ctx.config.resolve(s.media_dir) if s.media_dir else self.ctx.state_dir / "obs"
            self._media_dir = d.resolve()
            await anyio.to_thread.run_sync(lambda: self._media_dir.mkdir(parents=True, exist_ok=True))
        if not await self._ensure_connected():
            raise RuntimeError(self.detail)  # the daemon reports it; play() keeps retrying

    # -- connection --------------------------------------------------------------------------

    def _connected(self) -> bool:
        from websockets.protocol import State

        return self._ws is not None and self._ws.state is State.OPEN

    async def _ensure_connected(self) -> bool:
        if self._connected():
            return True
        await self._drop_connection()
        if time.monotonic() < self._next_try:
            self.set_state(*self._down)  # the speaker may have marked it ok meanwhile
            return False
        try:
            with anyio.fail_after(self.settings.timeout_s):
                self._ws = await self._connect()
        except ObsUnavailable as e:
            self._fail(e.state, e.detail)
            return False
        except TimeoutError:
            self._fail("disconnected", f"OBS at {self.settings.url} did not answer within {self.settings.timeout_s:g} s")
            return False
        except OSError as e:
            self._fail(
                "disconnected",
                f"cannot reach OBS at {self.settings.url} ({e.strerror or e}); is OBS running with "
                f"Tools > WebSocket Server Settings > Enable enabled?",
            )
            return False
        self._backoff.connected()
        self.counters["connects"] += 1
        self.set_state("ok", f"connected to {self.settings.url}")
        self.log.info("connected to OBS at %s", self.settings.url)
        return True

    def _fail(self, state: str, detail: str) -> None:
        delay = self._backoff.next_delay()
        self._next_try = time.monotonic() + delay
        self.counters["connect_failures"] += 1
        self._down = (state, f"{detail}; retrying")
        self.set_state(state, f"{detail}; retrying in {delay:.1f} s", error=detail)
        self.log.warning("%s; retrying in %.1f s", detail, delay)

    async def _connect(self):
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        url = self.settings.url
        try:
            ws = await connect(url, subprotocols=["obswebsocket.json"], proxy=None, open_timeout=None,
                               compression=None, max_size=16 * 1024 * 1024, logger=_WIRE_LOG)  # fmt: skip
        except InvalidHandshake as e:
            raise ObsUnavailable("disconnected", f"{url} is not an obs-websocket v5 server ({e})") from None
        try:
            hello = json.loads(await ws.recv())
            if hello.get("op") != OP_HELLO:
                raise ObsUnavailable("disconnected", f"{url} sent op {hello.get('op')} instead of Hello; is it OBS 28+?")
            d = hello.get("d", {})
            ident: dict[str, Any] = {"rpcVersion": RPC_VERSION, "eventSubscriptions": 0}
            auth = d.get("authentication")
            if auth:
                if not self._password:
                    raise ObsUnavailable(
                        "auth_failed", "OBS asks for a password; set password_file or password_env in this [[sinks]] table"
                    )
                ident["authentication"] = auth_string(self._password, auth["salt"], auth["challenge"])
            await ws.send(json.dumps({"op": OP_IDENTIFY, "d": ident}))
            reply = json.loads(await ws.recv())
            if reply.get("op") != OP_IDENTIFIED:
                raise ObsUnavailable("disconnected", f"OBS answered Identify with op {reply.get('op')}")
            return ws
        except (ValueError, AttributeError, KeyError, TypeError) as e:  # not JSON, not an object...
            await ws.close()
            raise ObsUnavailable("disconnected", f"{url} is not an obs-websocket v5 server (bad handshake: {e})") from None
        except ConnectionClosed as e:
            await ws.close()
            code = e.rcvd.code if getattr(e, "rcvd", None) else None
            if code == CLOSE_AUTH_FAILED:
                raise ObsUnavailable(
                    "auth_failed",
                    "OBS refused the password (close 4009); make password_file/password_env match "
                    "Tools > WebSocket Server Settings > Server Password",
                ) from None
            if code == CLOSE_UNSUPPORTED_RPC:
                raise ObsUnavailable("disconnected", "OBS does not speak RPC version 1 (close 4010); update obs-websocket") from None
            raise ObsUnavailable("disconnected", f"OBS closed the connection during the handshake (code {code})") from None
        except BaseException:
            await ws.close()
            raise

    async def _drop_connection(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with anyio.move_on_after(1, shield=True):
                await ws.close()

    async def _request(self, request_type: str, data: dict[str, Any]) -> dict[str, Any]:
        """One request, its answer or ObsError; a lost connection raises ObsUnavailable."""
        from websockets.exceptions import ConnectionClosed

        if not self._connected():
            lost = self._ws is not None
            await self._drop_connection()
            detail = f"OBS at {self.settings.url} closed the connection (OBS quit or restarted)"
            if lost:
                self._fail("disconnected", detail)
            raise ObsUnavailable("disconnected", detail)
        rid = str(next(self._ids))
        try:
            with anyio.fail_after(self.settings.timeout_s):
                async with self._lock:
                    await self._ws.send(json.dumps({"op": OP_REQUEST, "d": {
                        "requestType": request_type, "requestId": rid, "requestData": data}}))  # fmt: skip
                    while True:
                        msg = json.loads(await self._ws.recv())
                        d = msg.get("d", {})
                        if msg.get("op") == OP_RESPONSE and d.get("requestId") == rid:
                            break
        except (ConnectionClosed, TimeoutError, OSError) as e:
            await self._drop_connection()
            what = "timed out" if isinstance(e, TimeoutError) else "lost the connection"
            self._fail("disconnected", f"OBS at {self.settings.url} {what} during {request_type}")
            raise ObsUnavailable("disconnected", str(e)) from None
        status = d.get("requestStatus", {})
        self.counters["requests"] += 1
        if not status.get("result"):
            raise ObsError(request_type, int(status.get("code", 0)), status.get("comment", ""))
        return d.get("responseData") or {}

    async def _set_input(self, name: str, settings: dict[str, Any]) -> None:
        try:
            await self._request("SetInputSettings", {"inputName": name, "inputSettings": settings, "overlay": True})
        except ObsError as e:
            if e.code == CODE_NOT_FOUND:
                self.set_state(
                    "missing_source",
                    f"OBS has no source named {name!r}; add it in OBS (a Text source for text_source, "
                    f"a Media Source for media_source) or fix the name in the config",
                    error=str(e),
                )
            raise

    # -- playing -----------------------------------------------------------------------------

    def _text(self, pb: Playback) -> str:
        u = pb.utterance
        m = u.message
        fields = {
            "text": u.text, "message": m.text if m else u.text, "user": m.user.name if m else "",
            "platform": m.platform if m else "", "kind": m.kind.value if m else "say",
            "priority": u.priority.name.lower(),
        }  # fmt: skip
        tpl = self.settings.template if m and m.user.name else self.settings.template_no_user
        try:
            return tpl.format(**fields)
        except (KeyError, IndexError, ValueError):
            return u.text

    async def play(self, pb: Playback) -> None:
        s = self.settings
        if not await self._ensure_connected():
            raise NotPlayed(self.detail or f"OBS at {s.url} is not reachable")
        shown = False
        media_started = False
        self._paused_total = 0.0
        try:
            try:
                text_failed = False
                if s.text_source:
                    try:
                        await self._set_input(s.text_source, {"text": self._text(pb)})
                        shown = True
                    except ObsError as e:  # the overlay is missing: the sound must still go out
                        text_failed = True
                        self.counters["errors"] += 1
                        if e.code != CODE_NOT_FOUND:
                            self.set_state("error", f"OBS refused {e.request}", error=str(e))
                t0 = time.monotonic()
                audio: list[np.ndarray] = []
                async for chunk in pb.chunks():
                    if s.media_source:
                        audio.append(chunk.samples)
                if s.media_source and audio and not pb.stats.cut:
                    path = await anyio.to_thread.run_sync(self._write_wav, pb, audio)
                    await self._set_input(s.media_source, {"is_local_file": True, "local_file": str(path)})
                    await self._request("TriggerMediaInputAction", {"inputName": s.media_source, "mediaAction": RESTART})
                    media_started = True
                    t0 = time.monotonic()  # the sound starts now, in OBS
                # hold the text while the sound plays; paused time does not count
                while shown or media_started:
                    left = t0 + pb.stats.audio_s + s.linger_s + self._paused_total - time.monotonic()
                    if self._paused_at is not None:
                        left = max(left, 0.05)
                    if left <= 0:
                        break
                    await anyio.sleep(min(left, 0.05))
                if self.state != "ok" and not text_failed:
                    self.set_state("ok", f"connected to {s.url}")
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(s.timeout_s):
                    await self._clean_up(pb, shown, media_started)
        except ObsUnavailable as e:  # reported by _fail; this sink sits out until OBS is back
            raise NotPlayed(e.detail) from None
        except ObsError as e:
            self.counters["errors"] += 1
            if e.code != CODE_NOT_FOUND:
                self.set_state("error", f"OBS refused {e.request}", error=str(e))
            if media_started is False and s.media_source:
                raise NotPlayed(f"OBS refused {e.request}: {e}") from None

    async def _clean_up(self, pb: Playback, shown: bool, media_started: bool) -> None:
        """Clear the text (and stop OBS's audio if it was cut); failures here are reported, not raised."""
        s = self.settings
        try:
            if media_started and pb.stats.cut:
                await self._request("TriggerMediaInputAction", {"inputName": s.media_source, "mediaAction": STOP})
            if shown:
                await self._set_input(s.text_source, {"text": ""})
        except (ObsUnavailable, ObsError):
            self.counters["errors"] += 1

    def _write_wav(self, pb: Playback, audio: list[np.ndarray]) -> Path:
        x = np.clip(np.concatenate(audio), -1.0, 1.0)
        path = self._media_dir / f"utterance-{pb.utterance.id:06d}.wav"
        tmp = path.with_name(path.name + ".part")
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(pb.sample_rate)
            w.writeframes((x * 32767).astype("<i2").tobytes())
        tmp.replace(path)
        self._media_files.append(path)
        while len(self._media_files) > self.settings.media_keep:
            self._media_files.pop(0).unlink(missing_ok=True)
        return path

    async def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()

    async def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_total += time.monotonic() - self._paused_at
            self._paused_at = None

    async def close(self) -> None:
        await self._drop_connection()

    def status(self) -> dict[str, Any]:
        st = super().status()
        st["url"] = self.settings.url
        st["connected"] = self._connected()
        return st


@hookimpl
def ishowtts_register_sinks(register):
    register(ObsSink)
