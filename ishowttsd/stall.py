"""Watching the event loop from outside it: no plugin can freeze the daemon.

Everything the daemon does between two awaits runs on one event loop; a plugin that spins or
blocks there (a `while True` without an await, a blocking call) freezes speech, the control
socket and the signal handlers at once. A task on the loop stamps a heartbeat; a thread
outside the loop watches it:

- past ``[daemon] stall_warn_s`` it logs, once per stall, the stack the loop is stuck in and the
  plugin that code belongs to; the stall is published (``loop.stalled``) and shown by ``health``
  once the loop runs again;
- past ``[daemon] stall_exit_s`` it logs the stack and ends the process (exit status 70), so
  systemd restarts it (``Restart=on-failure``). The systemd watchdog is fed from the loop itself
  (``sdnotify.py``), so a stalled loop can never keep petting it either;
- a SIGTERM or SIGINT that the stalled loop cannot act on ends the process after
  ``[daemon] stop_timeout_s`` (under the unit's ``TimeoutStopSec``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable

import anyio

log = logging.getLogger("ishowttsd.stall")

EX_SOFTWARE = 70  # sysexits.h: an internal error; systemd restarts it (Restart=on-failure)
_BEAT_S = 0.1


class LoopWatch:
    """The heartbeat of the event loop, watched by a thread (see the module docstring).

    `plugin_of(module_name)` names the plugin a module belongs to, or None.
    """

    def __init__(self, warn_s: float, exit_s: float, stop_s: float, plugin_of: Callable[[str], str | None],
                 events=None, clock: Callable[[], float] = time.monotonic,
                 end: Callable[[int], Any] = os._exit) -> None:  # fmt: skip
        self.warn_s, self.exit_s, self.stop_s = warn_s, exit_s, stop_s
        self.plugin_of = plugin_of
        self.events = events
        self.clock = clock
        self.end = end
        self.beat = clock()
        self.stalls: deque[dict[str, Any]] = deque(maxlen=20)  # recent stalls, newest last
        self._current: dict[str, Any] | None = None  # the stall in progress (the watcher writes it)
        self._finished: deque[dict[str, Any]] = deque()  # stalls over, for the loop to publish
        self._term_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- on the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Stamp the heartbeat and publish stalls that ended; starts the watcher thread."""
        self.beat = self.clock()
        watcher = threading.Thread(target=self._watch, name="ishowttsd-loop-watch", daemon=True)
        watcher.start()
        try:
            while True:
                self.beat = self.clock()
                with self._lock:
                    done = list(self._finished)
                    self._finished.clear()
                for stall in done:
                    if self.events is not None:
                        self.events.publish("loop.stalled", seconds=stall["seconds"], plugin=stall["plugin"],
                                            where=stall["where"])  # fmt: skip
                await anyio.sleep(_BEAT_S)
        finally:
            self._stop.set()

    def term_requested(self, signum: int = 0, _frame: Any = None) -> None:
        """A signal handler: the daemon was asked to stop (the loop may not be able to)."""
        if self._term_at is None:
            self._term_at = self.clock()

    def recent(self, within_s: float) -> list[dict[str, Any]]:
        """Stalls that ended within the last `within_s` seconds, and the one in progress."""
        now = self.clock()
        with self._lock:
            out = [s for s in self.stalls if now - s["ended"] <= within_s]
            if self._current is not None:
                out.append(dict(self._current, seconds=round(now - self._current["started"], 1), ended=None))
        return out

    # -- off the loop -------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(_BEAT_S):
            self.check()

    def check(self) -> None:
        """One look at the heartbeat (the watcher thread calls this every tenth of a second)."""
        now = self.clock()
        lag = now - self.beat
        with self._lock:
            current = self._current
        if lag > self.warn_s and current is None:
            plugin, where, stack = self._stuck_in()
            current = {"started": self.beat, "plugin": plugin, "where": where}
            with self._lock:
                self._current = current
            log.warning("the event loop has been blocked for %.1f s by %s, at %s; speech and the control socket wait "
                        "until it lets go.\n%s", lag, f"plugin {plugin}" if plugin else "code that is not a plugin",
                        where, stack)  # fmt: skip
        elif current is not None and lag <= self.warn_s:
            stall = dict(current, seconds=round(self.beat - current["started"], 1), ended=now)
            with self._lock:
                self._current = None
                self.stalls.append(stall)
                self._finished.append(stall)
            log.warning("the event loop runs again after %.1f s blocked by %s", stall["seconds"], stall["plugin"] or "unknown code")
        if lag > self.exit_s:
            self._give_up(f"the event loop has been blocked for {lag:.0f} s (over [daemon] stall_exit_s = {self.exit_s:g}); "
                          "exiting so that systemd restarts the daemon")  # fmt: skip
        elif self._term_at is not None and now - self._term_at > self.stop_s:
            self._give_up(f"asked to stop {now - self._term_at:.0f} s ago, but the event loop is blocked; exiting without "
                          "the usual clean-up (owed speech stays in the journal)")  # fmt: skip

    def _give_up(self, why: str) -> None:
        plugin, where, stack = self._stuck_in()
        log.critical("%s; it was stuck in %s, at %s.\n%s", why, f"plugin {plugin}" if plugin else "code that is not a plugin",
                     where, stack)  # fmt: skip
        for h in logging.getLogger().handlers:
            try:
                h.flush()
            except Exception:
                pass
        self.end(EX_SOFTWARE)

    def _stuck_in(self) -> tuple[str | None, str, str]:
        """(the plugin, where, the stack) the main thread is running now."""
        frame = sys._current_frames().get(threading.main_thread().ident)
        if frame is None:
            return None, "?", ""
        stack = traceback.extract_stack(frame)
        plugin, where = None, f"{stack[-1].filename}:{stack[-1].lineno}" if stack else "?"
        f = frame
        while f is not None:  # the innermost frame that belongs to a plugin
            plugin = self.plugin_of(str(f.f_globals.get("__name__", "")))
            if plugin:
                where = f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
                break
            f = f.f_back
        return plugin, where, "".join(traceback.format_list(stack[-12:])).rstrip()
