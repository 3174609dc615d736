"""Prometheus text exposition (format 0.0.4) of the daemon's status, health and telemetry.

For people who already run Prometheus: `ishowttsctl metrics` prints it, and the `metrics`
control method returns it, e.g. for a node_exporter textfile collector cron job:
``ishowttsctl metrics > /var/lib/node_exporter/textfile/ishowtts.prom.$$ && mv ...``.

Values are exact: integers in full, other floats in their shortest round-trip form (a
counter of 1234567 is never `1.23457e+06`). `ishowtts_events_total` has a series for every
event in the catalogue (`ishowttsd.events.CATALOGUE`), each preceded by a comment that says
what the event means.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

from ishowttsd.events import CATALOGUE
from ishowttsd.level import Level


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _esc_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: int | float) -> str:
    """A sample value, exactly: integers in full, other floats in Python's shortest repr that
    reads back to the same float (Go's ParseFloat, which Prometheus uses, reads it too)."""
    if isinstance(v, int):  # bool included
        return str(int(v))
    return str(int(v)) if v.is_integer() and abs(v) < 2**63 else repr(v)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._seen: set[str] = set()

    def metric(self, name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, Any], Any]],
               comment: Callable[[dict[str, Any]], str] | None = None) -> None:  # fmt: skip
        """A family's HELP and TYPE (once) and its samples; `comment` gives a line to put before
        each sample (a plain `#` comment, which scrapers ignore)."""
        rows = [(labels, v) for labels, v in samples if isinstance(v, (int, float)) and math.isfinite(v)]
        if not rows:
            return
        if name not in self._seen:
            self._seen.add(name)
            self.lines.append(f"# HELP {name} {_esc_help(help_)}")
            self.lines.append(f"# TYPE {name} {kind}")
        for labels, v in rows:
            if comment is not None:
                self.lines.append("# " + " ".join(comment(labels).split()))
            lab = ",".join(f'{k}="{_esc(val)}"' for k, val in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_value(v)}" if lab else f"{name} {_value(v)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(status: dict[str, Any], health: dict[str, Any], rtf: dict[str, dict[str, Any]]) -> str:
    """`status` and `health` as the control methods return them; `rtf`: key -> rtf check data."""
    w = _Writer()
    w.metric("ishowtts_up", "gauge", "1 while the daemon runs; 0.5 while it starts", [({}, 1 if status["state"] == "running" else 0.5)])
    w.metric("ishowtts_uptime_seconds", "gauge", "seconds since start", [({}, status["uptime_s"])])
    w.metric("ishowtts_utterances_total", "counter", "utterances by outcome",
             [({"outcome": k}, v) for k, v in status["counts"].items()])  # fmt: skip
    w.metric("ishowtts_events_total", "counter", "events published on the event bus, by name (`ishowttsctl watch` shows them)",
             _event_samples(status), comment=lambda labels: f"{labels['event']}: {CATALOGUE[labels['event']].doc}")  # fmt: skip
    w.metric("ishowtts_rejections_total", "counter", "filtered, dropped, expired and failed utterances by reason",
             [({"reason": k}, v) for k, v in status.get("reasons", {}).items()])  # fmt: skip
    q = status["queue"]
    w.metric("ishowtts_queue_pending", "gauge", "utterances waiting", [({}, q["pending"])])
    w.metric("ishowtts_queue_oldest_wait_seconds", "gauge", "how long the oldest waiting utterance has waited", [({}, q["oldest_wait_s"])])
    sp = status.get("speaker") or {}
    w.metric("ishowtts_ttfa_median_seconds", "gauge", "median time to first audio", [({}, sp.get("ttfa_median_s"))])
    w.metric("ishowtts_rtf_median", "gauge", "rolling median real-time factor per engine, voice, steps and device",
             [(_key_labels(d), d.get("rtf_median")) for d in rtf.values()])  # fmt: skip
    w.metric("ishowtts_rtf_baseline", "gauge", "baseline real-time factor the median is compared with",
             [(_key_labels(d), d.get("baseline")) for d in rtf.values()])  # fmt: skip
    w.metric("ishowtts_health", "gauge", "overall health: 0 ok, 1 warn, 2 fail", [({}, Level(health["status"]).code)])
    w.metric("ishowtts_health_check", "gauge", "each self-check: 0 ok, 1 warn, 2 fail",
             [({"check": c["check"]}, Level(c["level"]).code) for c in health["checks"]])  # fmt: skip
    for kind, key in (("source", "sources"), ("sink", "sinks")):
        w.metric(f"ishowtts_{kind}_up", "gauge", f"1 when the {kind} is healthy",
                 [({"name": s["name"], "type": s["type"]}, s["state"] in ("ok", "connected", "running", "finished")) for s in status[key]])  # fmt: skip
    hw = status.get("hardware") or {}
    t = hw.get("telemetry") or {}
    cpu = t.get("cpu") or {}
    snd = status.get("sound") or {}
    if snd.get("master") is not None:
        w.metric("ishowtts_volume_percent", "gauge", "live volume: master, and each sink's own (heard: master x sink)",
                 [({"sink": "master"}, snd["master"])] + [({"sink": k}, v) for k, v in snd["sinks"].items()])  # fmt: skip
        w.metric("ishowtts_speech_rate", "gauge", "live speech rate (the voice's speed is multiplied by it)", [({}, snd["rate"])])
    words = status.get("moderation") or {}
    w.metric("ishowtts_words_total", "counter", "how words were made sayable: nicknames, replacements, numbers, emoji, "
             "rewrites, and the pattern timeouts and rewrite errors", [({"step": k}, v) for k, v in (words.get("counts") or {}).items()])  # fmt: skip
    cmd = (status.get("chat") or {}).get("commands") or {}
    w.metric("ishowtts_chat_commands_total", "counter", "chat commands carried out (verb) and refused (reason)",
             [({"outcome": "done", "verb": k}, v) for k, v in (cmd.get("done") or {}).items()]
             + [({"outcome": "refused", "reason": k}, v) for k, v in (cmd.get("refused") or {}).items()])  # fmt: skip
    w.metric("ishowtts_muted_users", "gauge", "users muted from chat now", [({}, len(cmd.get("mutes") or []))])
    greet = (status.get("chat") or {}).get("greetings") or {}
    w.metric("ishowtts_greeting_lines_total", "counter", "greeting lines made (entries, follows, shares, likes gathered in one)",
             [({}, greet.get("lines", 0))])  # fmt: skip
    w.metric("ishowtts_cpu_percent", "gauge", "system CPU use", [({}, cpu.get("percent"))])
    w.metric("ishowtts_cpu_load1", "gauge", "1-minute load average", [({}, (cpu.get("load") or [None])[0])])
    w.metric("ishowtts_cpu_others_cores", "gauge", "cores used by other processes", [({}, cpu.get("others_cores"))])
    mem = t.get("memory") or {}
    w.metric("ishowtts_memory_available_bytes", "gauge", "memory available",
             [({}, _bytes(mem, "available_bytes", "available_mb"))])  # fmt: skip
    proc = t.get("process") or {}
    w.metric("ishowtts_process_rss_bytes", "gauge", "daemon resident memory", [({}, _bytes(proc, "rss_bytes", "rss_mb"))])
    w.metric("ishowtts_temperature_celsius", "gauge", "thermal zone temperatures",
             [({"zone": k}, v) for k, v in (t.get("temperatures") or {}).items()])  # fmt: skip
    gpus = t.get("gpu") or []
    w.metric("ishowtts_gpu_load_percent", "gauge", "GPU load", [({"gpu": g.get("name")}, g.get("load_percent")) for g in gpus])
    w.metric("ishowtts_gpu_freq_mhz", "gauge", "GPU clock", [({"gpu": g.get("name")}, g.get("freq_mhz")) for g in gpus])
    w.metric("ishowtts_gpu_temperature_celsius", "gauge", "GPU temperature", [({"gpu": g.get("name")}, g.get("temp_c")) for g in gpus])
    w.metric("ishowtts_power_watts", "gauge", "board or GPU power draw",
             [({"rail": "total"}, (t.get("power") or {}).get("total_w"))] + [({"rail": g.get("name")}, g.get("power_w")) for g in gpus])  # fmt: skip
    perf = hw.get("performance") or {}
    if perf.get("clocks_locked") is not None:
        w.metric("ishowtts_clocks_locked", "gauge", "1 when jetson_clocks has locked the clocks", [({}, perf["clocks_locked"])])
    w.metric("ishowtts_thermal_throttling", "gauge", "1 while thermal throttling is seen", [({}, bool((t.get("throttling") or {}).get("thermal")))])
    return w.text()


def _key_labels(d: dict[str, Any]) -> dict[str, Any]:
    return {"engine": d["engine"], "voice": d["voice"], "steps": "-" if d.get("steps") is None else d["steps"], "device": d["device"]}


def _event_samples(status: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    """One series per declared event, from status["events"] (every counter of the bus); where
    status has no such map, the events that status["counts"] holds."""
    counts = status.get("events")
    if counts is None:
        counts = status.get("counts") or {}
        names = [n for n in CATALOGUE if n in counts]
    else:
        names = list(CATALOGUE)
    return [({"event": n}, counts.get(n, 0)) for n in names]


def _bytes(d: dict[str, Any], exact: str, mb: str) -> int | float | None:
    """d[exact] (bytes), or d[mb] (MiB, rounded where it was measured) in bytes."""
    if d.get(exact) is not None:
        return d[exact]
    return None if d.get(mb) is None else float(d[mb]) * 2**20
