"""A fake OBS Studio speaking obs-websocket v5 (JSON subprotocol) on loopback.

It does what OBS does on the wire: Hello with an authentication challenge when a password
is set, Identify checked (4009 on a wrong password, 4007 for a request before Identify,
4010 for an unsupported RPC version), requests answered with a requestStatus (600 for an
input that does not exist). Every request is recorded with the time it arrived, and
`stop()`/`start()` restart it on the same port as when OBS is closed and opened again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


@dataclass
class Recorded:
    request_type: str
    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeOBS:
    def __init__(self, password: str | None = None, inputs: dict[str, str] | None = None) -> None:
        self.password = password
        # input name -> kind, with its settings
        self.inputs: dict[str, dict[str, Any]] = {
            name: {"kind": kind, "settings": {}}
            for name, kind in (inputs or {"TTS Text": "text_ft2_source_v2", "TTS Audio": "ffmpeg_source"}).items()
        }
        self.requests: list[Recorded] = []
        self.identified = 0
        self.auth_failures = 0
        self.port = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> FakeOBS:
        self._server = await serve(
            self._handle, "127.0.0.1", self.port, subprotocols=["obswebsocket.json"], compression=None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """OBS quits: every client is closed with 1001 (going away)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeOBS:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def texts(self, source: str = "TTS Text") -> list[tuple[float, str]]:
        return [
            (r.at, r.data["inputSettings"]["text"])
            for r in self.requests
            if r.request_type == "SetInputSettings" and r.data.get("inputName") == source
            and "text" in r.data.get("inputSettings", {})
        ]  # fmt: skip

    def of_type(self, request_type: str) -> list[Recorded]:
        return [r for r in self.requests if r.request_type == request_type]

    # -- the protocol ----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        if ws.subprotocol != "obswebsocket.json":
            await ws.close(4000, "Unsupported subprotocol")  # what OBS does without one it knows
            return
        hello: dict[str, Any] = {"obsWebSocketVersion": "5.5.0", "rpcVersion": 1}
        challenge = salt = ""
        if self.password is not None:
            challenge, salt = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
            hello["authentication"] = {"challenge": challenge, "salt": salt}
        try:
            await ws.send(json.dumps({"op": 0, "d": hello}))
            msg = json.loads(await ws.recv())
            if msg.get("op") != 1:
                await ws.close(4007, "You must identify before sending other messages.")
                return
            d = msg.get("d", {})
            if d.get("rpcVersion") != 1:
                await ws.close(4010, "Unsupported RPC version.")
                return
            if self.password is not None:
                secret = base64.b64encode(hashlib.sha256((self.password + salt).encode()).digest()).decode()
                want = base64.b64encode(hashlib.sha256((secret + challenge).encode()).digest()).decode()
                if d.get("authentication") != want:
                    self.auth_failures += 1
                    await ws.close(4009, "Authentication failed.")
                    return
            self.identified += 1
            await ws.send(json.dumps({"op": 2, "d": {"negotiatedRpcVersion": 1}}))
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("op") != 6:
                    continue
                d = msg["d"]
                data = d.get("requestData") or {}
                self.requests.append(Recorded(d["requestType"], data))
                status, response = self._answer(d["requestType"], data)
                out = {"requestType": d["requestType"], "requestId": d["requestId"], "requestStatus": status}
                if response is not None:
                    out["responseData"] = response
                await ws.send(json.dumps({"op": 7, "d": out}))
        except ConnectionClosed:
            pass

    def _answer(self, request_type: str, data: dict[str, Any]) -> tuple[dict[str, Any], dict | None]:
        ok = {"result": True, "code": 100}
        if request_type == "GetVersion":
            return ok, {"obsWebSocketVersion": "5.5.0", "rpcVersion": 1, "obsVersion": "31.0.0"}
        if request_type in ("SetInputSettings", "GetInputSettings", "TriggerMediaInputAction"):
            name = data.get("inputName")
            if name not in self.inputs:
                return {"result": False, "code": 600, "comment": f"No source was found by the name of `{name}`."}, None
            inp = self.inputs[name]
            if request_type == "SetInputSettings":
                if data.get("overlay", True):
                    inp["settings"].update(data.get("inputSettings", {}))
                else:
                    inp["settings"] = dict(data.get("inputSettings", {}))
                return ok, None
            if request_type == "GetInputSettings":
                return ok, {"inputKind": inp["kind"], "inputSettings": inp["settings"]}
            if not data.get("mediaAction", "").startswith("OBS_WEBSOCKET_MEDIA_INPUT_ACTION_"):
                return {"result": False, "code": 402, "comment": "Invalid mediaAction"}, None
            return ok, None
        return {"result": False, "code": 204, "comment": f"Your request type `{request_type}` is not valid."}, None
