"""The three health levels, defined once: the checks report them, the metrics export them and
`ishowttsctl health` exits with them (the monitoring-plugin convention: 0 ok, 1 warn, 2 fail)."""

from __future__ import annotations

import enum
from typing import Iterable


class Level(str, enum.Enum):
    """ok < warn < fail. A member equals its name as a string (`Level.warn == "warn"`), so JSON
    and events carry plain strings; `code` is the number for exit statuses and metrics."""

    ok = "ok"
    warn = "warn"
    fail = "fail"

    @property
    def code(self) -> int:
        """0 ok, 1 warn, 2 fail: the exit status of `ishowttsctl health` and the metrics' value."""
        return _ORDER.index(self.value)

    def __str__(self) -> str:
        return self.value

    # ordered by severity, not alphabetically as plain strings would be
    def __lt__(self, other: object) -> bool:
        return self.code < Level(other).code

    def __le__(self, other: object) -> bool:
        return self.code <= Level(other).code

    def __gt__(self, other: object) -> bool:
        return self.code > Level(other).code

    def __ge__(self, other: object) -> bool:
        return self.code >= Level(other).code


_ORDER = ("ok", "warn", "fail")


def worst(levels: Iterable[str]) -> Level:
    """The most severe of `levels` (plain strings or Levels); ok when there are none."""
    return max((Level(x) for x in levels), default=Level.ok)
