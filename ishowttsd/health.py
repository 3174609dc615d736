"""Health self-checks: each ok / warn / fail with a reason and a suggested fix.

The checks: engine loaded and warm; RTF against a baseline per (engine, voice, steps,
device) with the likely cause of a regression (tracked in `rtf.py`); time to first audio;
queue backlog and latency; sources connected; sinks healthy; memory growth over hours; broken
plugins; disk space where sinks write; the hardware's performance state. A change of an RTF
level is published as a ``health.regression`` / ``health.recovered`` event (which is also a
log line) and shown by ``ishowttsctl health``; ``ishowttsctl bench`` times the running engine
for a baseline.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import anyio

from ishowttsd.config import Config
from ishowttsd.engines.base import stream_synthesis
from ishowttsd.hardware import thermal_detail
from ishowttsd.level import Level, worst
from ishowttsd.rtf import BaselineStore, RtfTracker, engine_identity
from ishowttsd.sink import SynthesisStats

log = logging.getLogger("ishowttsd.health")

_STALL_MEMORY_S = 600.0  # a blocked event loop is shown by health this long after

# a fixed text set for `bench`: Chinese, English and mixed, as chat is
BENCH_TEXTS = (
    "大家好，欢迎来到直播间！今天我们一起玩到天亮。",
    "Thanks for the follow, and welcome to the stream everyone!",
    "感谢老板送的火箭，老板大气！Thank you so much!",
)

@dataclass
class Check:
    """One self-check's verdict: its level, why, and what to do about it."""

    check: str
    level: Level
    reason: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.level = Level(self.level)

    def to_dict(self) -> dict[str, Any]:
        d = {"check": self.check, "level": self.level.value, "reason": self.reason, "fix": self.fix}
        if self.data:
            d["data"] = self.data
        return d


# -- the monitor ------------------------------------------------------------------------------


