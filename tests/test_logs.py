"""Log lines under journald carry their priority; chat text cannot forge lines; tables line up."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from daemon_process import REPO

from ishowttsd.ctl import _table, width
from ishowttsd.logs import Formatter, priority, stderr_is_journal


def test_priorities_are_syslog_levels():
    assert [priority(x) for x in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)] == [7, 6, 4, 3, 2]


def test_journal_stream_is_recognised_by_device_and_inode(tmp_path):
    with open(tmp_path / "err", "w") as f:
        st = os.fstat(f.fileno())
        assert stderr_is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stderr_is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stderr_is_journal(f, {})


def test_formatter_prefixes_priority_and_escapes_control_characters():
    rec = logging.LogRecord("ishowttsd.x", logging.WARNING, __file__, 1, "user %s said %s", ("evil\r\x1b[2J", "hi"), None)
    line = Formatter(journal=True).format(rec)
    assert line.startswith("<4>WARNING ishowttsd.x: ") and "\r" not in line and "\x1b" not in line
    assert "\\u000d" in line and "\\u001b" in line
    assert not Formatter(journal=False).format(rec).startswith("<")


def test_daemon_under_journald_logs_failures_as_warnings(tmp_path):
    # a file sink whose folder cannot exist: its start fails, which must not read as INFO in the journal
    cfg = tmp_path / "d.toml"
    cfg.write_text('[engine]\nwarmup = false\n[[sinks]]\ntype = "file"\ndirectory = "/proc/no/such/dir"\n')
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        st = os.fstat(f.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        p = subprocess.Popen([sys.executable, "-m", "ishowttsd", "--config", str(cfg), "--socket", str(tmp_path / "s")],
                             stderr=f, stdout=subprocess.DEVNULL, env=env, cwd=REPO)  # fmt: skip
        try:
            import time

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and b"ready " not in err.read_bytes():
                time.sleep(0.1)
        finally:
            p.terminate()
            p.wait(15)
    lines = err.read_text().splitlines()
    assert all(line.startswith("<") for line in lines), lines[:5]
    sink = [line for line in lines if "sink.state" in line and "state=error" in line]
    assert sink and sink[0].startswith("<4>WARNING"), lines
    assert any(line.startswith("<6>INFO") and " ready " in line for line in lines)


def test_tables_pad_by_display_width():
    rows = [{"user": "小明", "text": "主播晚上好"}, {"user": "alice", "text": "hi"}]
    lines = _table(rows, ["user", "text"]).splitlines()
    # the TEXT column starts in the same terminal column on every line
    starts = [width(line[: line.index(t)]) for line, t in zip(lines, ["TEXT", "主播晚上好", "hi"])]
    assert len(set(starts)) == 1, lines
    assert width("小明") == 4 and width("alice") == 5


def test_long_chinese_cells_are_cut_by_columns():
    out = _table([{"text": "长" * 100}], ["text"]).splitlines()[1]
    assert width(out) <= 60 and out.endswith("...")
