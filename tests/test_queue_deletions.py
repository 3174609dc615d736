"""Deletions from the platforms remove queued speech and cut speech that is playing.

The real daemon replays a recording with Twitch CLEARMSG (one message), CLEARCHAT (one user's
messages; the whole chat) and a Bilibili super-chat delete, timed to land while speech is
playing. The sink is a drop-in plugin that plays in real time (as a sound card would) and writes
down, for each utterance, whether it was played to the end or cut.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACED_SINK = '''
import json
import anyio
from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import Sink, SinkSettings


class PacedSettings(SinkSettings):
    record: str


class PacedSink(Sink):
    """Plays in real time, like a sound card, and records what it played and how it ended."""

    type = "paced"
    Settings = PacedSettings
    realtime = True

    async def play(self, pb):
        complete = False
        try:
            async for chunk in pb.chunks():
                await anyio.sleep(chunk.duration)
            complete = not pb.stats.cut
        finally:
            m = pb.utterance.message
            line = json.dumps({"message_id": m.id if m else None, "complete": complete}) + "\\n"
            with open(self.settings.record, "a") as f:
                f.write(line)


@hookimpl
def ishowtts_register_sinks(register):
    register(PacedSink)
'''

LONG = "this is a long line that takes several seconds to say out loud, so it is still playing when it is deleted"


def line(t, **kw):
    return json.dumps({"t": t, **kw}, ensure_ascii=False)


def tw(t, mid, uid, text=LONG):
    return line(t, platform="twitch", kind="danmaku", id=mid, user={"id": uid, "name": f"user{uid}"}, text=text)


RECORDING = [
    tw(0.0, "t1", "A"),  # playing when CLEARMSG t1 arrives
    tw(0.1, "t2", "B"),  # prepared, then playing when CLEARCHAT B arrives
    tw(0.2, "t3", "B"),  # still queued at CLEARCHAT B: removed, never played
    line(0.3, platform="bilibili", kind="superchat", id="sc1", user={"id": "9", "name": "老板"}, amount=30,
         currency="CNY", text="这是一条很长很长的醒目留言，要念好几秒钟才能念完，念到一半的时候会被删除"),  # fmt: skip
    line(2.5, delete={"platform": "twitch", "message_ids": ["t1"], "reason": "clearmsg"}),
    line(3.5, delete={"platform": "twitch", "user_id": "B", "reason": "clearchat"}),
    line(4.5, delete={"platform": "bilibili", "message_ids": ["sc1"], "reason": "sc_delete"}),
    tw(5.0, "t4", "C", "short and sweet"),  # played to the end
    tw(5.1, "t5", "D", "and one more"),
    line(5.2, delete={"platform": "bilibili", "everything": True, "reason": "other platform"}),  # touches no twitch line
]


def test_deletions_remove_queued_and_cut_playing(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o700)
    (plugins / "paced_sink.py").write_text(PACED_SINK)
    (tmp_path / "chat.jsonl").write_text("\n".join(RECORDING) + "\n")
    record = tmp_path / "played.jsonl"
    (tmp_path / "d.toml").write_text(f"""
[daemon]
state_dir = "state"
plugin_dirs = ["plugins"]

[engine]
default = "espeak"
fallback = "espeak"
warmup = false

[[sources]]
type = "replay"
path = "chat.jsonl"
start_delay = 1.0

[[sinks]]
type = "paced"
record = "{record}"

[moderation]
max_chars = 200
duplicate_window_s = 0

[queue]
flood_threshold = 0
""")
    sockdir = Path(tempfile.mkdtemp(prefix="i6d-"))
    try:
        r = subprocess.run(
            [sys.executable, "-m", "ishowttsd", "--config", str(tmp_path / "d.toml"), "--socket", str(sockdir / "s"),
             "--exit-when-done", "--summary-json", str(tmp_path / "summary.json")],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    played = [json.loads(x) for x in record.read_text().splitlines()]
    outcome = {p["message_id"]: p["complete"] for p in played}
    assert outcome == {"t1": False, "t2": False, "sc1": False, "t4": True, "t5": True}, r.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cut"] == 3 and summary["spoken"] == 2
    assert summary["reasons"].get("dropped:deleted:clearchat") == 1  # t3, removed from the queue
    assert "deletion platform=twitch" in r.stderr and "cut=1" in r.stderr
