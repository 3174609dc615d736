"""The durable journal: paid and membership speech survives a crash or a restart.

An SQLite database in WAL mode in the state directory (``$XDG_STATE_HOME/ishowtts/journal.sqlite3``
by default). A paid or membership utterance is written when moderation accepts it (before the
queue sees it) and marked when it ends: spoken, dropped, expired, cut or failed. Each write is
its own committed transaction, so after SIGKILL, a power cut (with ``synchronous = "full"``) or a
restart, what is still ``pending`` is exactly what was accepted and not yet finished:
`recover()` hands those back to be queued again, and reports those whose time-to-live ran out
while the daemon was down instead of reading them hours late.

Spoken means "a sink finished it": the mark is written right after the `spoken` event. An
utterance that was playing when the daemon died is therefore said again after the restart (at
least once, never lost); one that was marked spoken is never said twice.

An utterance recovered `max_attempts` times without ever finishing (say, a text that crashes
the engine each time) is given up as ``failed`` so that it cannot crash-loop the daemon.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ishowttsd.messages import Message, Priority, Utterance

log = logging.getLogger("ishowttsd.journal")

FINAL_STATES = frozenset({"spoken", "dropped", "expired", "cut", "failed"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS utterances (
    key      TEXT PRIMARY KEY,
    state    TEXT NOT NULL DEFAULT 'pending',
    reason   TEXT NOT NULL DEFAULT '',
    priority TEXT NOT NULL,
    text     TEXT NOT NULL,
    voice    TEXT,
    source   TEXT NOT NULL DEFAULT '',
    message  TEXT,
    created  REAL NOT NULL,
    deadline REAL,
    updated  REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS utterances_state ON utterances(state);
"""


class JournalError(Exception):
    """The journal cannot be opened or written: the message says where and what to do."""


@dataclass
class Stale:
    """A journaled utterance whose time-to-live ran out while the daemon was not running."""

    key: str
    text: str
    priority: str
    created: float
    deadline: float
    message: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        m = self.message or {}
        return {
            "key": self.key, "text": self.text, "priority": self.priority,
            "age_s": round(time.time() - self.created, 1), "late_by_s": round(time.time() - self.deadline, 1),
            "platform": m.get("platform"), "kind": m.get("kind"), "user": (m.get("user") or {}).get("name"),
            "message_id": m.get("id"),
        }  # fmt: skip


