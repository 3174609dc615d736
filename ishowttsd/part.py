"""What sources and sinks share: their table's common keys, a name, a state that `status` and
health show, and counters."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ishowttsd.events import EventBus


class PartSettings(BaseModel):
    """Keys every `[[sources]]` and `[[sinks]]` table has; a plugin's Settings subclass adds its
    own (as `SourceSettings` / `SinkSettings`). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    type: str
    name: str | None = None
    enabled: bool = True


class Part:
    """A named, stateful piece of the pipeline, built from its config table and the context the
    daemon hands over (a SourceContext or SinkContext); `role` names its events ("source.state")."""

    role: ClassVar[str]
    type: ClassVar[str]

    def __init__(self, settings: PartSettings, ctx: Any) -> None:
        self.settings = settings
        self.ctx = ctx
        self.name = settings.name or settings.type
        self.log = logging.getLogger(f"ishowttsd.{self.role}.{self.name}")
        self.state = "starting"
        self.detail = ""
        self.last_error: str | None = None
        self.counters: Counter[str] = Counter()
        self._events: EventBus = ctx.events

    def set_state(self, state: str, detail: str = "", error: str | None = None) -> None:
        """Report a state (connected, backoff, down, ok, error...) with a detail and an error."""
        if error:
            self.last_error = error
        if (state, detail) != (self.state, self.detail):
            self.state, self.detail = state, detail
            fields: dict[str, Any] = {self.role: self.name, "state": state}
            if detail:
                fields["detail"] = detail
            if error:
                fields["error"] = error
            self._events.publish(f"{self.role}.state", **fields)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "state": self.state,
            "detail": self.detail,
            "last_error": self.last_error,
            "counters": dict(self.counters),
        }
