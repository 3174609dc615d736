"""Every event the daemon publishes, declared once, and the one event bus that carries them.

Each stage publishes here (``bus.publish("spoken", id=..., ...)``); the log line, the counters
in `status`, the Prometheus metrics, `ishowttsctl watch` and the README's event table all read
the catalogue below. An event or a field that is not declared is a bug: under the test suite
(``ISHOWTTS_STRICT_EVENTS=1``) publishing one raises; in production it is logged once and the
event still goes out, because a typo must never silence speech.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger("ishowttsd.events")

STRICT_ENV = "ISHOWTTS_STRICT_EVENTS"

# fields every event carries, added by the bus
ENVELOPE = {"event": "the event's name", "ts": "Unix time of publication", "seq": "a number that grows by one per event"}


@dataclass(frozen=True)
class EventType:
    """One kind of event: its name, what it means, its fields, and how its log line is leveled.

    `level` is a logging level, or a function of the event's fields that returns one (a
    source that reconnects logs a warning, one that connects logs info). `open` events may
    carry fields beyond those listed (telemetry: whatever the hardware reports).
    """

    name: str
    doc: str
    fields: dict[str, str] = field(default_factory=dict)
    level: int | Callable[[dict[str, Any]], int] = logging.INFO
    open: bool = False

    def level_for(self, fields: dict[str, Any]) -> int:
        return self.level(fields) if callable(self.level) else self.level


UTTERANCE = {
    "id": "the utterance's id (see `ishowttsctl queue`)",
    "priority": "its class: urgent, paid, membership, moderator, normal, low, greeting",
    "text": "what is said",
    "source": "the source instance that produced it; control for say/inject",
    "platform": "bilibili, twitch, ... (chat only)",
    "kind": "danmaku, gift, superchat, ... (chat only)",
    "user": "who wrote it (chat only)",
}
SYNTHESIS = {
    "engine": "the engine that spoke",
    "voice": "the voice id",
    "sample_rate": "Hz of the audio",
    "synth_s": "seconds spent in the engine",
    "audio_s": "seconds of audio",
    "rtf": "real-time factor: synth_s / audio_s",
    "ttfa_s": "time to first audio at the sinks from its turn to play",
    "first_chunk_s": "engine latency to its first chunk",
    "chunks": "audio chunks streamed",
    "cut": "true when it did not play to the end",
    "batch": "utterances synthesized together with it (itself included)",
}
RTF_CHECK = {
    "key": "engine/voice/steps/device",
    "engine": "engine",
    "voice": "voice id",
    "steps": "sampling steps (None where the engine has none)",
    "device": "cpu, cuda, ...",
    "samples": "utterances in the rolling window",
    "rtf_median": "rolling median RTF",
    "baseline": "the baseline's median RTF",
    "baseline_source": "stored, stored at other steps, or learned",
    "ratio": "rtf_median / baseline",
}

_PROBLEM_STATES = {"backoff", "down", "error", "stalled", "unavailable", "disk_full", "auth_failed", "busy"}


def _part_state_level(fields: dict[str, Any]) -> int:
    state = fields.get("state")
    if state == "failed":
        return logging.ERROR
    return logging.WARNING if state in _PROBLEM_STATES else logging.INFO


def _owed_level(fields: dict[str, Any]) -> int:
    # losing speech someone paid for deserves a warning; losing chat is routine
    return logging.WARNING if fields.get("priority") in ("paid", "membership") else logging.INFO


CATALOGUE: dict[str, EventType] = {}


def _declare(name: str, doc: str, level: int | Callable[[dict[str, Any]], int] = logging.INFO,
             open: bool = False, /, **fields: str) -> None:  # fmt: skip
    # name, doc, level and open are positional only: an event may have fields of those names
    if name in CATALOGUE:
        raise ValueError(f"event {name!r} is declared twice")
    CATALOGUE[name] = EventType(name, doc, fields, level, open)


# -- the message path ------------------------------------------------------------------------------
_declare("received", "A source (or `inject`) handed in a chat message.",
         source="the source instance", platform="the platform", kind="the message kind", user="who wrote it",
         text="the raw text", message_id="the platform's message id")
_declare("filtered", "Moderation decided not to say a message; `reason` says why (counted in `status`).",
         source="the source instance", platform="the platform", kind="the message kind", user="who wrote it",
         reason="a short code: blocked_word, too_long, duplicate, ...", detail="the rule that applied, in words")
_declare("merged", "A gift joined a combo that is still waiting: the waiting utterance now says the total.",
         **UTTERANCE, total="the combo's total", message_id="the platform's message id")
_declare("pronounce.pattern_timeout", "A `[moderation.replacement_patterns]` pattern ran out of time on a message and "
         "was skipped for it; reported once per pattern per config load (`status` → moderation counts each).",
         logging.WARNING, pattern="the pattern", timeout_ms="pattern_timeout_ms", advice="what to do")
_declare("pronounce.rewrite_failed", "A plugin's `ishowtts_rewrite_text` raised (or returned no string) and was "
         "skipped; the message is said without that rewrite. At most once a minute per plugin; `status` counts "
         "every failure.", logging.WARNING, plugin="the plugin", error="what it raised",
         failures="its failures since the config was loaded")
_declare("queued", "An utterance entered the queue.", **UTTERANCE, pending="utterances waiting now")
_declare("dropped", "An utterance left the queue unsaid: the bound, an operator's remove or clear, a deletion.",
         _owed_level, **UTTERANCE, reason="queue_full, removed, cleared, deleted:<why>")
_declare("expired", "An utterance waited past its class's time-to-live and was not said.",
         _owed_level, **UTTERANCE, reason="ttl", waited_s="seconds it waited")
_declare("deletion", "A platform took messages back (a deleted super chat, a timeout, a cleared chat).",
         platform="the platform", message_ids="the deleted messages", user_id="the user whose messages go",
         everything="true when the whole chat was cleared", removed="queued utterances removed",
         cut="utterances cut while prepared or speaking")
_declare("flood", "The backlog crossed `[queue] flood_threshold` (on) or fell under half of it (off).",
         state="on or off", backlog="utterances waiting", threshold="the configured threshold")
_declare("greeting.stale", "Gathered entries, follows, shares or likes were dropped unsaid: chat kept the queue busy "
         "past `[greetings] ttl_s`.", kind="enter, follow, share or like", count="viewers it would have greeted",
         waited_s="seconds since the oldest of them")
# -- chat commands -----------------------------------------------------------------------------------
_declare("command.done", "A chat command (`!tts skip`, `!voice x`) was accepted and runs through the control API.",
         platform="the platform", user="who sent it", verb="skip, pause, resume, clear, mute, unmute or voice",
         detail="what it did")
_declare("command.refused", "A chat command was refused (counted in `status`): not allowed, unknown verb, bad argument.",
         platform="the platform", user="who sent it", verb="the verb asked for", reason="not_allowed, unknown_verb, "
         "bad_argument or busy", detail="why, with the right form")
# -- paid speech -------------------------------------------------------------------------------------
_declare("retry", "Owed (paid or membership) speech failed to synthesize and is queued again.",
         logging.WARNING, **UTTERANCE, attempts="syntheses started so far", reason="why the last one ended")
_declare("recovered", "Owed speech left unsaid by a crash or restart was queued again from the journal.",
         **UTTERANCE, age_s="seconds since it was accepted")
_declare("journal_stale", "Owed speech from the journal was not said: stale after a restart, or given up.",
         logging.WARNING, key="the journal row", text="what it would have said", priority="its class",
         age_s="seconds since accepted", late_by_s="seconds past its deadline", platform="the platform",
         kind="the message kind", user="who paid", message_id="the platform's message id",
         reason="ttl_while_stopped or too_many_attempts")
_declare("owed", "Owed speech was synthesized but no sink that people hear played it: it waits, and is played again "
         "(to the sinks that have not played it) when one recovers.", logging.WARNING, **UTTERANCE,
         reason="why it is still owed", waiting="owed utterances waiting for a sink")
_declare("journal.problem", "The journal cannot be opened or written, or was damaged: speech goes on, but paid speech "
         "is not protected against a crash until it is fixed.", logging.ERROR, path="the journal file",
         problem="what is wrong, with the fix", moved_to="where a corrupt journal was kept for inspection",
         salvaged="unfinished rows carried over from it", lost_transactions="committed writes lost to a damaged WAL")
# -- the speaker -------------------------------------------------------------------------------------
_declare("speaking", "An utterance started playing on the sinks.", **UTTERANCE, engine="the engine", voice="the voice id")
_declare("spoken", "An utterance played to its end.", **UTTERANCE, **SYNTHESIS)
_declare("cut", "An utterance was stopped before its end: skipped, removed, cleared, deleted; a greeting line prepared "
         "ahead of chat is cut as yielded.",
         **UTTERANCE, **SYNTHESIS, reason="skipped, removed, cleared, deleted, yielded")
_declare("failed", "An utterance was not said: its voice, the engine or the speaker failed, or no sink that people "
         "hear played it (`not_played`; paid speech then stays owed).", logging.WARNING, **UTTERANCE, **SYNTHESIS,
         reason="voice, engine, speaker or not_played", error="the error, or why each sink did not play it",
         sinks="not_played: each sink's outcome (played, or why not)")
_declare("batch_failed", "A batched synthesis failed; its members are synthesized one by one instead.",
         logging.WARNING, size="utterances in the batch", error="the error")
_declare("paused", "Speech is held (`ishowttsctl pause`).")
_declare("resumed", "Speech goes on (`ishowttsctl resume`).")
# -- the daemon ----------------------------------------------------------------------------------------
_declare("started", "The daemon is up: the socket is bound and the plugins are loaded.",
         version="ishowttsd's version", socket="the control socket", pid="the process id",
         sources="configured sources", sinks="configured sinks", broken_plugins="plugins that failed to load")
_declare("ready", "The engine is loaded and warm; speech starts.", engine="the engine speaking by default")
_declare("stopped", "The daemon stopped.", uptime_s="seconds it ran")
_declare("reloaded", "The config file was re-read; moderation and queue policy changed without a restart.",
         config="the file", changed="tables that took effect", details="each setting that changed, old → new",
         restart_needed="tables that need a restart",
         dropped="utterances a smaller bound dropped")
_declare("reload_failed", "A reload was refused; the old config stays in force.", logging.ERROR, error="why, with the fix")
_declare("loop.stalled", "The event loop was blocked (by code that did not await) and runs again; speech and the "
         "control socket waited meanwhile.", logging.WARNING, seconds="how long it was blocked",
         plugin="the plugin the blocking code belongs to, if any", where="the file, line and function it was stuck in")
# -- engines and voices ----------------------------------------------------------------------------------
_declare("engine.progress", "Long engine work (load, warm-up, compile) moved on.",
         engine="the engine", stage="what it is doing", progress="fraction done, when known")
_declare("engine.ready", "An engine loaded (and warmed up).", engine="the engine", load_s="seconds it took")
_declare("engine.failed", "An engine could not load or has no usable voice.", logging.ERROR,
         engine="the engine", error="why, with the fix")
_declare("engine.fallback", "The configured engine failed; the fallback engine speaks instead.", logging.WARNING,
         engine="the fallback engine", reason="why the default failed")
_declare("engine.down", "An engine became unavailable (its server is down or misbehaves); the fallback speaks for it.",
         logging.WARNING, engine="the engine", error="why, with the fix", fallback="the engine speaking instead, if any")
_declare("engine.back", "An unavailable engine answered its probe again and speaks again.",
         engine="the engine", down_s="seconds it was unavailable")
_declare("voice.failed", "A configured voice could not be prepared.", logging.WARNING, voice="the voice id", error="why")
_declare("voice.fallback", "The default voice is unusable; another voice speaks.", logging.WARNING,
         voice="the unusable voice", engine="the engine speaking", reason="why")
_declare("voices.reloaded", "Voices were prepared again (`ishowttsctl voices --reload`).",
         voices="the voices reloaded", errors="how many failed")
_declare("voice.uploaded", "A voice got an uploaded reference recording (kept in the state folder).",
         voice="the voice id", engine="the engine that prepared it", seconds="the recording's length")
_declare("voice.restored", "A voice's upload was removed: the configured recording is back, or the voice is gone.",
         voice="the voice id", now="config or removed")
# -- live sound (kept across restarts in the state folder's live.json) -------------------------------------
_declare("volume.changed", "A volume was changed live (`ishowttsctl volume`); heard from the next audio chunk.",
         sink="the sink, or master", percent="the new volume, 0-150", was="the old volume",
         saved="false when live.json could not be written (the change holds until a restart)")
_declare("rate.changed", "The speech rate was changed live (`ishowttsctl rate`); used from the next utterance.",
         rate="the new speed multiplier, 0.5-2.0", was="the old one",
         saved="false when live.json could not be written (the change holds until a restart)")
_declare("voice.default_changed", "The default voice was changed live (`ishowttsctl voice-default`); used from the next "
         "utterance that names no voice.", voice="the new default (none: the config's again)", was="the old one",
         saved="false when live.json could not be written (the change holds until a restart)")
_declare("live.problem", "The live sound settings file could not be read or written: the defaults are used, or a "
         "change holds until a restart only.", logging.WARNING, path="the file", problem="what is wrong, with the fix",
         moved_to="where a corrupt file was put")
# -- sources and sinks ------------------------------------------------------------------------------------
_declare("source.state", "A source's connection state changed (connecting, connected, backoff, down, ...).",
         _part_state_level, source="the source instance", state="its new state", detail="what it is doing",
         error="the last error, if any")
_declare("sink.state", "A sink's state changed (ok, error, stalled, unavailable, disk_full, ...).",
         _part_state_level, sink="the sink instance", state="its new state", detail="what it is doing",
         error="the last error, if any")
_declare("source.connected", "A live source joined its room or channel.", source="the source instance",
         room="the room (Bilibili)", host="the server it reached", channel="the channel (Twitch)")
_declare("source.warning", "A source met something the streamer should fix (an expired login cookie, masked names).",
         logging.WARNING, source="the source instance", warning="what to do")
_declare("web.listening", "The web control room, overlay and HTTP API listen (`ishowttsctl web` prints the link).",
         url="the address to open", remote="true when other machines can reach it")
_declare("web.failed", "The web control room could not start; the daemon goes on without it.", logging.ERROR,
         listen="the configured address", error="why, with the fix")
# -- health -------------------------------------------------------------------------------------------------
_declare("health.regression", "Speech got slower than its baseline: the rolling median RTF is over the margin.",
         lambda f: logging.ERROR if f.get("level") == "fail" else logging.WARNING,
         **RTF_CHECK, level="warn or fail", causes="likely causes, as codes", detail="likely causes, in words")
_declare("health.recovered", "Speech is back within its baseline.", **RTF_CHECK)
_declare("health.baseline", "`ishowttsctl bench --save-baseline` stored a new RTF baseline.",
         key="engine/voice/steps/device", rtf_median="the baseline's median RTF", file="where it was saved")
_declare("telemetry", "A hardware sample: CPU, memory, temperatures, GPU, power, this process (not logged).",
         logging.DEBUG, True, kind="jetson, nvidia or cpu", source="jtop, sysfs, nvml or psutil",
         cpu="CPU use and load", memory="memory available", temperatures="thermal zones",
         process="this process", gpu="GPUs", power="power rails", throttling="thermal or power throttling")

# `lagged` is not published on the bus: a subscription that fell behind reports it to its reader
LAGGED = EventType("lagged", "This `watch` fell behind and lost events.", {"lost": "how many"})


class UndeclaredEvent(Exception):
    """Code published an event or a field that the catalogue does not declare."""


class EventBus:
    """Publish events (plain dicts) to counters, the log and any number of subscribers.

    A subscriber that does not keep up loses events (counted as `lagged` on its next read)
    instead of slowing the daemon down: one stuck `watch` client must never stall speech.
    """

    def __init__(self, subscriber_buffer: int = 1000, strict: bool | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()  # filtered/dropped reasons
        self._seq = itertools.count(1)
        self._subs: list[_Subscription] = []
        self._buffer = subscriber_buffer
        self.strict = bool(os.environ.get(STRICT_ENV)) if strict is None else strict
        self._reported: set[str] = set()

    def publish(self, event: str, **fields: Any) -> dict[str, Any]:
        spec = self._check(event, fields)
        ev = {"event": event, "ts": round(time.time(), 3), "seq": next(self._seq), **fields}
        self.counts[event] += 1
        if "reason" in fields and event in ("filtered", "dropped", "expired", "failed"):
            self.reasons[f"{event}:{fields['reason']}"] += 1
        level = spec.level_for(fields) if spec else logging.WARNING
        if log.isEnabledFor(level):
            log.log(level, "%s %s", event, format_fields(fields))
        for sub in list(self._subs):
            sub.offer(ev)
        return ev

    def _check(self, event: str, fields: dict[str, Any]) -> EventType | None:
        spec = CATALOGUE.get(event)
        problem = None
        if spec is None:
            problem = f"event {event!r} is not declared in ishowttsd/events.py"
        elif not spec.open:
            extra = sorted(set(fields) - set(spec.fields))
            if extra:
                problem = f"event {event!r} has undeclared field(s) {extra}; declare them in ishowttsd/events.py"
        if problem is not None:
            if self.strict:
                raise UndeclaredEvent(problem)
            if problem not in self._reported:
                self._reported.add(problem)
                log.error("%s (a bug: please report it)", problem)
        return spec

    def subscribe(self, events: set[str] | None = None) -> _Subscription:
        """A live feed of events (only those named in `events`, when given)."""
        sub = _Subscription(self, self._buffer, events)
        self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: _Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)


class _Subscription:
    def __init__(self, bus: EventBus, buffer: int, events: set[str] | None) -> None:
        self._bus = bus
        self._events = events
        self.lagged = 0
        self._pending: dict | None = None
        send, recv = anyio.create_memory_object_stream[dict](max_buffer_size=buffer)
        self._send: MemoryObjectSendStream[dict] = send
        self._recv: MemoryObjectReceiveStream[dict] = recv

    def offer(self, ev: dict) -> None:
        if self._events is not None and ev["event"] not in self._events:
            return
        try:
            self._send.send_nowait(ev)
        except anyio.WouldBlock:
            self.lagged += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.close()

    async def receive(self) -> dict:
        if self._pending is not None:
            ev, self._pending = self._pending, None
            return ev
        ev = await self._recv.receive()
        if self.lagged:
            # report the gap first, then the event that followed it
            lost, self.lagged = self.lagged, 0
            self._pending = ev
            return {"event": LAGGED.name, "ts": round(time.time(), 3), "lost": lost}
        return ev

    def close(self) -> None:
        self._bus._unsubscribe(self)
        self._send.close()
        self._recv.close()

    def __enter__(self) -> _Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_fields(fields: dict[str, Any]) -> str:
    """key=value pairs on one line, values JSON-quoted when they need it (journald-friendly).

    Anything that is not printable (control characters, escapes) is JSON-escaped, so chat text
    can never forge a log line or a terminal escape.
    """
    parts = []
    for k, v in fields.items():
        if isinstance(v, float):
            v = round(v, 4) if math.isfinite(v) else str(v)
        if isinstance(v, str) and v and v.isprintable() and " " not in v and "=" not in v and '"' not in v:
            parts.append(f"{k}={v}")
        else:
            parts.append(f"{k}={escape(json.dumps(v, ensure_ascii=False, default=str))}")
    return " ".join(parts)


def escape(text: str) -> str:
    """`text` with every character that is not printable (C0 and C1 controls, DEL, line and
    paragraph separators, bidi overrides) written as a \\uXXXX escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


