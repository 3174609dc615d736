"""The sources that run now: each in its own task, so the operator can stop one, start it
again, or add a Bilibili room or Twitch channel for this run (the config file is untouched).

A stopped source is closed; starting it again builds a fresh one from the same settings, so
it reconnects from scratch. `sources` is one list shared with the API and health: it is
changed in place.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import anyio
from anyio.abc import TaskGroup

from ishowttsd.source import Source

log = logging.getLogger("ishowttsd.lineup")


class Lineup:
    """Runs the sources; `stop`, `start` and `add` change them while the daemon runs."""

    def __init__(self, sources: list[Source], build: Callable[[type, Any], Source]) -> None:
        self.sources = sources
        self._build = build  # (class, settings) -> a new source with the daemon's context
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._done: dict[str, anyio.Event] = {}
        self.finished: set[str] = set()  # names of sources whose run() has returned or failed
        self._tg: TaskGroup | None = None

    def get(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)

    def running(self, name: str) -> bool:
        return name in self._scopes

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for src in self.sources:
                self._launch(src)
            task_status.started()
            await anyio.sleep_forever()

    def _launch(self, src: Source) -> None:
        self.finished.discard(src.name)
        self._done[src.name] = anyio.Event()
        scope = anyio.CancelScope()
        self._scopes[src.name] = scope
        assert self._tg is not None, "the lineup is not running"
        self._tg.start_soon(self._run, src, scope)

    async def _run(self, src: Source, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                await src.run()
                if src.finite and src.state not in ("finished", "failed"):
                    src.set_state("finished")
        except Exception as e:  # a broken source is reported, never fatal
            log.exception("source %s crashed", src.name)
            src.set_state("failed", "crashed; see the log", error=f"{type(e).__name__}: {e}")
        finally:
            if self._scopes.get(src.name) is scope:
                del self._scopes[src.name]
            self.finished.add(src.name)
            self._done[src.name].set()

    async def stop(self, name: str) -> Source:
        """Stop a running source and close it. KeyError if there is none; ValueError if stopped."""
        src = self.get(name)
        if src is None:
            raise KeyError(name)
        scope = self._scopes.get(name)
        if scope is None:
            raise ValueError(f"source {name!r} is not running ({src.state})")
        scope.cancel()
        await self._done[name].wait()
        with anyio.move_on_after(3, shield=True):
            try:
                await src.close()
            except Exception as e:
                log.warning("closing %s failed: %s", name, e)
        src.set_state("stopped", "stopped by the operator")
        return src

    def start(self, name: str) -> Source:
        """Start a stopped (or finished) source again, as a fresh instance of the same settings."""
        old = self.get(name)
        if old is None:
            raise KeyError(name)
        if self.running(name):
            raise ValueError(f"source {name!r} is already running ({old.state})")
        src = self._build(type(old), old.settings)
        self.sources[self.sources.index(old)] = src
        self._launch(src)
        return src

    def add(self, cls: type, settings: Any) -> Source:
        """Add and start a source for this run. ValueError if its name is taken."""
        src = self._build(cls, settings)
        if self.get(src.name) is not None:
            raise ValueError(f"a source named {src.name!r} exists; give the new one another `name`")
        self.sources.append(src)
        self._launch(src)
        return src
