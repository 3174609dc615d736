"""Real-time factor (RTF) tracking: rolling windows per engine setup, baselines, likely causes.

An RTF is comparable only across the same engine, voice, sampling steps and device (`RtfKey`).
Baselines live in a JSON file (`[health] baseline_file`, by default
``<state_dir>/rtf-baseline.json``), written by ``ishowttsctl bench --save-baseline``, which
times the running engine through the daemon's one engine worker. Without one, a baseline is
learned from the first utterances after warm-up (and said to be learned). A regression is the
rolling median RTF over the baseline by more than ``rtf_margin`` (``rtf_fail_margin`` for a
failure); `likely_causes` says why, from the config, the clocks, the power mode, heat and
other processes. The health checks (`health.py`) report it and publish it as events.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ishowttsd.config import HealthConfig
from ishowttsd.hardware import POWER_REASONS, thermal_detail
from ishowttsd.level import Level

# the settings that are a model's sampling steps, by engine (they are part of the key)
STEP_KEYS = ("steps", "nfe_step", "nfe_steps", "num_steps")


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
    for k in STEP_KEYS:
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


class RtfTracker:
    """The rolling RTF window per key, the settings each key was spoken with, the baselines
    learned so far, and each key's level as last reported (to publish only changes)."""

    def __init__(self, hc: HealthConfig, baselines: BaselineStore) -> None:
        self.hc = hc
        self.baselines = baselines
        self.windows: dict[RtfKey, deque[float]] = {}
        self.settings: dict[RtfKey, dict[str, Any]] = {}
        self.learned: dict[RtfKey, dict[str, Any]] = {}
        self._reported: dict[RtfKey, Level] = {}

    def record(self, key: RtfKey, settings: dict[str, Any], rtf: float) -> None:
        """One utterance synthesized alone under `key`; learns a baseline once there are enough."""
        self.settings[key] = settings
        samples = self.windows.setdefault(key, deque(maxlen=self.hc.rtf_window))
        samples.append(rtf)
        if self.hc.learn_baseline and key not in self.learned and len(samples) >= self.hc.learn_samples:
            self.learned[key] = {**key.to_dict(), "rtf_median": statistics.median(samples), "runs": len(samples),
                                 "source": "learned", "settings": settings}  # fmt: skip

    def baseline_for(self, key: RtfKey) -> tuple[dict[str, Any] | None, str]:
        entry, exact = self.baselines.find(key)
        if entry is not None:
            return entry, "stored" if exact else "stored, other steps"
        if key in self.learned:
            return self.learned[key], "learned"
        return None, "none"

    def level(self, key: RtfKey) -> tuple[Level, dict[str, Any]]:
        """The key's level now and what it was judged on (the rtf check's fields)."""
        samples = self.windows.get(key) or []
        d: dict[str, Any] = {**key.to_dict(), "samples": len(samples)}
        if len(samples) < self.hc.rtf_min_samples:
            return Level.ok, d
        median = statistics.median(samples)
        d["rtf_median"] = round(median, 4)
        base, how = self.baseline_for(key)
        d["baseline_source"] = how
        if base is None or not base.get("rtf_median"):
            return Level.ok, d
        ratio = median / base["rtf_median"]
        d.update(baseline=round(base["rtf_median"], 4), ratio=round(ratio, 3))
        if median < self.hc.rtf_floor:  # e.g. espeak: per-chunk overhead is the noise, and speech is instant anyway
            return Level.ok, d
        if ratio > 1 + self.hc.rtf_fail_margin:
            return Level.fail, d
        if ratio > 1 + self.hc.rtf_margin:
            return Level.warn, d
        return Level.ok, d

    def report(self) -> dict[str, dict[str, Any]]:
        """Every key's rtf check fields, by key ("engine/voice/steps/device")."""
        return {str(k): self.level(k)[1] for k in list(self.windows)}

    def changes(self) -> list[tuple[RtfKey, Level, dict[str, Any]]]:
        """The keys whose level changed since the last call, with their new level and fields."""
        changed = []
        for key in list(self.windows):
            level, d = self.level(key)
            if level != self._reported.get(key, Level.ok):
                changed.append((key, level, d))
            self._reported[key] = level
        return changed

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
                         if k not in STEP_KEYS and now_settings.get(k) != old_settings.get(k) and old_settings)  # fmt: skip
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
            add("thermal_throttling", f"thermal throttling ({thermal_detail(thr)})", "improve cooling: check the fan, airflow and heatsink.")
        power = [r for r in thr.get("gpu_reasons") or [] if r in POWER_REASONS]
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
