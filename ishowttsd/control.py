"""The control socket: newline-delimited JSON requests and responses over a Unix socket.

Request ``{"id": 1, "method": "status", "params": {}}`` gets ``{"id": 1, "result": ...}`` or
``{"id": 1, "error": {"code": "...", "message": "..."}}``. A streaming method (`events.watch`)
answers with a snapshot and then one event object per line until the client hangs up.
Works with ``socat - UNIX-CONNECT:path``. Bad input gets an error; the daemon keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
from anyio.abc import SocketAttribute
from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger("ishowttsd.control")

MAX_LINE = 64 * 1024
MAX_CLIENTS = 512


class ControlError(Exception):
    """An error answered to the client: a stable code and advice in the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Params(BaseModel):
    """Base for a method's parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class NoParams(Params):
    pass


@dataclass
class Method:
    handler: Callable[..., Awaitable[Any]]
    params: type[Params]
    stream: bool = False  # handler returns (snapshot, async iterator of events)


class ControlServer:
    def __init__(self, path: Path, max_line: int = MAX_LINE) -> None:
        self.path = path
        self.max_line = max_line
        self.methods: dict[str, Method] = {}
        self.clients = 0
        self.served = 0

    def method(self, name: str, handler, params: type[Params] = NoParams, stream: bool = False) -> None:
        self.methods[name] = Method(handler, params, stream)

    async def bind(self):
        """Create the socket (mode 0660) after checking that no other daemon owns it."""
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if await _alive(self.path):
                raise RuntimeError(
                    f"another ishowttsd is already listening on {self.path}; stop it first "
                    f"(ishowttsctl --socket {self.path} status) or pass a different --socket"
                )
            self.path.unlink()  # a stale socket from a crash
        listener = await anyio.create_unix_listener(self.path, mode=0o660)
        log.info("control socket listening path=%s", self.path)
        return listener

    async def serve(self, listener) -> None:
        async with listener:
            await listener.serve(self._handle)

    def unlink(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _handle(self, stream) -> None:
        uid = _peer_uid(stream)
        if self.clients >= MAX_CLIENTS:
            log.warning("control client refused uid=%s reason=too_many_clients", uid)
            with anyio.move_on_after(1):
                await stream.send(_line({"id": None, "error": {"code": "busy", "message": "too many control clients; try again"}}))
            await stream.aclose()
            return
        self.clients += 1
        log.debug("control client connected uid=%s", uid)
        try:
            async with stream:
                async for raw in _lines(stream, self.max_line):
                    if raw is None:
                        await stream.send(_line(_error(None, "line_too_long", f"request line longer than {self.max_line} bytes; split it")))
                        continue
                    if not raw.strip():
                        continue
                    keep_going = await self._dispatch(stream, raw, uid)
                    if not keep_going:
                        break
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, ConnectionError):
            pass  # the client went away; nothing to clean up but the count
        except Exception:  # one client must never end the listener for everyone
            log.exception("control client handler failed uid=%s", uid)
        finally:
            self.clients -= 1

    async def _dispatch(self, stream, raw: bytes, uid) -> bool:
        try:
            req = json.loads(raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, absurd nesting or numbers
            msg = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            await stream.send(_line(_error(None, "parse_error", f"not valid JSON: {msg}")))
            return True
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            rid = req.get("id") if isinstance(req, dict) else None
            await stream.send(_line(_error(rid, "invalid_request", 'send {"id": 1, "method": "status", "params": {}}')))
            return True
        rid = req.get("id")
        name = req["method"]
        m = self.methods.get(name)
        if m is None:
            await stream.send(_line(_error(rid, "method_not_found", f"no method {name!r}; known: {sorted(self.methods)}")))
            return True
        raw_params = req.get("params") or {}
        if not isinstance(raw_params, dict):
            await stream.send(_line(_error(rid, "invalid_params", "params must be an object")))
            return True
        try:
            params = m.params.model_validate(raw_params)
        except ValidationError as e:
            msg = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'params'}: {err['msg']}" for err in e.errors())
            await stream.send(_line(_error(rid, "invalid_params", msg)))
            return True
        if name not in ("status", "events.watch"):
            log.info("control request method=%s uid=%s", name, uid)
        self.served += 1
        try:
            result = await m.handler(params)
        except ControlError as e:
            await stream.send(_line(_error(rid, e.code, e.message)))
            return True
        except Exception as e:
            log.exception("control method %s failed", name)
            await stream.send(_line(_error(rid, "internal_error", f"{type(e).__name__}: {e}")))
            return True
        if not m.stream:
            await stream.send(_line({"id": rid, "result": result}))
            return True
        snapshot, events = result
        await stream.send(_line({"id": rid, "result": snapshot}))
        await _pump(stream, events)
        return False


async def _pump(stream, events: AsyncIterator[dict]) -> None:
    """Send events until the client hangs up (we notice on the next send or on EOF)."""
    async with anyio.create_task_group() as tg:

        async def watch_eof() -> None:
            try:
                while await stream.receive(4096):
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch_eof)
        try:
            async for ev in events:
                await stream.send(_line(ev))
        finally:
            tg.cancel_scope.cancel()


async def _lines(stream, max_line: int) -> AsyncIterator[bytes | None]:
    """Yield complete lines; None once for each line that was too long (then skipped)."""
    buf = bytearray()
    discarding = False
    while True:
        try:
            data = await stream.receive(65536)
        except anyio.EndOfStream:
            return
        buf += data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > max_line:
                    if not discarding:
                        discarding = True
                        yield None
                    buf.clear()
                break
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            if discarding:
                discarding = False
                continue
            if len(line) > max_line:
                yield None
                continue
            yield line


def _error(rid, code: str, message: str) -> dict:
    return {"id": rid, "error": {"code": code, "message": message}}


def _line(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode()


def _peer_uid(stream) -> int | None:
    try:
        sock = stream.extra(SocketAttribute.raw_socket)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid
    except (OSError, AttributeError, anyio.TypedAttributeLookupError):
        return None


async def _alive(path: Path) -> bool:
    try:
        with anyio.fail_after(1):
            s = await anyio.connect_unix(path)
            await s.aclose()
        return True
    except (OSError, TimeoutError):
        return False


def client_request(path: Path | str, method: str, params: dict | None = None, timeout: float = 30.0) -> Any:
    """A blocking one-shot request, for ishowttsctl and tests. Raises ControlError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(path))
        s.sendall(_line({"id": 1, "method": method, "params": params or {}}))
        f = s.makefile("rb")
        line = f.readline()
    if not line:
        raise ControlError("no_answer", "the daemon closed the connection without answering")
    resp = json.loads(line)
    if "error" in resp:
        raise ControlError(resp["error"]["code"], resp["error"]["message"])
    return resp["result"]
