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
import stat
import struct
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
from anyio.abc import SocketAttribute

from ishowttsd.api import Api, ApiError

log = logging.getLogger("ishowttsd.control")

MAX_LINE = 64 * 1024
MAX_CLIENTS = 512
# connections kept for the daemon's own user (and root) when other users hold the rest
OWNER_SLOTS = 16


class UnsafeSocket(Exception):
    """The socket's folder could let another user replace the socket: refused, with advice."""


def check_socket_folder(path: Path, create: bool = False) -> None:
    """Refuse a socket whose folder another user could write (they could put their own socket
    there, read what the operator says and answer in the daemon's name).

    The fallback folder (``/tmp/ishowtts-<uid>``, when there is no ``$XDG_RUNTIME_DIR``) must be
    this user's and private (0700); any other folder must be writable by its owner only (or be
    sticky, like /tmp) and belong to this user, root, or the socket's owner. With `create`, a
    missing folder is created private (0700; 0750 under systemd's runtime folder).
    """
    folder = path.parent
    fallback = folder == fallback_socket_folder()
    if not folder.exists():
        if not create:
            return
        folder.mkdir(mode=0o700 if fallback else 0o750, parents=True, exist_ok=True)
    st = folder.lstat()
    me = os.getuid()
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeSocket(f"{folder} is a symbolic link; the control socket's folder must be a real folder. "
                           f"Remove it (rm {folder}) and start again, or pass --socket in a folder of your own")  # fmt: skip
    if fallback and (st.st_uid != me or st.st_mode & 0o077):
        raise UnsafeSocket(
            f"{folder} belongs to uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: another user could have "
            f"made it to take the control socket. It must be yours and private (0700). Remove it if it is not "
            f"yours ({'sudo ' if st.st_uid != me else ''}rm -r {folder}), set XDG_RUNTIME_DIR, or pass --socket PATH"
        )  # fmt: skip
    sticky = bool(st.st_mode & stat.S_ISVTX)
    owners = {0, me}
    try:
        owners.add(path.lstat().st_uid)
    except OSError:
        pass
    if (st.st_mode & 0o022 and not sticky) or st.st_uid not in owners:
        raise UnsafeSocket(
            f"{folder} (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) can be written by other users, who could "
            f"replace the control socket; use a folder only its owner can write (chmod go-w {folder}) or another --socket"
        )  # fmt: skip


def fallback_socket_folder() -> Path:
    return Path(f"/tmp/ishowtts-{os.getuid()}")


class ControlServer:
    """The Unix-socket front door: JSON lines in, the API's answers out."""

    def __init__(self, path: Path, max_line: int = MAX_LINE, idle_timeout: float = 60.0) -> None:
        self.path = path
        self.max_line = max_line
        self.api: Api | None = None  # set by the daemon once its parts are built
        self.idle_timeout = idle_timeout  # a connection that sends no request for this long is closed
        self.clients = 0
        self.served = 0

    async def bind(self):
        """Create the socket (mode 0660) after checking its folder and that no other daemon owns it."""
        try:
            check_socket_folder(self.path, create=True)
        except UnsafeSocket as e:
            raise RuntimeError(str(e)) from None
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise RuntimeError(
                    f"{self.path} exists and is not a socket; it is left alone. Pass another --socket, or remove "
                    f"that file yourself if it is not needed"
                )  # fmt: skip
            if await _alive(self.path):
                raise RuntimeError(
                    f"another ishowttsd is already listening on {self.path}; stop it first "
                    f"(ishowttsctl --socket {self.path} status) or pass a different --socket"
                )
            self.path.unlink()  # a stale socket from a crash: the only thing ever removed
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
        owner = uid in (0, os.getuid())
        if self.clients >= MAX_CLIENTS + (OWNER_SLOTS if owner else 0):
            log.warning("control client refused uid=%s reason=too_many_clients", uid)
            with anyio.move_on_after(1):
                await stream.send(_line({"id": None, "error": {"code": "busy", "message": "too many control clients; try again"}}))
            await stream.aclose()
            return
        self.clients += 1
        log.debug("control client connected uid=%s", uid)
        try:
            async with stream:
                async for raw in _lines(stream, self.max_line, self.idle_timeout):
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
        except TimeoutError:
            log.info("control client closed uid=%s reason=idle for %g s", uid, self.idle_timeout)
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


async def _lines(stream, max_line: int, idle: float) -> AsyncIterator[bytes | None]:
    """Yield complete lines; None once for each line that was too long (then skipped).
    Raises TimeoutError when no complete request arrives for `idle` seconds."""
    buf = bytearray()
    discarding = False
    while True:
        try:
            with anyio.fail_after(idle):
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
        with s.makefile("rb") as f:  # closed here: an error reply kept in a traceback holds no socket
            line = f.readline()
    if not line:
        raise ConnectionError("the daemon closed the connection without answering")
    resp = json.loads(line)
    if "error" in resp:
        raise ApiError(resp["error"]["code"], resp["error"]["message"])
    return resp["result"]
