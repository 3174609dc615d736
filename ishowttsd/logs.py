"""Logging for a daemon: one line per event, at a level journald understands.

Under systemd, stderr is a journal stream (``$JOURNAL_STREAM`` names its device and inode):
each line then starts with a syslog priority prefix (``<4>`` for a warning), which journald
turns into the entry's priority, so ``journalctl -p warning -u ishowttsd`` shows failures,
fallbacks and regressions. Journald stamps the time itself; elsewhere each line carries it.
Every line is made printable: a control character from chat (CR, ESC) is written as an escape
and cannot forge a line or a terminal sequence.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from ishowttsd.events import escape

# syslog priorities (sd-daemon(3)): what journald reads from a "<N>" prefix
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between the named ones round down)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def stderr_is_journal(stream: TextIO = sys.stderr, env: dict[str, str] | None = None) -> bool:
    """True when `stream` is the journal stream systemd connected (`$JOURNAL_STREAM`)."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return bool(dev and ino) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


class Formatter(logging.Formatter):
    """One printable line per record; with a `<N>` priority prefix for the journal."""

    def __init__(self, journal: bool) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s" if journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # a traceback stays several lines (journald keeps them as one entry's continuation)
        lines = [escape(line) for line in text.split("\n")]
        if self.journal:
            lines = [f"<{priority(record.levelno)}>{line}" for line in lines]
        return "\n".join(lines)


def setup_logging(level: str, stream: TextIO = sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(Formatter(journal=stderr_is_journal(stream)))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
