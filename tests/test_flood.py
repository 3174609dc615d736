"""A chat flood through `inject` over the real socket: the daemon stays responsive, memory bounded.

Thousands of messages per second (pipelined JSON lines on two connections) go into the real
daemon with the espeak engine and the file sink. Meanwhile `status` is polled: it must keep
answering quickly. RSS (from /proc/PID/status) must not grow with the number of messages, the
queue never exceeds its bound, flood mode switches on and usernames are no longer read, no
super chat is lost, and in the end the counters close:
received = spoken + filtered + merged + dropped + expired + cut + failed.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from daemon_process import end_process

from ishowttsd.api import ApiError
from ishowttsd.control import client_request

CONFIG = """
[daemon]
state_dir = "state"
log_level = "warning"   # a line per event at this rate is the log's problem, not the test's

[engine]
default = "espeak"
fallback = "espeak"
warmup = false

[[sinks]]
type = "file"
directory = "out"

[moderation]
block_words = ["spam"]
duplicate_window_s = 10

[queue]
max_pending = 50
flood_threshold = 20
flood_announce = "弹幕太多了，还有{backlog}条"
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def message(i: int, rng: random.Random) -> dict:
    if i % 500 == 7:  # a super chat now and then: never dropped while chat waits
        return {"platform": "bilibili", "kind": "superchat", "user": {"id": f"p{i}", "name": f"老板{i}"},
                "text": f"醒目留言{i}", "amount": 30, "currency": "CNY", "id": f"sc-{i}"}  # fmt: skip
    platform = rng.choice(["bilibili", "twitch"])
    uid = rng.randrange(500)
    text = rng.choice(["晚上好", "hello chat", "spam link", "哈哈哈哈哈哈哈", "!points", f"第{i}条弹幕", f"line {i} pog"])
    return {"platform": platform, "kind": "danmaku", "user": {"id": str(uid), "name": f"user{uid}"}, "text": text,
            "id": f"m-{i}"}  # fmt: skip


def blast(sock: Path, msgs: list[dict], batch: int = 250) -> list[dict]:
    """Send inject requests pipelined on one connection; returns the answers."""
    out = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(os.fspath(sock))
        f = s.makefile("rb")
        for k in range(0, len(msgs), batch):
            chunk = msgs[k : k + batch]
            s.sendall(b"".join(
                (json.dumps({"id": k + j, "method": "inject", "params": m}, ensure_ascii=False) + "\n").encode()
                for j, m in enumerate(chunk)
            ))  # fmt: skip
            for _ in chunk:
                out.append(json.loads(f.readline()))
    return out


