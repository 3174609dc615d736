"""Health self-checks: RTF regressions produced for real and flagged with their cause,
through the real daemon, its control socket and the real ishowttsctl."""

import json
import os
import subprocess
import sys
import time
import types
from collections import deque

import pytest

from daemon_process import DaemonProcess
from ishowttsd.config import Config, parse_config
from ishowttsd.health import HealthMonitor
from ishowttsd.metrics import render
from ishowttsd.rtf import BaselineStore, RtfKey, engine_identity

# An engine that does real CPU work per 0.2 s audio chunk in proportion to `steps`, as a
# diffusion model's solver steps do: more steps, or less CPU, makes it slower for real.
WORK_PLUGIN = '''
import numpy as np
from pydantic import Field

from ishowttsd.engines.base import Engine, EngineSettings, Voice
from ishowttsd.hookspecs import hookimpl
from ishowttsd.messages import AudioChunk


class WorkSettings(EngineSettings):
    steps: int = Field(default=4, ge=1, le=64)
    work_per_step: int = 200_000


class WorkEngine(Engine):
    name = "work"
    Settings = WorkSettings

    def load(self, progress):
        self.sample_rate = 16000
        self.loaded = True

    def voices(self):
        return [Voice(id="work", engine="work", language="en")]

    def synthesize(self, text, voice, cancel):
        t = np.arange(3200, dtype=np.float32) / self.sample_rate
        for _ in range(max(1, len(text) // 8)):
            if cancel.is_set():
                return
            acc = 0
            for _ in range(self.settings.steps):
                for i in range(self.settings.work_per_step):  # pure Python: one core's worth
                    acc += i * i
            yield AudioChunk((0.1 * np.sin(2 * np.pi * 220 * t) + (acc % 3) * 1e-6).astype(np.float32), self.sample_rate)


@hookimpl
def ishowtts_register_engines(register):
    register(WorkEngine)
'''

TEXTS = ["thanks for the follow, welcome in", "another message from chat here", "and one more line to say now", "the last one for this round"]


def config(plugdir, baseline, steps: int, extra: str = "") -> str:
    return f"""
[daemon]
plugin_dirs = ["{plugdir}"]

[engine]
default = "work"
fallback = "espeak"

[engine.work]
steps = {steps}

[health]
baseline_file = "{baseline}"
learn_baseline = false
rtf_floor = 0.0
rtf_margin = 1.0
rtf_fail_margin = 50.0
rtf_min_samples = 3
rtf_window = 4
{extra}

[hardware]
telemetry_interval_s = 0.5

[[sinks]]
type = "file"
directory = "out"
"""


