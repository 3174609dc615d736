"""Health self-checks: each ok / warn / fail with a reason and a suggested fix.

The checks: engine loaded and warm; RTF against a baseline per (engine, voice, steps,
device) with the likely cause of a regression; time to first audio; queue backlog and
latency; sources connected; sinks healthy; memory growth over hours; broken plugins; disk
space where sinks write; the hardware's performance state.

RTF baselines live in a JSON file (`[health] baseline_file`, by default
``<state_dir>/rtf-baseline.json``), written by ``ishowttsctl bench --save-baseline``, which
times the running engine through the daemon's one engine worker. Without one, a baseline is
learned from the first utterances after warm-up (and said to be learned). A regression is
the rolling median RTF over the baseline by more than ``rtf_margin``; it is published as a
``health.regression`` event (which is also a log line) and shown by ``ishowttsctl health``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import anyio

from ishowttsd.config import Config

log = logging.getLogger("ishowttsd.health")

LEVELS = {"ok": 0, "warn": 1, "fail": 2}

# a fixed text set for `bench`: Chinese, English and mixed, as chat is
BENCH_TEXTS = (
    "大家好，欢迎来到直播间！今天我们一起玩到天亮。",
    "Thanks for the follow, and welcome to the stream everyone!",
    "感谢老板送的火箭，老板大气！Thank you so much!",
)

_STEP_KEYS = ("steps", "nfe_step", "nfe_steps", "num_steps")


@dataclass
class Check:
    check: str
    level: str
    reason: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"check": self.check, "level": self.level, "reason": self.reason, "fix": self.fix}
        if self.data:
            d["data"] = self.data
        return d


def worst(levels) -> str:
    return max(levels, key=LEVELS.__getitem__, default="ok")


@dataclass(frozen=True)
class RtfKey:
    """What an RTF is comparable across: the same engine, voice, steps and device."""

    engine: str
    voice: str
    steps: int | None
    device: str

    def __str__(self) -> str:
        return f"{self.engine}/{self.voice}/{'-' if self.steps is None else self.steps}/{self.device}"

    def same_but_steps(self, other: RtfKey) -> bool:
        return (self.engine, self.voice, self.device) == (other.engine, other.voice, other.device)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "voice": self.voice, "steps": self.steps, "device": self.device}


def engine_identity(engine: Any, voice: Any) -> tuple[RtfKey, dict[str, Any]]:
    """The RTF key of an engine + voice, and the settings a baseline remembers for it."""
    settings = engine.settings.model_dump(mode="json") if hasattr(engine.settings, "model_dump") else {}
    options = dict(getattr(voice, "options", {}) or {})
    steps = None
    for k in _STEP_KEYS:
        v = options.get(k, settings.get(k))
        if isinstance(v, int) and not isinstance(v, bool):
            steps = v
            break
    device = str(getattr(engine, "device", None) or "cpu")
    remembered = {**settings, **{f"voice.{k}": v for k, v in options.items()}, "voice.speed": getattr(voice, "speed", 1.0)}
    return RtfKey(engine.name, voice.id, steps, device), remembered


# -- baselines ------------------------------------------------------------------------------


class BaselineStore:
    """RTF baselines in one JSON file: {"version": 1, "baselines": {"<key>": {...}}}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None
        self._cache: tuple[float, dict[str, dict]] | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self.error = None
            return {}
        except OSError as e:
            self.error = f"cannot read {self.path}: {e.strerror}"
            return {}
        if self._cache and self._cache[0] == mtime:
            return self._cache[1]
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            entries = raw["baselines"]
            if not isinstance(entries, dict):
                raise ValueError("baselines is not an object")
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.error = f"{self.path} is not a baseline file ({type(e).__name__}: {e})"
            return {}
        self.error = None
        self._cache = (mtime, entries)
        return entries

    def find(self, key: RtfKey) -> tuple[dict[str, Any] | None, bool]:
        """The baseline for this key; else one for the same engine/voice/device at other steps."""
        entries = self.load()
        if str(key) in entries:
            return entries[str(key)], True
        for e in entries.values():
            other = RtfKey(e.get("engine", ""), e.get("voice", ""), e.get("steps"), e.get("device", ""))
            if key.same_but_steps(other):
                return e, False
        return None, False

    def save(self, entry: dict[str, Any]) -> None:
        """Add or replace one baseline; written atomically (a crash never leaves half a file)."""
        entries = dict(self.load())
        key = RtfKey(entry["engine"], entry["voice"], entry["steps"], entry["device"])
        entries[str(key)] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "baselines": entries}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
        self._cache = None


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.hc = cfg.health
        self.events = events
        self.hardware = hardware
        self.engines = engines
        self.speaker = speaker
        self.queue = queue
        self.sources = sources
        self.sinks = sinks
        self.plugins = plugins
        self.state = state
        self.clock = clock
        path = cfg.resolve(self.hc.baseline_file) if self.hc.baseline_file else cfg.state_dir() / "rtf-baseline.json"
        self.baselines = BaselineStore(path)
        self.rtfs: dict[RtfKey, deque[float]] = {}
        self.settings: dict[RtfKey, dict[str, Any]] = {}
        self.learned: dict[RtfKey, dict[str, Any]] = {}
        self.latencies: deque[float] = deque(maxlen=200)
        self.rss: deque[tuple[float, int]] = deque(maxlen=4000)
        self._levels: dict[RtfKey, str] = {}
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
        self.settings[key] = settings
        samples = self.rtfs.setdefault(key, deque(maxlen=self.hc.rtf_window))
        samples.append(rtf)
        if self.hc.learn_baseline and key not in self.learned and len(samples) >= self.hc.learn_samples:
            self.learned[key] = {**key.to_dict(), "rtf_median": statistics.median(samples), "runs": len(samples),
                                 "source": "learned", "settings": settings}  # fmt: skip

    def sample_memory(self, rss: int | None = None, now: float | None = None) -> None:
        self.rss.append((self.clock() if now is None else now, self.hardware.rss_bytes() if rss is None else rss))

    # -- the RTF check ------------------------------------------------------------------------

    def baseline_for(self, key: RtfKey) -> tuple[dict[str, Any] | None, str]:
        entry, exact = self.baselines.find(key)
        if entry is not None:
            return entry, "stored" if exact else "stored, other steps"
        if key in self.learned:
            return self.learned[key], "learned"
        return None, "none"

    def _rtf_level(self, key: RtfKey) -> tuple[str, dict[str, Any]]:
        samples = self.rtfs.get(key) or []
        d: dict[str, Any] = {**key.to_dict(), "samples": len(samples)}
        if len(samples) < self.hc.rtf_min_samples:
            return "ok", d
        median = statistics.median(samples)
        d["rtf_median"] = round(median, 4)
        base, how = self.baseline_for(key)
        d["baseline_source"] = how
        if base is None or not base.get("rtf_median"):
            return "ok", d
        ratio = median / base["rtf_median"]
        d.update(baseline=round(base["rtf_median"], 4), ratio=round(ratio, 3))
        if median < self.hc.rtf_floor:  # e.g. espeak: per-chunk overhead is the noise, and speech is instant anyway
            return "ok", d
        if ratio > 1 + self.hc.rtf_fail_margin:
            return "fail", d
        if ratio > 1 + self.hc.rtf_margin:
            return "warn", d
        return "ok", d

    def rtf_checks(self, telemetry: dict[str, Any] | None, perf: dict[str, Any] | None) -> list[Check]:
        self.baselines.load()
        out = []
        if self.baselines.error:
            out.append(Check("rtf:baseline", "warn", self.baselines.error,
                             "fix or delete the file, then run `ishowttsctl bench --save-baseline`"))  # fmt: skip
        if not self.rtfs:
            out.append(Check("rtf", "ok", "nothing spoken yet"))
            return out
        for key in list(self.rtfs):
            level, d = self._rtf_level(key)
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
            if level == "ok":
                out.append(Check(name, "ok", reason, data=d))
                continue
            causes = self.likely_causes(key, telemetry, perf)
            d["causes"] = [c["cause"] for c in causes]
            reason += f", over the {int(self.hc.rtf_margin * 100)}% margin; likely: " + "; ".join(c["detail"] for c in causes)
            fix = " ".join(dict.fromkeys(c["fix"] for c in causes if c["fix"]))
            out.append(Check(name, level, reason, fix, d))
        return out

    def likely_causes(self, key: RtfKey, telemetry: dict[str, Any] | None, perf: dict[str, Any] | None) -> list[dict[str, str]]:
        """Why speech got slower: config change, clocks, power mode, heat, other processes."""
        causes: list[dict[str, str]] = []
        base, how = self.baseline_for(key)
        base = base or {}

        def add(cause: str, detail: str, fix: str = "") -> None:
            causes.append({"cause": cause, "detail": detail, "fix": fix})

        if how == "stored, other steps" and base.get("steps") != key.steps:
            more = "more" if (key.steps or 0) > (base.get("steps") or 0) else "other"
            add("config_change", f"config change: {more} steps ({base.get('steps')} in the baseline, {key.steps} now)",
                "use the baseline's steps again, or save a new baseline for these steps (`ishowttsctl bench --save-baseline`).")  # fmt: skip
        now_settings = self.settings.get(key, {})
        old_settings = base.get("settings") or {}
        changed = sorted(k for k in set(now_settings) | set(old_settings)
                         if k not in _STEP_KEYS and now_settings.get(k) != old_settings.get(k) and old_settings)  # fmt: skip
        if changed:
            diffs = ", ".join(f"{k} {old_settings.get(k)!r} -> {now_settings.get(k)!r}" for k in changed[:4])
            add("config_change", f"config change since the baseline: {diffs}",
                "undo the change, or save a new baseline if it is meant (`ishowttsctl bench --save-baseline`).")  # fmt: skip
        perf = perf or {}
        base_hw = base.get("hardware") or {}
        if perf.get("clocks_locked") is False:
            was = " (they were locked for the baseline)" if base_hw.get("clocks_locked") else ""
            add("clocks_not_locked", f"clocks not locked: jetson_clocks is off{was}",
                "sudo systemctl start ishowtts-performance (or run `sudo jetson_clocks`).")  # fmt: skip
        mode_now = (perf.get("nvpmodel") or {}).get("name")
        mode_then = (base_hw.get("nvpmodel") or {}).get("name") if isinstance(base_hw.get("nvpmodel"), dict) else None
        if mode_now and mode_then and mode_now != mode_then:
            add("power_mode", f"power mode changed: {mode_then} in the baseline, {mode_now} now",
                "set the mode back (NVPMODEL_MODE in /etc/ishowtts/performance.env, then restart ishowtts-performance).")  # fmt: skip
        t = telemetry or {}
        thr = t.get("throttling") or {}
        if thr.get("thermal"):
            hot = ", ".join(f"{k} {v} °C" for k, v in (thr.get("hot") or {}).items()) or ", ".join(thr.get("gpu_reasons") or [])
            add("thermal_throttling", f"thermal throttling ({hot})", "improve cooling: check the fan, airflow and heatsink.")
        power = [r for r in thr.get("gpu_reasons") or [] if r in ("sw_power_cap", "hw_power_brake_slowdown", "hw_slowdown")]
        if power:
            add("power_throttling", f"GPU held back by {', '.join(power)}", "check the power supply and the GPU power limit.")
        cpu = t.get("cpu") or {}
        others = cpu.get("others_cores")
        ncpu = cpu.get("count") or os.cpu_count() or 1
        load = (cpu.get("load") or [None])[0]
        if others is not None and (others >= self.hc.contention_cores or (load is not None and load > ncpu + 0.5 and others > 0.2)):
            top = ", ".join(f"{p['name']} (pid {p['pid']}, {p['cores']} cores)" for p in cpu.get("top_others") or [])
            add("cpu_contention",
                f"CPU contention: other processes use {others} of {ncpu} cores (load {load})" + (f"; busiest: {top}" if top else ""),
                "stop or renice the busy processes, or move them to other cores.")  # fmt: skip
        if not causes:
            add("unknown", "no cause found in config, clocks, power mode, temperature or CPU load",
                "compare `ishowttsctl status` hardware with the baseline; re-run `ishowttsctl bench`.")  # fmt: skip
        return causes

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
        changed = []
        for key in list(self.rtfs):
            level, d = self._rtf_level(key)
            if level != self._levels.get(key, "ok"):
                changed.append((key, level, d))
            self._levels[key] = level
        if not changed:
            return
        telemetry, perf = await refresh()
        for key, level, d in changed:
            if level == "ok":
                self.events.publish("health.recovered", key=str(key), **d)
                continue
            causes = self.likely_causes(key, telemetry, perf)
            self.events.publish("health.regression", level=level, key=str(key), **d,
                                causes=[c["cause"] for c in causes], detail="; ".join(c["detail"] for c in causes))  # fmt: skip

    # -- all checks -------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        hw = self.hardware
        telemetry = hw.last
        perf = hw._perf[1] if hw._perf else None
        checks: list[Check] = []
        checks.append(self._engine_check())
        checks += [Check(**c) for c in self.engines.health_checks()] if self.engines else []  # down engines, servers
        checks += self.rtf_checks(telemetry, perf)
        checks.append(self._ttfa_check())
        checks.append(self._queue_check())
        checks += self._source_checks()
        checks += self._sink_checks()
        checks += self._disk_checks()
        checks.append(self._memory_check())
        checks += self._hardware_checks(telemetry, perf)
        for r in self.plugins.broken:
            checks.append(Check(f"plugin:{r.name}", "warn", f"{r.state}: {r.error}", "fix or remove the plugin file"))
        return {"status": worst(c.level for c in checks), "checks": [c.to_dict() for c in checks]}

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

    def _source_checks(self) -> list[Check]:
        out = []
        for s in self.sources:
            level = {"failed": "fail", "down": "warn", "backoff": "warn", "error": "warn"}.get(s.state, "ok")
            fix = s.last_error or ""
            if level != "ok":
                fix = (f"{fix}; " if fix else "") + "check the network and the source's config; `ishowttsctl status` shows details"
            out.append(Check(f"source:{s.name}", level, f"{s.state} {s.detail}".strip(), fix))
        return out

    def _sink_checks(self) -> list[Check]:
        out = []
        for k in self.sinks:
            # any state but ok is worth a look (unavailable, disk_full, auth_failed, stalled...)
            level = "ok" if k.state in ("ok", "starting") else "fail" if k.state == "failed" else "warn"
            fix = k.last_error or ""
            if level != "ok":
                fix = (f"{fix}; " if fix else "") + "check the device or service this sink writes to"
            out.append(Check(f"sink:{k.name}", level, f"{k.state} {k.detail}".strip(), fix))
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
            hot = ", ".join(f"{k} {v} °C" for k, v in (thr.get("hot") or {}).items()) or ", ".join(thr.get("gpu_reasons") or [])
            out.append(Check("hardware:thermal", "warn", f"thermal throttling ({hot})", "improve cooling: fan, airflow, heatsink"))
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
        perf = self.hardware._perf[1] if self.hardware._perf else None
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
        cancel = threading.Event()
        limiter = self.engines.limiter
        it = await anyio.to_thread.run_sync(engine.synthesize, text, voice, cancel, limiter=limiter)
        done = object()
        synth = audio = 0.0
        first = None
        t_start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            chunk = await anyio.to_thread.run_sync(next, it, done, limiter=limiter)
            synth += time.perf_counter() - t0
            if chunk is done:
                break
            if first is None:
                first = time.perf_counter() - t_start
            audio += chunk.duration
        return synth, audio, first or 0.0


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return 0.0 if var == 0 else sum((p[0] - mx) * (p[1] - my) for p in points) / var