@pytest.mark.slow
def test_flood_stays_responsive_and_bounded(tmp_path):
    sockdir = Path(tempfile.mkdtemp(prefix="i6f-"))
    sock = sockdir / "d.sock"
    (tmp_path / "d.toml").write_text(CONFIG)
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "ishowttsd", "--config", str(tmp_path / "d.toml"), "--socket", str(sock)],
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            try:
                if client_request(sock, "status", timeout=2)["state"] == "running":
                    break
            except (OSError, ApiError):
                time.sleep(0.05)
        rng = random.Random(6)
        # moderation remembers up to 20000 recent ids, texts and users: the rest must not pile up
        n_warm, n_flood, rounds = 2000, 8000, 4
        msgs = [message(i, rng) for i in range(n_warm + n_flood * rounds)]

        def run(part: list[dict]) -> tuple[list[dict], float]:
            halves = [part[0::2], part[1::2]]
            answers: list[list[dict]] = [[], []]
            t0 = time.perf_counter()
            threads = [threading.Thread(target=lambda k=k: answers[k].extend(blast(sock, halves[k]))) for k in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            return answers[0] + answers[1], time.perf_counter() - t0

        warm, _ = run(msgs[:n_warm])
        rss_warm = rss_kib(proc.pid)

        # the flood, with status polled the whole time
        lat: list[float] = []
        bounds: list[int] = []
        stop = threading.Event()

        def poll():
            while not stop.is_set():
                t = time.perf_counter()
                st = client_request(sock, "status", timeout=10)
                lat.append(time.perf_counter() - t)
                by = st["queue"]["by_class"]  # the bound is on chat: owed speech is never dropped for space
                bounds.append(st["queue"]["pending"] - by.get("paid", 0) - by.get("membership", 0))
                time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        flood, rss, rates = [], [rss_warm], []
        for r in range(rounds):
            answers, secs = run(msgs[n_warm + r * n_flood : n_warm + (r + 1) * n_flood])
            flood += answers
            rates.append(n_flood / secs)
            rss.append(rss_kib(proc.pid))
        stop.set()
        poller.join(30)
        rate = min(rates)

        answers = warm + flood
        assert all("result" in a for a in answers), [a for a in answers if "result" not in a][:3]
        print(f"\nflood: {rounds} x {n_flood} injects at {', '.join(f'{x:.0f}' for x in rates)} msg/s; status latency "
              f"median {statistics.median(lat) * 1000:.1f} ms max {max(lat) * 1000:.1f} ms over {len(lat)} polls; "
              f"RSS KiB after warm-up and each round: {rss}")  # fmt: skip
        assert rate > 1000, f"only {rate:.0f} messages/s"
        assert max(lat) < 2.0 and statistics.median(lat) < 0.25
        assert max(bounds) <= 50
        # moderation's recent ids/texts tables (capped at 20000 entries each) account for ~12 MB of
        # this; keeping every message, utterance or event (>= 1.5 KB each) would add > 48 MB
        assert rss[-1] - rss_warm < 30 * 1024, "memory grew with the number of messages"

        # let it drain, then everything is accounted for
        def drained():
            st = client_request(sock, "status", timeout=10)
            sp = st["speaker"]
            return st["queue"]["pending"] == 0 and sp["speaking"] is None and not sp["prepared"], st

        deadline = time.monotonic() + 60
        while not drained()[0]:
            assert time.monotonic() < deadline, "queue did not drain"
            time.sleep(0.1)
        time.sleep(0.3)
        st = drained()[1]
        c = st["counts"]
        assert c["received"] == len(msgs)
        ended = c["spoken"] + c["filtered"] + c.get("merged", 0) + c["dropped"] + c["expired"] + c["cut"] + c["failed"]
        flood_says = st["queue"]["floods"]  # the announcements are queued but were never received
        assert c["received"] + flood_says == ended, c
        assert st["queue"]["floods"] >= 1 and c["dropped"] > 0
        assert st["queue"]["latency_median_s"] is not None and st["journal"]["pending"] == 0
        human = subprocess.run([sys.executable, "-m", "ishowttsd.ctl", "--socket", str(sock), "status"],
                               capture_output=True, text=True, timeout=30).stdout  # fmt: skip
        assert "latency median" in human and "journal  0 paid/membership owed" in human

        # no super chat lost, none twice; flood mode read chat without usernames
        said = [json.loads(x) for x in (tmp_path / "out" / "spoken.jsonl").read_text().splitlines()]
        paid_ids = collections.Counter(r["message_id"] for r in said if r["kind"] == "superchat")
        assert paid_ids == {m["id"]: 1 for m in msgs if m["kind"] == "superchat"}
        chat = [r for r in said if r["kind"] == "danmaku"]
        assert any(r["said"] == r["text"] for r in chat), "flood mode never dropped the username"
        assert any(r["source"] == "flood" and "弹幕太多了" in r["said"] for r in said)
        assert st["reasons"]["dropped:queue_full"] == c["dropped"]
        assert {"filtered:blocked_word", "filtered:command", "filtered:duplicate"} <= set(st["reasons"])
    finally:
        end_process(proc)
        log.close()
        shutil.rmtree(sockdir, ignore_errors=True)