@pytest.fixture
def plugdir(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir(mode=0o755)
    (d / "work.py").write_text(WORK_PLUGIN)
    (d / "work.py").chmod(0o644)
    return d


def speak(d: DaemonProcess, texts) -> None:
    before = d.request("status")["speaker"]["spoken"]
    for t in texts:
        d.request("say", {"text": t})
    d.wait_for(lambda: d.request("status")["speaker"]["spoken"] >= before + len(texts), timeout=60, what="speech")


def rtf_check(report: dict) -> dict:
    [c] = [c for c in report["checks"] if c["check"].startswith("rtf:work/")]
    return c


def save_baseline(d: DaemonProcess, baseline) -> dict:
    r = d.ctl("--json", "bench", "--save-baseline", "--runs", "3")
    out = json.loads(r.stdout)
    saved = json.loads(baseline.read_text())["baselines"]
    assert out["saved"] == str(baseline) and list(saved) == [out["key"]]
    return saved[out["key"]]


def test_more_steps_is_a_regression_with_its_cause(tmp_path, plugdir):
    baseline = tmp_path / "state" / "baseline.json"
    (tmp_path / "a").mkdir()
    with DaemonProcess(tmp_path / "a", config(plugdir, baseline, steps=4)) as d:
        entry = save_baseline(d, baseline)
        assert entry["engine"] == "work" and entry["voice"] == "work" and entry["steps"] == 4 and entry["device"] == "cpu"
        assert entry["runs"] == 3 and entry["rtf_min"] <= entry["rtf_median"] <= entry["rtf_max"]
        assert entry["settings"]["work_per_step"] == 200_000 and entry["hardware"]["kind"] == "cpu"
        human = d.ctl("bench", "--runs", "1").stdout
        assert "bench work/work/4/cpu: median RTF" in human and "not saved" in human
        speak(d, TEXTS[:3])
        r = d.ctl("--json", "health", check=False)
        c = rtf_check(json.loads(r.stdout))
        assert c["level"] == "ok" and "(stored)" in c["reason"], c
    (tmp_path / "b").mkdir()
    with DaemonProcess(tmp_path / "b", config(plugdir, baseline, steps=16)) as d:
        speak(d, TEXTS[:3])
        r = d.ctl("--json", "health", check=False)
        report = json.loads(r.stdout)
        c = rtf_check(report)
        assert r.returncode == 1 and report["status"] == "warn", r.stdout
        assert c["check"] == "rtf:work/work/16/cpu" and c["level"] == "warn"
        assert c["data"]["ratio"] > 2.0 and "config_change" in c["data"]["causes"]
        assert "more steps (4 in the baseline, 16 now)" in c["reason"] and "bench --save-baseline" in c["fix"]
        # the human table says the same, and the regression was an event and a log line
        human = d.ctl("health", check=False).stdout
        assert "WARN  rtf:work/work/16/cpu" in human and "more steps" in human
        d.wait_for(lambda: "health.regression" in d.log(), what="the regression event")
        line = next(ln for ln in d.log().splitlines() if "health.regression" in ln)
        assert "key=work/work/16/cpu" in line and "config_change" in line
        m = d.ctl("metrics").stdout
        assert 'ishowtts_rtf_median{engine="work",voice="work",steps="16",device="cpu"}' in m
        assert 'ishowtts_health_check{check="rtf:work/work/16/cpu"} 1' in m and "ishowtts_health 1" in m


def test_cpu_contention_is_a_regression_with_its_cause(tmp_path, plugdir):
    baseline = tmp_path / "baseline.json"
    with DaemonProcess(tmp_path, config(plugdir, baseline, steps=4)) as d:
        save_baseline(d, baseline)
        # (no "ok before" check here: other load on a shared machine can make that flaky; the
        # steps test above covers ok-then-warn, this one covers the cause)
        # busy processes: more runnable threads than cores, so the engine gets a fraction of one
        n = 4 * (os.cpu_count() or 1) + 1
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
        try:
            time.sleep(0.3)
            speak(d, TEXTS)
            report = d.request("health")
        finally:
            for h in hogs:
                h.kill()
            for h in hogs:
                h.wait()
        c = rtf_check(report)
        assert c["level"] == "warn", c
        assert "cpu_contention" in c["data"]["causes"] and "CPU contention: other processes use" in c["reason"]
        assert "python" in c["reason"]  # the busiest ones are named
        assert "config_change" not in c["data"]["causes"]


def test_learned_baseline_without_a_stored_one(tmp_path, plugdir):
    cfg = config(plugdir, tmp_path / "none.json", steps=2).replace("learn_baseline = false", "learn_baseline = true\nlearn_samples = 3")
    with DaemonProcess(tmp_path, cfg) as d:
        speak(d, TEXTS[:3])
        c = rtf_check(d.request("health"))
        assert c["level"] == "ok" and "(learned)" in c["reason"]


# -- the checks one by one, on a monitor built from plain parts ---------------------------------


class _Part:
    def __init__(self, name, state, detail="", last_error=None, directory=None):
        self.name, self.state, self.detail, self.last_error = name, state, detail, last_error
        self.settings = types.SimpleNamespace(directory=directory) if directory else types.SimpleNamespace()


class _FakeHardware:
    info = {"kind": "cpu", "device": "cpu"}
    last = None
    last_performance = None

    def rss_bytes(self):
        return 100 * 2**20


def monitor(tmp_path, raw: dict | None = None, sources=(), sinks=()) -> HealthMonitor:
    cfg = parse_config(raw or {}, tmp_path / "c.toml")
    engine = types.SimpleNamespace(name="espeak", warm=True, settings=cfg.health)
    engines = types.SimpleNamespace(active="espeak", fallback_reason=None, engines={"espeak": engine}, errors={},
                                    health_checks=lambda: [])  # fmt: skip
    speaker = types.SimpleNamespace(ttfas=deque())
    queue = types.SimpleNamespace(stats=lambda: {"pending": 0, "max_pending": 50, "oldest_wait_s": 0.0})
    plugins = types.SimpleNamespace(broken=[])
    return HealthMonitor(cfg, None, _FakeHardware(), engines=engines, speaker=speaker, queue=queue,
                         sources=list(sources), sinks=list(sinks), plugins=plugins, state=lambda: "running")  # fmt: skip


def checks(m: HealthMonitor) -> dict:
    return {c["check"]: c for c in m.report()["checks"]}


def test_memory_growth_over_hours(tmp_path):
    m = monitor(tmp_path)
    for minute in range(0, 30, 5):  # half an hour: too early to judge
        m.sample_memory(rss=(100 + minute) * 2**20, now=minute * 60.0)
    assert checks(m)["memory"]["level"] == "ok" and "judged after 1 h" in checks(m)["memory"]["reason"]
    for minute in range(30, 150, 5):  # 1 MB a minute for two and a half hours: 60 MB/h
        m.sample_memory(rss=(100 + minute) * 2**20, now=minute * 60.0)
    c = checks(m)["memory"]
    assert c["level"] == "warn" and c["data"]["growth_mb_per_h"] == pytest.approx(60, abs=0.5)
    flat = monitor(tmp_path)
    for minute in range(0, 150, 5):
        flat.sample_memory(rss=(300 + minute % 2) * 2**20, now=minute * 60.0)
    assert checks(flat)["memory"]["level"] == "ok"


def test_disk_space_for_the_file_sink(tmp_path):
    sink = _Part("file", "ok", directory="out/not-yet-created")
    assert checks(monitor(tmp_path, sinks=[sink]))["disk:file"]["level"] == "ok"
    huge = {"health": {"disk_warn_mb": 1e12, "disk_fail_mb": 1e11}}
    c = checks(monitor(tmp_path, huge, sinks=[sink]))["disk:file"]
    assert c["level"] == "fail" and str(tmp_path / "out/not-yet-created") in c["reason"] and c["fix"]


def test_sources_sinks_and_levels(tmp_path):
    m = monitor(tmp_path, sources=[_Part("bili", "backoff", "reconnecting in 4 s", "ConnectionRefusedError")],
                sinks=[_Part("obs", "failed", "", "auth failed")])  # fmt: skip
    rep = m.report()
    c = {x["check"]: x for x in rep["checks"]}
    assert c["source:bili"]["level"] == "warn" and "ConnectionRefusedError" in c["source:bili"]["fix"]
    assert c["sink:obs"]["level"] == "fail" and rep["status"] == "fail"


def test_ttfa_thresholds(tmp_path):
    m = monitor(tmp_path, {"health": {"ttfa_warn_s": 1.0, "ttfa_fail_s": 5.0}})
    m.speaker.ttfas.extend([0.2, 0.3, 0.25])
    assert checks(m)["ttfa"]["level"] == "ok"
    m.speaker.ttfas.extend([2.0] * 10)
    assert checks(m)["ttfa"]["level"] == "warn"


def test_a_corrupt_baseline_file_is_reported(tmp_path):
    (tmp_path / "b.json").write_text("{not json")
    m = monitor(tmp_path, {"health": {"baseline_file": "b.json"}})
    m.rtf.windows[RtfKey("espeak", "auto", None, "cpu")] = deque([0.1, 0.1, 0.1])
    c = checks(m)["rtf:baseline"]
    assert c["level"] == "warn" and "not a baseline file" in c["reason"]


def test_baseline_store_round_trip(tmp_path):
    store = BaselineStore(tmp_path / "sub" / "b.json")
    entry = {"engine": "f5", "voice": "v", "steps": 7, "device": "cuda", "rtf_median": 0.05}
    store.save(entry)
    store.save({**entry, "voice": "w", "rtf_median": 0.06})
    assert store.find(RtfKey("f5", "v", 7, "cuda")) == (entry, True)
    assert store.find(RtfKey("f5", "v", 16, "cuda")) == (entry, False)  # same but steps
    assert store.find(RtfKey("f5", "v", 7, "cpu")) == (None, False)
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_identity_takes_steps_from_voice_options_first():
    engine = types.SimpleNamespace(name="f5", settings=Config().health, device="cuda:0")
    voice = types.SimpleNamespace(id="streamer", options={"nfe_step": 12}, speed=1.0)
    key, settings = engine_identity(engine, voice)
    assert key == RtfKey("f5", "streamer", 12, "cuda:0") and settings["voice.nfe_step"] == 12


def test_metrics_text_format():
    status = {"state": "running", "uptime_s": 3.0, "counts": {"spoken": 2}, "reasons": {"filtered:too_long": 1},
              "queue": {"pending": 0, "oldest_wait_s": 0.0}, "speaker": {"ttfa_median_s": 0.1},
              "sources": [], "sinks": [{"name": "file", "type": "file", "state": "ok"}], "hardware": {}}  # fmt: skip
    health = {"status": "warn", "checks": [{"check": 'a"b', "level": "warn"}]}
    text = render(status, health, {"k": {"engine": "f5", "voice": "v", "steps": 7, "device": "cuda", "rtf_median": 0.05}})
    assert text.endswith("\n") and "# TYPE ishowtts_utterances_total counter" in text
    assert 'ishowtts_health_check{check="a\\"b"} 1' in text
    assert 'ishowtts_rtf_median{engine="f5",voice="v",steps="7",device="cuda"} 0.05' in text
    assert "ishowtts_rtf_baseline" not in text  # no value, no series
    assert 'ishowtts_sink_up{name="file",type="file"} 1' in text


def _samples(text: str) -> dict[str, str]:
    """Every sample line of an exposition, name{labels} -> value; checks the line grammar."""
    import re

    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) \w+ .+|# (?!HELP |TYPE ).*", line), line
            continue
        m = re.fullmatch(r'(\w+(?:\{[^}]*\})?) (\S+)', line)
        assert m, line
        float(m[2])  # Prometheus reads it as a float
        out[m[1]] = m[2]
    return out


