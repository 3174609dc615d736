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
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
from anyio.abc import SocketAttribute

from ishowttsd.api import Api, ApiError

log = logging.getLogger("ishowttsd.control")

MAX_LINE = 64 * 1024
MAX_CLIENTS = 512


class ControlServer:
    """The Unix-socket front door: JSON lines in, the API's answers out."""

    def __init__(self, path: Path, max_line: int = MAX_LINE) -> None:
        self.path = path
        self.max_line = max_line
        self.api: Api | None = None  # set by the daemon once its parts are built
        self.clients = 0
        self.served = 0

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
            req = parse_json(raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, absurd nesting, non-finite numbers
            msg = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            await stream.send(_line(_error(None, "parse_error", f"not valid JSON: {msg}")))
            return True
        rid = req.get("id") if isinstance(req, dict) else None
        if isinstance(rid, bool) or not isinstance(rid, (int, str, type(None))) or (isinstance(rid, str) and len(rid) > 200):
            await stream.send(_line(_error(None, "invalid_request", "id must be an integer, a short string or null")))
            return True
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            await stream.send(_line(_error(rid, "invalid_request", 'send {"id": 1, "method": "status", "params": {}}')))
            return True
        name = req["method"]
        api = self.api
        if api is None:
            await stream.send(_line(_error(rid, "not_ready", "the daemon is still starting; try again in a moment")))
            return True
        v = api.verbs.get(name)
        log.info("control request method=%s uid=%s", name if v else "(unknown)", uid)
        self.served += 1
        try:
            result = await api.call(name, req.get("params"))
        except ApiError as e:
            await stream.send(_line(_error(rid, e.code, e.message)))
            return True
        except Exception as e:
            log.exception("control method %s failed", name)
            await stream.send(_line(_error(rid, "internal_error", f"{type(e).__name__}: {e}")))
            return True
        if not v.stream:
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


def _finite(text: str) -> float:
    x = float(text)
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is too large for a finite double")
    return x


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON: NaN, Infinity and numbers that overflow a double are refused (they are
    not JSON, and a request id or an amount must never be infinite)."""
    return json.loads(raw, parse_float=_finite, parse_constant=_no_constant)


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
    """A blocking one-shot request, for ishowttsctl and tests. Raises ApiError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(path))
        s.sendall(_line({"id": 1, "method": method, "params": params or {}}))
        f = s.makefile("rb")
        line = f.readline()
    if not line:
        raise ConnectionError("the daemon closed the connection without answering")
    resp = json.loads(line)
    if "error" in resp:
        raise ApiError(resp["error"]["code"], resp["error"]["message"])
    return resp["result"]
