import json
import time

import pytest

from daemon_process import DaemonProcess, spoken_log


def lines(*records):
    return "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n"


def test_replay_keeps_timing_scaled_by_speed_and_skips_malformed_lines(tmp_path):
    rec = tmp_path / "rec.jsonl"
    rec.write_text(lines(
        "# a comment",
        {"t": 0.0, "platform": "twitch", "kind": "danmaku", "id": "a", "user": {"name": "first"}, "text": "one"},
        "{broken json",
        {"t": 1.0, "platform": "twitch", "kind": "nosuchkind", "text": "bad kind"},
        {"t": 1.0, "kind": "danmaku", "text": "no platform"},
        {"t": 1.0, "platform": "twitch", "kind": "danmaku", "text": 5},
        {"t": 1.0, "platform": "twitch", "kind": "gift", "extra": [], "amount": "x"},
        {"t": 1.0, "platform": "twitch", "kind": "danmaku", "user": {"level": "high"}, "text": "x"},
        {"t": 2.0, "platform": "twitch", "kind": "danmaku", "id": "b", "user": {"name": "second"}, "text": "two"},
        {"t": 2.0, "platform": "twitch", "kind": "danmaku", "id": "c", "user": {"name": "third"}, "text": "three"},
        {"t": 2.0, "delete": {"platform": "twitch", "message_ids": ["c"]}},
    ))  # fmt: skip
    cfg = f'[[sources]]\ntype = "replay"\npath = "{rec}"\nspeed = 2.0\n\n[[sinks]]\ntype = "file"\ndirectory = "out"\n'
    d = DaemonProcess(tmp_path, cfg, args=["--exit-when-done"], wait_ready=False)
    t0 = time.monotonic()
    d.start()
    assert d.wait(60) == 0, d.log()
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.0, "2 s of recording at speed 2 takes at least 1 s"
    said = [e["user"] for e in spoken_log(tmp_path / "out")]
    assert said[0] == "first" and "second" in said
    log = d.log()
    assert log.count("skipped a malformed line") == 6
    for n in (3, 4, 5, 6, 7, 8):
        assert f"rec.jsonl:{n}:" in log
    assert "'text' must be a str" in log and "'level' must be an int" in log
    assert "crashed" not in log


def test_looping_a_recording_with_nothing_to_play_does_not_lock_up(tmp_path):
    rec = tmp_path / "rec.jsonl"
    rec.write_text("# only a comment\n{broken\n")
    cfg = f'[[sources]]\ntype = "replay"\npath = "{rec}"\nloop = true\n'
    with DaemonProcess(tmp_path, cfg) as d:
        d.wait_for(lambda: d.request("status")["sources"][0]["state"] == "failed")
        assert "no playable lines" in d.request("status")["sources"][0]["detail"]


def test_missing_recording_is_reported_not_fatal(tmp_path):
    cfg = '[[sources]]\ntype = "replay"\npath = "nope.jsonl"\n'
    with DaemonProcess(tmp_path, cfg) as d:
        d.wait_for(lambda: d.request("status")["sources"][0]["state"] == "failed")
        st = d.request("status")["sources"][0]
        assert "nope.jsonl" in st["detail"]
        assert d.request("status")["state"] == "running"


@pytest.mark.parametrize("speed", [0, -1])
def test_bad_speed_is_a_config_error(tmp_path, speed):
    d = DaemonProcess(tmp_path, f'[[sources]]\ntype = "replay"\npath = "x"\nspeed = {speed}\n', wait_ready=False).start()
    assert d.wait(30) == 78
    assert "sources[0].speed" in d.log()