def test_metrics_values_are_exact():
    """A counter of 1234567 is not `1.23457e+06`, and RSS bytes are not rounded."""
    status = {"state": "running", "uptime_s": 98765.4, "counts": {"spoken": 1_234_567, "received": 12_345_678_901},
              "queue": {"pending": 0, "oldest_wait_s": 0.0}, "sources": [], "sinks": [],
              "hardware": {"telemetry": {"process": {"rss_mb": 117.7, "rss_bytes": 123_456_789},
                                         "memory": {"available_mb": 28000, "available_bytes": 28_672_000_000},
                                         "temperatures": {"CPU-therm": 48.5}, "cpu": {"load": [0.1 + 0.2]}}}}  # fmt: skip
    s = _samples(render(status, {"status": "ok", "checks": []}, {}))
    assert s['ishowtts_utterances_total{outcome="spoken"}'] == "1234567"
    assert s['ishowtts_utterances_total{outcome="received"}'] == "12345678901"
    assert s["ishowtts_process_rss_bytes"] == "123456789" and s["ishowtts_memory_available_bytes"] == "28672000000"
    assert s["ishowtts_uptime_seconds"] == "98765.4" and s['ishowtts_temperature_celsius{zone="CPU-therm"}'] == "48.5"
    assert float(s["ishowtts_cpu_load1"]) == 0.1 + 0.2  # the shortest form that reads back to the same float
    older = {**status, "hardware": {"telemetry": {"process": {"rss_mb": 117.5}}}}  # a telemetry without bytes
    assert _samples(render(older, {"status": "ok", "checks": []}, {}))["ishowtts_process_rss_bytes"] == str(int(117.5 * 2**20))


