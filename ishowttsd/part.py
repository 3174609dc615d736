"""What sources and sinks share: a name, a state that `status` and health show, and counters."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, ClassVar

from ishowttsd.events import EventBus


class Part:
    """A named, stateful piece of the pipeline; `role` names its events ("source.state")."""

    role: ClassVar[str]
    type: ClassVar[str]

    def __init__(self, name: str, events: EventBus) -> None:
        self.name = name
        self.log = logging.getLogger(f"ishowttsd.{self.role}.{name}")
        self.state = "starting"
        self.detail = ""
        self.last_error: str | None = None
        self.counters: Counter[str] = Counter()
        self._events = events

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