class Journal:
    """Which paid and membership utterances were accepted and not yet finished."""

    def __init__(self, path: Path, synchronous: str = "full", max_attempts: int = 5) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.max_attempts = max_attempts
        self._db: sqlite3.Connection | None = None
        self._lock: int | None = None
        self._keys: dict[int, str] = {}  # Utterance.id -> row key, for utterances still pending
        self._attempts: dict[int, int] = {}  # Utterance.id -> syntheses started, across restarts
        self.written = 0
        self.error: str | None = None  # the last write failure, until a write succeeds again

    @staticmethod
    def wants(utt: Utterance) -> bool:
        return utt.priority.owed

    def open(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._take_lock()
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute("PRAGMA busy_timeout=2000")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            self._release_lock()
            raise JournalError(
                f"journal {self.path}: cannot open it ({e}); check that the state directory is writable "
                f"or set [journal] path, or [journal] enabled = false to run without one"
            ) from None
        os.chmod(self.path, 0o600)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._release_lock()

    def _take_lock(self) -> None:
        # two daemons on one journal would each say the other's owed speech: one owner at a time
        # (a flock dies with its process, so a SIGKILL never leaves a stale lock behind)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalError(
                f"journal {self.path} is in use by another ishowttsd (pid {owner}); give each daemon its own "
                f"[daemon] state_dir or [journal] path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock = fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        if self._db is None:
            raise JournalError("the journal is not open")
        cur = self._db.execute(sql, args)
        self.written += 1
        return cur

    def _write(self, sql: str, args: tuple = ()) -> bool:
        """A write that must never take speech down: a full disk or a read-only file degrades
        the journal (reported in status and the log) instead of raising into the pipeline."""
        try:
            self._exec(sql, args)
        except (sqlite3.Error, JournalError) as e:
            msg = f"journal write failed ({type(e).__name__}: {e}); paid speech is not protected against a crash until this is fixed"
            if msg != self.error:
                log.error("%s", msg)
            self.error = msg
            return False
        self.error = None
        return True

    # -- the life of one utterance ---------------------------------------------------------------

    def add(self, utt: Utterance) -> str:
        """Journal an accepted utterance; committed before this returns."""
        key = uuid.uuid4().hex
        now = time.time()
        deadline = None if utt.deadline is None else now + (utt.deadline - time.monotonic())
        msg = json.dumps(utt.message.to_dict(), ensure_ascii=False, default=str) if utt.message else None
        if self._write(
            "INSERT INTO utterances (key, priority, text, voice, source, message, created, deadline, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, utt.priority.name.lower(), utt.text, utt.voice, utt.source, msg, utt.created_wall, deadline, now),
        ):
            self._keys[utt.id] = key
        return key

    def tracks(self, utt: Utterance) -> bool:
        return utt.id in self._keys

    def update_text(self, utt: Utterance) -> None:
        """A gift combo grew: the waiting utterance says a new total."""
        key = self._keys.get(utt.id)
        if key is not None:
            self._write("UPDATE utterances SET text = ?, updated = ? WHERE key = ?", (utt.text, time.time(), key))

    def started(self, utt: Utterance) -> int:
        """The speaker starts synthesizing it: one more real attempt. Returns the attempts so far."""
        key = self._keys.get(utt.id)
        if key is None:
            return 0
        self._attempts[utt.id] = self._attempts.get(utt.id, 0) + 1
        self._write("UPDATE utterances SET attempts = attempts + 1, updated = ? WHERE key = ?", (time.time(), key))
        return self._attempts[utt.id]

    def attempts(self, utt: Utterance) -> int:
        return self._attempts.get(utt.id, 0)

    def finish(self, utt: Utterance, state: str, reason: str = "") -> None:
        """Mark the end of an utterance (spoken, dropped, expired, cut, failed); unknown ones are ignored."""
        if state not in FINAL_STATES:
            raise ValueError(f"unknown final state {state!r}")
        key = self._keys.pop(utt.id, None)
        self._attempts.pop(utt.id, None)
        if key is not None:
            self._write(
                "UPDATE utterances SET state = ?, reason = ?, updated = ? WHERE key = ? AND state = 'pending'",
                (state, reason, time.time(), key),
            )

    # -- after a restart --------------------------------------------------------------------------

    def recover(self) -> tuple[list[Utterance], list[Stale], list[Stale]]:
        """What was pending when the daemon stopped: (to queue again, stale, given up).

        Stale and given-up entries are marked finished here, so they are reported only once.
        """
        rows = self._exec(
            "SELECT key, priority, text, voice, source, message, created, deadline, attempts "
            "FROM utterances WHERE state = 'pending' ORDER BY created, rowid"
        ).fetchall()
        now, mono = time.time(), time.monotonic()
        live, stale, given_up = [], [], []
        for key, prio, text, voice, source, msg, created, deadline, attempts in rows:
            mdict = _loads(msg)
            if deadline is not None and deadline < now:
                stale.append(Stale(key, text, prio, created, deadline, mdict))
                self._write("UPDATE utterances SET state='expired', reason='stale_after_restart', updated=? WHERE key=?",
                            (now, key))  # fmt: skip
                continue
            if attempts >= self.max_attempts:  # attempts = syntheses started, not restarts
                given_up.append(Stale(key, text, prio, created, deadline or now, mdict))
                self._write("UPDATE utterances SET state='failed', reason='too_many_attempts', updated=? WHERE key=?",
                            (now, key))  # fmt: skip
                continue
            try:
                priority = Priority.parse(prio)
                message = Message.from_dict(mdict) if mdict else None
            except (ValueError, TypeError) as e:
                log.warning("journal entry %s cannot be read back (%s); giving it up", key, e)
                self._write("UPDATE utterances SET state='failed', reason='unreadable', updated=? WHERE key=?", (now, key))
                continue
            utt = Utterance(
                text=text, priority=priority, voice=voice, source=source or "journal", message=message,
                deadline=None if deadline is None else mono + (deadline - now),
                created=mono - max(0.0, now - created), created_wall=created,
            )  # fmt: skip
            self._keys[utt.id] = key
            self._attempts[utt.id] = attempts
            live.append(utt)
        return live, stale, given_up

    def recent_message_ids(self, since_s: float = 3600.0) -> list[tuple[str, str]]:
        """(platform, message id) of recent entries, so a source that replays them is not read twice."""
        rows = self._exec(
            "SELECT message FROM utterances WHERE created > ? AND message IS NOT NULL", (time.time() - since_s,)
        ).fetchall()
        out = []
        for (msg,) in rows:
            d = _loads(msg) or {}
            if d.get("id") and d.get("platform"):
                out.append((str(d["platform"]), str(d["id"])))
        return out

    def prune(self, keep_days: float) -> int:
        cur = self._exec(
            "DELETE FROM utterances WHERE state != 'pending' AND updated < ?", (time.time() - keep_days * 86400,)
        )
        return cur.rowcount

    def counts(self) -> dict[str, int]:
        try:
            rows = self._exec("SELECT state, COUNT(*) FROM utterances GROUP BY state").fetchall()
        except (sqlite3.Error, JournalError):
            return {}
        return {state: n for state, n in rows}

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "pending": len(self._keys), "writes": self.written, "error": self.error}


def _loads(s: str | None) -> dict[str, Any] | None:
    if not s:
        return None
    try:
        d = json.loads(s)
    except json.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None
