"""The event catalogue: every published event is declared, and the README shows the catalogue."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from ishowttsd.events import CATALOGUE, EventBus, UndeclaredEvent, catalogue_markdown, format_fields

REPO = Path(__file__).resolve().parent.parent
_PUBLISH = re.compile(r"""publish\(\s*["']([a-z_.]+)["']""")


def _published_names() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for root in ("ishowttsd", "plugins"):
        for path in (REPO / root).rglob("*.py"):
            for name in _PUBLISH.findall(path.read_text(encoding="utf-8")):
                found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def test_every_event_published_in_the_code_is_declared():
    names = _published_names()
    assert len(names) > 25, "the scan found too few publish() calls: did the call style change?"
    undeclared = {n: where for n, where in names.items() if n not in CATALOGUE}
    assert not undeclared, f"declare these in ishowttsd/events.py: {undeclared}"


def test_part_states_are_declared():
    # sources and sinks publish "<role>.state" (ishowttsd/part.py)
    from ishowttsd.sink import Sink
    from ishowttsd.source import Source

    for cls in (Source, Sink):
        assert f"{cls.role}.state" in CATALOGUE


def test_strict_bus_refuses_undeclared_events_and_fields():
    bus = EventBus(strict=True)
    with pytest.raises(UndeclaredEvent, match="not declared"):
        bus.publish("spokne", id=1)
    with pytest.raises(UndeclaredEvent, match="undeclared field"):
        bus.publish("paused", who="me")
    bus.publish("paused")
    bus.publish("telemetry", anything="goes")  # an open event


def test_lenient_bus_logs_once_and_still_publishes(caplog):
    bus = EventBus(strict=False)
    with caplog.at_level(logging.ERROR, logger="ishowttsd.events"):
        bus.publish("nope", x=1)
        bus.publish("nope", x=2)
    assert bus.counts["nope"] == 2
    assert sum("not declared" in r.message for r in caplog.records) == 1


def test_failures_log_as_warnings_or_errors(caplog):
    bus = EventBus(strict=True)
    with caplog.at_level(logging.DEBUG, logger="ishowttsd.events"):
        bus.publish("engine.failed", engine="f5", error="missing checkpoint")
        bus.publish("source.state", source="b", state="backoff", detail="x")
        bus.publish("source.state", source="b", state="connected")
        bus.publish("dropped", id=1, priority="paid", text="t", reason="queue_full")
        bus.publish("dropped", id=2, priority="normal", text="t", reason="queue_full")
    levels = [(r.getMessage().split()[0], r.levelno) for r in caplog.records]
    assert levels == [("engine.failed", logging.ERROR), ("source.state", logging.WARNING),
                      ("source.state", logging.INFO), ("dropped", logging.WARNING), ("dropped", logging.INFO)]  # fmt: skip


def test_log_fields_cannot_forge_lines_or_escapes():
    line = format_fields({"user": "evil\rINFO fake", "text": "a\x1b[31mred\x9b", "ok": "plain"})
    assert "\r" not in line and "\x1b" not in line and "\x9b" not in line
    assert "\\u001b" in line and "\\u009b" in line and "ok=plain" in line


def test_readme_shows_the_catalogue():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert catalogue_markdown() in readme, "regenerate the README's event table: python -m ishowttsd.events --update README.md"