def test_metrics_count_every_declared_event():
    from ishowttsd.events import CATALOGUE

    base = {"state": "running", "uptime_s": 1.0, "counts": {"spoken": 3, "received": 5},
            "queue": {"pending": 0, "oldest_wait_s": 0.0}, "sources": [], "sinks": []}  # fmt: skip
    health = {"status": "ok", "checks": []}
    text = render({**base, "events": {"spoken": 3, "health.regression": 1, "not.declared": 9}}, health, {})
    s = _samples(text)
    events = {k[len('ishowtts_events_total{event="'):-2]: v for k, v in s.items() if k.startswith("ishowtts_events_total{")}
    assert set(events) == set(CATALOGUE) and events["spoken"] == "3" and events["health.regression"] == "1"
    assert events["received"] == "0"  # what status["events"] does not name has not happened
    assert text.count("# TYPE ishowtts_events_total counter") == 1
    lines = text.splitlines()
    i = lines.index('ishowtts_events_total{event="spoken"} 3')
    assert lines[i - 1] == "# spoken: " + " ".join(CATALOGUE["spoken"].doc.split())
    # a status without the map of every counter: the events its counts hold
    s = _samples(render(base, health, {}))
    assert {k for k in s if k.startswith("ishowtts_events_total")} == {
        'ishowtts_events_total{event="spoken"}', 'ishowtts_events_total{event="received"}'}