class HealthMonitor:
    """Collects what the checks need (RTF per key, RSS samples) and runs the checks.

    It takes the parts it looks at as arguments; `daemon.py` wires it in.
    """

    def __init__(
        self,
        cfg: Config,
        events,
        hardware,
        *,
        engines,
        speaker,
        queue,
        sources: list,
        sinks: list,
        plugins,
        state: Callable[[], str],
        paid=None,
        loop_watch=None,
        live=None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.hc = cfg.health
        self.events = events
        self.hardware = hardware
        self.engines = engines
        self.speaker = speaker
        self.queue = queue
        self.paid = paid
        self.loop_watch = loop_watch
        self.live = live  # the volumes set at run time
        self.sources = sources
        self.sinks = sinks
        self.plugins = plugins
        self.state = state
        self.clock = clock
        path = cfg.resolve(self.hc.baseline_file) if self.hc.baseline_file else cfg.state_dir() / "rtf-baseline.json"
        self.baselines = BaselineStore(path)
        self.rtf = RtfTracker(self.hc, self.baselines)
        self.latencies: deque[float] = deque(maxlen=200)
        self.rss: deque[tuple[float, int]] = deque(maxlen=4000)
        self._dirty = anyio.Event()
        self._lock = threading.Lock()

    # -- inputs ---------------------------------------------------------------------------------

    def on_spoken(self, utt, stats) -> None:
        """Speaker callback: one finished utterance's RTF, under its (engine, voice, steps, device)."""
        # time from arrival to the start of speech, roughly: now minus the audio just played
        self.latencies.append(max(0.0, time.monotonic() - utt.created - stats.audio_s))
        self._dirty.set()
        rtf = stats.rtf
        # a batch member's RTF is its share of a shared pass: on a GPU far below what the
        # baseline (one utterance at a time) measured, so it would hide a real regression
        if rtf is None or getattr(stats, "batch", 1) > 1:
            return
        engine = self.engines.engines.get(stats.engine)
        if engine is None:
            return
        try:
            _, voice = self.engines.resolve(stats.voice)
        except Exception:
            return
        key, settings = engine_identity(engine, voice)
        self.rtf.record(key, settings, rtf)

    def sample_memory(self, rss: int | None = None, now: float | None = None) -> None:
        self.rss.append((self.clock() if now is None else now, self.hardware.rss_bytes() if rss is None else rss))

    # -- the RTF check ------------------------------------------------------------------------

    def rtf_report(self) -> dict[str, dict[str, Any]]:
        """Every RTF key's check fields (median, baseline, ratio, ...) by "engine/voice/steps/device"."""
        return self.rtf.report()

    def rtf_checks(self, telemetry: dict[str, Any] | None, perf: dict[str, Any] | None) -> list[Check]:
        self.baselines.load()
        out = []
        if self.baselines.error:
            out.append(Check("rtf:baseline", "warn", self.baselines.error,
                             "fix or delete the file, then run `ishowttsctl bench --save-baseline`"))  # fmt: skip
        if not self.rtf.windows:
            out.append(Check("rtf", "ok", "nothing spoken yet"))
            return out
        for key in list(self.rtf.windows):
            level, d = self.rtf.level(key)
            name = f"rtf:{key}"
            if "rtf_median" not in d:
                out.append(Check(name, "ok", f"{d['samples']} utterance(s) so far; judged after {self.hc.rtf_min_samples}", data=d))
                continue
            if "baseline" not in d:
                out.append(Check(name, "ok", f"median RTF {d['rtf_median']} over {d['samples']}; no baseline yet",
                                 "run `ishowttsctl bench --save-baseline` while the box is idle and well cooled", d))  # fmt: skip
                continue
            reason = (f"median RTF {d['rtf_median']} over the last {d['samples']} vs baseline {d['baseline']} "
                      f"({d['baseline_source']}): x{d['ratio']}")  # fmt: skip
            if level == Level.ok:
                out.append(Check(name, level, reason, data=d))
                continue
            causes = self.rtf.likely_causes(key, telemetry, perf)
            d["causes"] = [c["cause"] for c in causes]
            reason += f", over the {int(self.hc.rtf_margin * 100)}% margin; likely: " + "; ".join(c["detail"] for c in causes)
            fix = " ".join(dict.fromkeys(c["fix"] for c in causes if c["fix"]))
            out.append(Check(name, level, reason, fix, d))
        return out

    # -- regressions as events ------------------------------------------------------------------

    async def run(self, refresh: Callable[[], Any]) -> None:
        """After each utterance, publish `health.regression` / `health.recovered` on a change.

        `refresh` is an async callable that samples the hardware (for the cause) and
        returns (telemetry, performance).
        """
        while True:
            await self._dirty.wait()
            self._dirty = anyio.Event()
            try:
                await self._publish_changes(refresh)
            except Exception:  # a health bug must never take speech down with it
                log.exception("health regression check failed; will try again after the next utterance")

    async def _publish_changes(self, refresh: Callable[[], Any]) -> None:
        changed = self.rtf.changes()
        if not changed:
            return
        telemetry, perf = await refresh()
        for key, level, d in changed:
            if level == Level.ok:
                self.events.publish("health.recovered", key=str(key), **d)
                continue
            causes = self.rtf.likely_causes(key, telemetry, perf)
            self.events.publish("health.regression", level=level.value, key=str(key), **d,
                                causes=[c["cause"] for c in causes], detail="; ".join(c["detail"] for c in causes))  # fmt: skip

    # -- all checks -------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        hw = self.hardware
        telemetry = hw.last
        perf = hw.last_performance
        checks: list[Check] = []
        checks.append(self._engine_check())
        checks += [Check(**c) for c in self.engines.health_checks()] if self.engines else []  # down engines, servers
        checks += self.rtf_checks(telemetry, perf)
        checks.append(self._ttfa_check())
        checks.append(self._queue_check())
        checks.append(self._paid_check())
        checks.append(self._loop_check())
        checks += self._volume_checks()
        checks += self._part_checks("source", self.sources, _source_level,
                                    "check the network and the source's config; `ishowttsctl status` shows details")  # fmt: skip
        checks += self._part_checks("sink", self.sinks, _sink_level, "check the device or service this sink writes to")
        checks += self._disk_checks()
        checks.append(self._memory_check())
        checks += self._hardware_checks(telemetry, perf)
        for r in self.plugins.broken:
            checks.append(Check(f"plugin:{r.name}", "warn", f"{r.state}: {r.error}", "fix or remove the plugin file"))
        return {"status": worst(c.level for c in checks).value, "checks": [c.to_dict() for c in checks]}

    def _loop_check(self) -> Check:
        """Whether code that does not await (a plugin) blocked the event loop lately."""
        stalls = self.loop_watch.recent(_STALL_MEMORY_S) if self.loop_watch is not None else []
        if not stalls:
            return Check("event_loop", "ok", "not blocked in the last 10 minutes")
        worst_one = max(stalls, key=lambda s: s["seconds"])
        who = f"plugin {worst_one['plugin']}" if worst_one["plugin"] else "code that is not a plugin"
        return Check("event_loop", "warn", f"the event loop was blocked {len(stalls)} time(s) in the last 10 minutes, up to "
                     f"{worst_one['seconds']} s, by {who} at {worst_one['where']}: speech and control waited",
                     "fix that plugin (it must await instead of blocking) or remove it; the log has the stack",
                     {"stalls": len(stalls), "seconds": worst_one["seconds"], "plugin": worst_one["plugin"]})  # fmt: skip

    def _volume_checks(self) -> list[Check]:
        """A volume of 0 set live and forgotten makes a silent stream that looks healthy."""
        if self.live is None:
            return []
        if self.live.data.master == 0:
            return [Check("volume", "warn", "the master volume is 0: nothing is heard on any sink",
                          "turn it up: `ishowttsctl volume 100` (or the Sound card in the control room)")]  # fmt: skip
        audible = [s.name for s in self.sinks if getattr(s, "delivers_audio", False)]
        if audible and all(self.live.sink_volume(name) == 0 for name in audible):  # one sink muted on purpose is fine
            return [Check("volume", "warn", f"the volume of {', '.join(audible)} is 0: people hear nothing",
                          f"turn it up: `ishowttsctl volume {audible[0]} 100`")]  # fmt: skip
        return []

    def _paid_check(self) -> Check:
        """Paid speech: owed and not heard, the journal that keeps it, what a crash would lose."""
        if self.paid is None:
            return Check("paid", "ok", "no paid-speech policy")
        st = self.paid.status()
        if not st["enabled"]:
            return Check("paid", "ok", "the journal is off ([journal] enabled = false): owed speech is lost on a crash")
        if st["problem"]:
            return Check("paid", "fail", f"the journal is unavailable, so paid speech is lost on a crash: {st['problem']}",
                         "free space or fix the permissions of the state directory; it is retried every "
                         f"{self.cfg.journal.retry_owed_s:g} s", {k: st[k] for k in ("problem",)})  # fmt: skip
        if st.get("error"):
            return Check("paid", "fail", f"journal writes fail: {st['error']}",
                         "free space on the state directory's disk or fix its permissions", {"error": st["error"]})  # fmt: skip
        data = {k: st.get(k) for k in ("pending", "parked", "waiting_for_sink", "owed_in_queue")}
        if st["waiting_for_sink"]:
            audible = [s for s in self.sinks if s.name in self.paid.audible()]
            why = "; ".join(f"{s.name}: {s.state} {s.detail}".strip() for s in audible) or "no sink"
            return Check("paid", "warn", f"{st['waiting_for_sink']} paid or membership utterance(s) owed: no sink that "
                         f"people hear played them ({why})", "fix the sound device or OBS: owed speech is played as soon "
                         "as one works (`ishowttsctl status` shows the sinks)", data)  # fmt: skip
        damage = st.get("damage")
        if damage:
            where = f"; the damaged file is kept at {damage['moved_to']}" if damage.get("moved_to") else ""
            return Check("paid", "warn", f"the journal was damaged when the daemon started: {damage['detail']}{where}",
                         "owed speech accepted just before the crash may be missing: compare with the platform's "
                         "super chat list; restart to clear this warning", data)  # fmt: skip
        if st["parked"]:
            return Check("paid", "ok", f"{st['owed_in_queue']} owed utterance(s) in the queue and {st['parked']} more "
                         "waiting in the journal, in order", data=data)  # fmt: skip
        return Check("paid", "ok", f"{st['pending']} owed utterance(s) in progress, journaled in {st['path']}", data=data)

    def _engine_check(self) -> Check:
        eng = self.engines
        if eng is None or eng.active is None:
            if self.state() == "starting":
                return Check("engine", "warn", "the engine is still loading", "wait; `ishowttsctl watch` shows its progress")
            errs = "; ".join(f"{k}: {v}" for k, v in (eng.errors if eng else {}).items())
            return Check("engine", "fail", f"no engine loaded{': ' + errs if errs else ''}", "fix the [engine] config and restart")
        if eng.fallback_reason:
            return Check("engine", "warn", f"speaking with fallback {eng.active}: {eng.fallback_reason}",
                         "fix the engine config and restart")  # fmt: skip
        engine = eng.engines[eng.active]
        if not engine.warm:
            if self.cfg.engine.warmup:
                return Check("engine", "warn", f"{eng.active} loaded but not warmed up", "see the log for the warm-up error")
            return Check("engine", "ok", f"{eng.active} loaded; warm-up is off, so the first utterance will be slow",
                         "set [engine] warmup = true")  # fmt: skip
        return Check("engine", "ok", f"{eng.active} loaded and warm")

    def _ttfa_check(self) -> Check:
        ttfas = list(self.speaker.ttfas)[-self.hc.rtf_window :] if self.speaker else []
        if not ttfas:
            return Check("ttfa", "ok", "nothing spoken yet")
        med = statistics.median(ttfas)
        reason = f"median time to first audio {med:.3f} s over the last {len(ttfas)}"
        fix = "see the rtf check; a faster engine setting (fewer steps) or a shorter first chunk helps"
        if med > self.hc.ttfa_fail_s:
            return Check("ttfa", "fail", reason + f" (over {self.hc.ttfa_fail_s} s)", fix, {"median_s": round(med, 4)})
        if med > self.hc.ttfa_warn_s:
            return Check("ttfa", "warn", reason + f" (over {self.hc.ttfa_warn_s} s)", fix, {"median_s": round(med, 4)})
        return Check("ttfa", "ok", reason, data={"median_s": round(med, 4)})

    def _queue_check(self) -> Check:
        q = self.queue.stats()
        lat = statistics.median(self.latencies) if self.latencies else None
        d = {**q, "latency_median_s": None if lat is None else round(lat, 3)}
        reason = f"{q['pending']}/{q['max_pending']} pending, oldest waited {q['oldest_wait_s']} s"
        if lat is not None:
            reason += f", median wait before speech {lat:.2f} s"
        if q["pending"] >= q["max_pending"]:
            return Check("queue", "warn", reason + "; full, so low-priority speech is dropped",
                         "speech is slower than chat: raise max_pending, tighten moderation, or speed up the engine", d)  # fmt: skip
        if q["oldest_wait_s"] > self.hc.queue_wait_warn_s:
            return Check("queue", "warn", reason + f" (over {self.hc.queue_wait_warn_s} s)",
                         "speech lags chat: set [queue] ttl, tighten moderation, or speed up the engine", d)  # fmt: skip
        return Check("queue", "ok", reason, data=d)

    @staticmethod
    def _part_checks(kind: str, parts: list, level_of: Callable[[str], str], advice: str) -> list[Check]:
        """A check per source or sink: its state as a level; its last error and `advice` as the fix."""
        out = []
        for p in parts:
            level = Level(level_of(p.state))
            fix = p.last_error or ""
            if level != Level.ok:
                fix = (f"{fix}; " if fix else "") + advice
            out.append(Check(f"{kind}:{p.name}", level, f"{p.state} {p.detail}".strip(), fix))
        return out

    def _disk_checks(self) -> list[Check]:
        out = []
        for k in self.sinks:
            directory = getattr(k.settings, "directory", None)
            if not directory:
                continue
            path = self.cfg.resolve(directory)
            probe = path
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            try:
                free_mb = shutil.disk_usage(probe).free / 2**20
            except OSError as e:
                out.append(Check(f"disk:{k.name}", "warn", f"cannot check free space at {path}: {e.strerror}"))
                continue
            reason = f"{free_mb:.0f} MB free at {path}"
            fix = "free some space or point the sink at a bigger disk; old WAVs can go"
            d = {"free_mb": round(free_mb), "path": str(path)}
            if free_mb < self.hc.disk_fail_mb:
                out.append(Check(f"disk:{k.name}", "fail", reason + f" (under {self.hc.disk_fail_mb:.0f} MB)", fix, d))
            elif free_mb < self.hc.disk_warn_mb:
                out.append(Check(f"disk:{k.name}", "warn", reason + f" (under {self.hc.disk_warn_mb:.0f} MB)", fix, d))
            else:
                out.append(Check(f"disk:{k.name}", "ok", reason, data=d))
        return out

    def _memory_check(self) -> Check:
        samples = list(self.rss)
        if not samples:
            return Check("memory", "ok", "no samples yet")
        now_mb = samples[-1][1] / 2**20
        span = samples[-1][0] - samples[0][0]
        if span < self.hc.memory_min_span_s or len(samples) < 3:
            return Check("memory", "ok", f"RSS {now_mb:.0f} MB; growth is judged after {self.hc.memory_min_span_s / 3600:g} h "
                                         f"of samples (have {span / 60:.1f} min)", data={"rss_mb": round(now_mb, 1)})  # fmt: skip
        slope = _slope([(t, r / 2**20) for t, r in samples]) * 3600  # MB per hour
        d = {"rss_mb": round(now_mb, 1), "growth_mb_per_h": round(slope, 1), "span_h": round(span / 3600, 2)}
        reason = f"RSS {now_mb:.0f} MB, growing {slope:.1f} MB/h over {span / 3600:.1f} h"
        if slope > self.hc.memory_growth_warn_mb_per_h:
            return Check("memory", "warn", reason + f" (over {self.hc.memory_growth_warn_mb_per_h:g} MB/h): a leak?",
                         "restart the daemon to recover; report it with `ishowttsctl status --json` attached", d)  # fmt: skip
        return Check("memory", "ok", reason, data=d)

    def _hardware_checks(self, telemetry: dict[str, Any] | None, perf: dict[str, Any] | None) -> list[Check]:
        info = self.hardware.info or {}
        hc = self.cfg.hardware
        out = []
        if perf is not None:
            expect = hc.expect_clocks_locked if hc.expect_clocks_locked is not None else info.get("kind") == "jetson"
            locked = perf.get("clocks_locked")
            if expect and locked is False:
                out.append(Check("hardware:clocks", "warn", "clocks are not locked (jetson_clocks is off): speech is slower",
                                 "sudo systemctl enable --now ishowtts-performance"))  # fmt: skip
            elif expect and locked:
                out.append(Check("hardware:clocks", "ok", "clocks locked (jetson_clocks)"))
            if hc.expect_nvpmodel is not None:
                nv = perf.get("nvpmodel") or {}
                have = {str(nv.get("name")), str(nv.get("id"))}
                if hc.expect_nvpmodel not in have:
                    out.append(Check("hardware:nvpmodel", "warn",
                                     f"power mode is {nv.get('name')} (id {nv.get('id')}), expected {hc.expect_nvpmodel}",
                                     "set NVPMODEL_MODE in /etc/ishowtts/performance.env; sudo systemctl restart ishowtts-performance"))  # fmt: skip
                else:
                    out.append(Check("hardware:nvpmodel", "ok", f"power mode {nv.get('name') or nv.get('id')}"))
        thr = (telemetry or {}).get("throttling") or {}
        if thr.get("thermal"):
            out.append(Check("hardware:thermal", "warn", f"thermal throttling ({thermal_detail(thr)})", "improve cooling: fan, airflow, heatsink"))
        return out

    # -- bench ---------------------------------------------------------------------------------

    async def bench(self, voice_id: str | None, runs: int, texts: list[str] | None, save: bool) -> dict[str, Any]:
        """Time the running engine on a fixed text set, chunk by chunk through the engine
        worker exactly as the speaker does, so the figure is comparable with live RTF."""
        engine, voice = self.engines.resolve(voice_id)
        key, settings = engine_identity(engine, voice)
        texts = list(texts or BENCH_TEXTS)
        results = []
        for i in range(runs + 1):  # the first pass warms caches and is not counted
            synth = audio = 0.0
            ttfas = []
            for text in texts:
                s, a, first = await self._time_one(engine, voice, text)
                synth += s
                audio += a
                ttfas.append(first)
            if i > 0 and audio > 0:
                results.append({"rtf": synth / audio, "synth_s": synth, "audio_s": audio, "ttfa_s": statistics.median(ttfas)})
        if not results:
            raise RuntimeError(f"engine {engine.name} produced no audio for the bench texts")
        rtfs = [r["rtf"] for r in results]
        perf = self.hardware.last_performance
        entry = {
            **key.to_dict(),
            "rtf_median": round(statistics.median(rtfs), 5),
            "rtf_min": round(min(rtfs), 5),
            "rtf_max": round(max(rtfs), 5),
            "ttfa_median_s": round(statistics.median(r["ttfa_s"] for r in results), 4),
            "audio_s_per_run": round(results[0]["audio_s"], 3),
            "runs": len(results),
            "texts": len(texts),
            "settings": settings,
            "hardware": {
                "kind": (self.hardware.info or {}).get("kind"),
                "model": (self.hardware.info or {}).get("model"),
                "clocks_locked": (perf or {}).get("clocks_locked"),
                "nvpmodel": (perf or {}).get("nvpmodel"),
            },
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": "bench",
        }
        if save:
            await anyio.to_thread.run_sync(self.baselines.save, entry)
            self.events.publish("health.baseline", key=str(key), rtf_median=entry["rtf_median"], file=str(self.baselines.path))
        return {"key": str(key), "baseline": entry, "saved": str(self.baselines.path) if save else None,
                "runs": [{k: round(v, 5) for k, v in r.items()} for r in results]}  # fmt: skip

    async def _time_one(self, engine, voice, text: str) -> tuple[float, float, float]:
        """(synthesis s, audio s, s to the first chunk) of one text, through the speaker's path."""
        tally = SynthesisStats()
        await stream_synthesis(engine, text, voice, threading.Event(), self.engines.limiter, tally)
        return tally.synth_s, tally.audio_s, tally.first_chunk_s or 0.0


def _source_level(state: str) -> str:
    return {"failed": "fail", "down": "warn", "backoff": "warn", "error": "warn"}.get(state, "ok")


def _sink_level(state: str) -> str:
    # any state but ok is worth a look (unavailable, disk_full, auth_failed, stalled...)
    return "ok" if state in ("ok", "starting") else "fail" if state == "failed" else "warn"


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return 0.0 if var == 0 else sum((p[0] - mx) * (p[1] - my) for p in points) / var