_GROUPS = {"utterance": UTTERANCE, "synthesis": SYNTHESIS, "rtf check": RTF_CHECK}


def catalogue_markdown() -> str:
    """The event table for the README (`python -m ishowttsd.events`)."""
    lines = []
    for group, fields in _GROUPS.items():
        lines.append(f"*{group}* fields: " + ", ".join(f"`{f}`" for f in fields) + ".")
    lines += ["", "| event | what it means | fields |", "|---|---|---|"]
    for spec in CATALOGUE.values():
        rest = list(spec.fields)
        names = []
        for group, fields in _GROUPS.items():
            if all(f in rest for f in fields):
                names.append(f"*{group}*")
                rest = [f for f in rest if f not in fields]
        names += [f"`{f}`" for f in rest]
        lines.append(f"| `{spec.name}` | {spec.doc} | {', '.join(names)}{', ...' if spec.open else ''} |")
    return "\n".join(lines) + "\n"


def catalogue() -> list[dict[str, Any]]:
    """The catalogue as data, for the `events` control verb."""
    return [{"event": s.name, "doc": s.doc, "fields": dict(s.fields), "open": s.open} for s in CATALOGUE.values()]


BEGIN, END = "<!-- events:begin -->", "<!-- events:end -->"


def update_readme(path: str) -> None:
    """Rewrite the event table between the README's markers from the catalogue."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest or END not in rest:
        raise SystemExit(f"{path}: put {BEGIN} and {END} around the event table first")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{BEGIN}\n{catalogue_markdown()}{END}{tail}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--update"]:  # python -m ishowttsd.events --update README.md
        update_readme(sys.argv[2])
    else:
        print(catalogue_markdown(), end="")