def test_batched_speech_does_not_feed_the_rtf_window(tmp_path):
    """A batch member's RTF is a share of one pass, not comparable with the one-at-a-time
    baseline: only unbatched speech is sampled; every utterance still counts for latency."""
    from ishowttsd.messages import Utterance
    from ishowttsd.sink import SynthesisStats

    m = monitor(tmp_path)
    voice = types.SimpleNamespace(id="v", options={}, speed=1.0)
    m.engines.resolve = lambda vid: (m.engines.engines["espeak"], voice)
    for batch in (4, 1):
        st = SynthesisStats(engine="espeak", voice="v", synth_s=0.5, audio_s=2.0)
        st.batch = batch
        m.on_spoken(Utterance(text="hi"), st)
    assert [list(v) for v in m.rtf.windows.values()] == [[0.25]]
    assert len(m.latencies) == 2


def test_levels_are_ordered_by_severity_and_carry_their_exit_code():
    from ishowttsd.level import Level, worst

    assert Level.ok < Level.warn < Level.fail and Level.warn < "fail"  # not alphabetical, as strings would be
    assert worst(["warn", Level.ok, "fail", "ok"]) is Level.fail and worst([]) is Level.ok
    assert [lv.code for lv in Level] == [0, 1, 2] and Level("warn") == "warn"
    assert json.dumps({"level": Level.warn}) == '{"level": "warn"}' and f"{Level.fail}" == "fail"


def test_rtf_report_gives_each_key_its_check_fields(tmp_path):
    m = monitor(tmp_path, {"health": {"rtf_min_samples": 2}})
    assert m.rtf_report() == {}
    key = RtfKey("espeak", "v", None, "cpu")
    for rtf in (0.2, 0.4, 0.3):
        m.rtf.record(key, {}, rtf)
    assert m.rtf_report() == {"espeak/v/-/cpu": {**key.to_dict(), "samples": 3, "rtf_median": 0.3, "baseline_source": "none"}}


def test_volume_check_warns_only_when_nobody_can_hear():
    from ishowttsd.health import HealthMonitor
    from ishowttsd.live_settings import LiveSettings

    live = LiveSettings(None)
    sinks = [types.SimpleNamespace(name="alsa", delivers_audio=True), types.SimpleNamespace(name="obs", delivers_audio=True),
             types.SimpleNamespace(name="file", delivers_audio=False)]  # fmt: skip
    me = types.SimpleNamespace(live=live, sinks=sinks)
    assert HealthMonitor._volume_checks(me) == []
    live.set_volume("alsa", 0)  # the room's speakers muted, OBS still plays: on purpose, fine
    live.set_volume("file", 0)
    assert HealthMonitor._volume_checks(me) == []
    live.set_volume("obs", 0)
    [check] = HealthMonitor._volume_checks(me)
    assert check.level == "warn" and "alsa, obs is 0" in check.reason and "volume alsa 100" in check.fix
    live.set_volume("obs", 100)
    live.set_volume(None, 0)
    [check] = HealthMonitor._volume_checks(me)
    assert "master volume is 0" in check.reason
