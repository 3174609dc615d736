"""What a source plugin is: something that turns a platform's chat into Messages."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from ishowttsd.config import Config
from ishowttsd.events import EventBus
from ishowttsd.messages import Deletion, Message
from ishowttsd.part import Part, PartSettings


# the keys every table has; a source's Settings subclass adds its own
SourceSettings = PartSettings


@dataclass
class SourceContext:
    """What the daemon hands a source: where messages go, the event bus, the config."""

    on_message: Callable[[Source, Message], None]
    on_deletion: Callable[[Source, Deletion], None]
    events: EventBus
    config: Config
    state_dir: Path


class Source(Part):
    """Base class for sources. Subclasses set `type`, maybe `Settings`, and write `run()`.

    `run()` runs until cancelled (a live source hands its session to
    :class:`ishowttsd.reconnect.Reconnector`, which reconnects with backoff and reports the
    connection state) or returns when a finite source is done (set `finite = True`). It calls
    :meth:`emit` for each message and :meth:`delete` for each deletion; both are cheap and never
    block. It reports its state with :meth:`set_state` so `status` and health can show it.
    """

    role = "source"
    type: ClassVar[str]
    Settings: ClassVar[type[SourceSettings]] = SourceSettings
    finite: ClassVar[bool] = False

    def __init__(self, settings: SourceSettings, ctx: SourceContext) -> None:
        super().__init__(settings, ctx)
        self.ctx: SourceContext = ctx
        self.last_message_at: float | None = None

    async def run(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Called once at shutdown after `run()` was cancelled or returned."""

    def emit(self, message: Message) -> None:
        self.counters["messages"] += 1
        self.last_message_at = time.time()
        self.ctx.on_message(self, message)

    def delete(self, deletion: Deletion) -> None:
        self.counters["deletions"] += 1
        self.ctx.on_deletion(self, deletion)

    def set_state(self, state: str, detail: str = "", error: str | None = None) -> None:
        """Report a connection state: connecting, connected, backoff, down, finished..."""
        if error:
            self.counters["errors"] += 1
        super().set_state(state, detail, error)

    def status(self) -> dict[str, Any]:
        since = None if self.last_message_at is None else round(time.time() - self.last_message_at, 1)
        return {**super().status(), "seconds_since_last_message": since}
