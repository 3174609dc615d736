"""The real `ishowttsd` as a subprocess, for the live-source end-to-end tests.

It speaks with the embedded espeak engine into a `file` sink; tests read `spoken.jsonl`
and query the control socket with :func:`ishowttsd.control.client_request`. Built on
`tests/daemon_process.py`, with async waits (the fake servers run in the test's event loop).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, Callable

import anyio
from daemon_process import DaemonProcess, spoken_log

from ishowttsd.api import ApiError
from ishowttsd.control import client_request


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def _table(header: str, d: dict[str, Any]) -> str:
    return f"{header}\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in d.items()) + "\n"


class RunningDaemon(DaemonProcess):
    """:class:`DaemonProcess` for tests whose fake servers share the test's event loop: every
    wait here is async, so the fakes keep answering while the daemon starts, runs and stops."""

    def __init__(self, tmp: Path, sources: list[dict[str, Any]], templates: dict[str, str] | None = None,
                 daemon: dict[str, Any] | None = None, moderation: dict[str, Any] | None = None,
                 extra: str = "") -> None:  # fmt: skip
        """`daemon`, `moderation`: more keys of those tables; `extra`: TOML appended (more tables, `[[sinks]]`)."""
        text = _table("[daemon]", {"state_dir": "state", "log_level": "debug", **(daemon or {})})
        text += _table("[engine]", {"default": "espeak", "fallback": "espeak", "warmup": False})
        text += _table("[engine.espeak]", {"rate": 450})
        for s in sources:
            text += _table("[[sources]]", s)
        text += _table("[[sinks]]", {"type": "file", "directory": "out"})
        text += _table("[moderation]", {"max_chars": 200, **(moderation or {})})
        text += _table("[moderation.templates]", templates or {"danmaku": "{user}: {text}"})
        text += extra
        super().__init__(tmp, text, wait_ready=False)
        self.out = self.tmp / "out"

    async def __aenter__(self) -> RunningDaemon:
        self.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ishowttsd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                st = await self.call("status")
                if st["state"] == "running":
                    return self
            except (OSError, ApiError):
                pass
            await anyio.sleep(0.1)
        raise RuntimeError(f"ishowttsd did not become ready:\n{self.log()}")

    async def __aexit__(self, *exc) -> None:
        await self.astop()

    async def astop(self) -> int | None:
        """SIGTERM and wait without blocking the loop (shutdown may call the fakes, e.g. Open Platform `end`)."""
        if self.proc is None or self._log.closed:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with anyio.move_on_after(15):
                while self.proc.poll() is None:
                    await anyio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    async def call(self, method: str, params: dict | None = None) -> Any:
        """A control request, run in a thread so the fakes keep serving."""
        return await anyio.to_thread.run_sync(lambda: client_request(self.socket, method, params, 10.0))

    async def source(self, name: str | None = None) -> dict[str, Any]:
        st = await self.call("status")
        for s in st["sources"]:
            if name is None or s["name"] == name:
                return s
        raise KeyError(name)

    def spoken(self) -> list[dict[str, Any]]:
        return spoken_log(self.out)

    async def until(self, what: str, pred: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = pred()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n--- daemon log tail ---\n{self.log()[-4000:]}")
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the daemon died while waiting for {what}:\n{self.log()[-4000:]}")
            await anyio.sleep(0.05)

    async def wait_spoken(self, text: str, timeout: float = 20.0) -> dict[str, Any]:
        return await self.until(
            f"{text!r} in spoken.jsonl", lambda: next((r for r in self.spoken() if text in r["said"]), None), timeout
        )

    async def wait_state(self, state: str, timeout: float = 20.0, name: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = await self.source(name)
            if s["state"] == state:
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"source state {s['state']!r} ({s['detail']}), wanted {state!r}\n{self.log()[-4000:]}")
            await anyio.sleep(0.05)
