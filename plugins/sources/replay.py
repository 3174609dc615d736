"""Replay source: plays back a JSONL recording of chat, with its timing or a speed factor.

Each line is a message, as in ``ishowttsctl inject``::

    {"t": 1.5, "platform": "bilibili", "kind": "danmaku", "user": {"name": "某人"}, "text": "晚上好"}

``t`` is seconds from the start of the recording. A line ``{"t": 9, "delete": {...}}`` replays a
deletion (fields of :class:`ishowttsd.messages.Deletion`). Malformed lines are reported with
their line number, counted and skipped.
"""

from __future__ import annotations

import json
import time

import anyio
import anyio.lowlevel
from pydantic import Field

from ishowttsd.hookspecs import hookimpl
from ishowttsd.messages import Deletion, Message
from ishowttsd.source import Source, SourceSettings


class ReplaySettings(SourceSettings):
    path: str = Field(description="the JSONL recording; relative to the config file")
    speed: float = Field(default=1.0, gt=0, le=1000, description="2 = twice as fast")
    loop: bool = False
    start_delay: float = Field(default=0.0, ge=0)


class ReplaySource(Source):
    type = "replay"
    Settings = ReplaySettings
    finite = True

    async def run(self) -> None:
        path = self.ctx.config.resolve(self.settings.path)
        try:
            lines = (await anyio.Path(path).read_text(encoding="utf-8")).splitlines()
        except OSError as e:
            self.set_state("failed", f"cannot read {path}", error=e.strerror)
            return
        self.set_state("replaying", str(path))
        await anyio.sleep(self.settings.start_delay)
        while True:
            played = await self._play(lines, str(path))
            if not self.settings.loop:
                break
            if not played:
                self.set_state("failed", f"{path} has no playable lines to loop over")
                return
        self.set_state("finished", f"{self.counters['messages']} messages")

    async def _play(self, lines: list[str], where: str) -> int:
        """Replay the lines once; returns how many were played."""
        start = time.monotonic()
        played = 0
        for n, line in enumerate(lines, 1):
            await anyio.lowlevel.checkpoint()  # a recording of zero delays must not starve the loop
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("a line must be a JSON object")
                t = float(rec.pop("t", 0.0))
                delete = rec.pop("delete", None)
                item = Deletion(**delete) if delete is not None else Message.from_dict(rec)
            except (ValueError, TypeError) as e:
                self.counters["malformed"] += 1
                self.log.warning("%s:%d: skipped a malformed line: %s", where, n, e)
                continue
            wait = start + t / self.settings.speed - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
            if isinstance(item, Deletion):
                self.delete(item)
            else:
                item.received_at = time.time()  # replayed now, so the queue's TTL sees it fresh
                self.emit(item)
            played += 1
        return played


@hookimpl
def ishowtts_register_sources(register):
    register(ReplaySource)
