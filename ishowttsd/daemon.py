"""The composition root: the only place that knows every part and wires them together."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from pydantic import Field

from ishowttsd import __version__
from ishowttsd.config import Config, ConfigError, default_socket_path, load_config, validate_table
from ishowttsd.control import ControlError, ControlServer, NoParams, Params
from ishowttsd.engines.base import EngineError
from ishowttsd.engines.host import EngineHost
from ishowttsd.events import EventBus
from ishowttsd.hardware import Hardware
from ishowttsd.health import HealthMonitor
from ishowttsd.messages import Deletion, Kind, Message, Priority, User, Utterance
from ishowttsd.journal import Journal, JournalError
from ishowttsd.moderation import Merged, Moderator, Rejection
from ishowttsd.plugins import PluginManager
from ishowttsd.queue import SpeechQueue, ttl_from_config
from ishowttsd.sdnotify import Notifier
from ishowttsd.sink import Sink, SinkContext
from ishowttsd.source import Source, SourceContext
from ishowttsd.speaker import Speaker

log = logging.getLogger("ishowttsd")


# -- control method parameters -------------------------------------------------------------


class SayParams(Params):
    text: str = Field(min_length=1, max_length=2000)
    voice: str | None = None
    priority: str = "urgent"


class InjectParams(Params):
    platform: str = "inject"
    kind: str = "danmaku"
    user: str | dict[str, Any] = "tester"
    text: str = Field(default="", max_length=2000)
    amount: float | None = None
    currency: str | None = None
    id: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


class IdParams(Params):
    id: int


class ClearParams(Params):
    classes: list[str] | None = None


class BenchParams(Params):
    runs: int = Field(default=3, ge=1, le=50)
    voice: str | None = None
    texts: list[str] | None = Field(default=None, min_length=1, max_length=20)
    save_baseline: bool = False


class VoicesReloadParams(Params):
    id: str | None = None  # only this voice; default: every [[voices]] entry


class Daemon:
    def __init__(self, cfg: Config, socket_path: Path, exit_when_done: bool = False, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.socket_path = socket_path
        self.exit_when_done = exit_when_done
        self.started = time.time()
        self.events = EventBus()
        self.plugins = PluginManager(strict=cfg.daemon.strict_plugins)
        self.sources: list[Source] = []
        self.sinks: list[Sink] = []
        q = cfg.queue
        self.queue = SpeechQueue(q.max_pending, self.events, flood_threshold=q.flood_threshold, flood_announce=q.flood_announce)
        self.ttl = ttl_from_config(cfg.queue.ttl)
        self.moderator = Moderator(cfg.moderation, self.ttl)
        self.journal: Journal | None = None
        self.engines: EngineHost | None = None
        self.speaker: Speaker | None = None
        self.control = ControlServer(socket_path)
        self.notifier = notifier or Notifier()
        self.hardware = Hardware(cfg.hardware)
        self.monitor: HealthMonitor | None = None
        self._bench_lock = anyio.Lock()
        self.state = "starting"
        self._finished_sources: set[str] = set()

    # -- wiring ---------------------------------------------------------------------------------

    def build(self) -> None:
        """Load plugins and build sources, sinks and engines from the config. Raises ConfigError."""
        self.plugins.load_all(extra_dirs=[self.cfg.resolve(d) for d in self.cfg.daemon.plugin_dirs])
        state_dir = self.cfg.state_dir()
        sctx = SourceContext(self._on_message, self._on_deletion, self.events, self.cfg, state_dir)
        kctx = SinkContext(self.events, self.cfg, state_dir)
        self.sources = [
            cls(settings, sctx) for cls, settings in self._tables("sources", self.cfg.sources, self.plugins.sources)
        ]
        self.sinks = [cls(settings, kctx) for cls, settings in self._tables("sinks", self.cfg.sinks, self.plugins.sinks)]
        _unique_names("sources", self.sources, self.cfg)
        _unique_names("sinks", self.sinks, self.cfg)
        self.engines = EngineHost(self.cfg, self.plugins.engines, self.events)
        self.speaker = Speaker(self.queue, self.engines, self.sinks, self.events, batch_min_rtf=self.cfg.queue.batch_min_rtf)
        self.speaker.on_spoken.append(lambda u, _st: self._journal_end(u, "spoken", ""))
        self.speaker.on_ended.append(self._journal_end)
        self.speaker.on_started.append(lambda u: self.journal.started(u) if self.journal else 0)
        self.queue.on_discard.append(self._journal_end)
        self.monitor = HealthMonitor(
            self.cfg, self.events, self.hardware, engines=self.engines, speaker=self.speaker, queue=self.queue,
            sources=self.sources, sinks=self.sinks, plugins=self.plugins, state=lambda: self.state,
        )  # fmt: skip
        self.speaker.on_spoken.append(self.monitor.on_spoken)

    def _tables(self, kind: str, tables, registry) -> list:
        out = []
        for i, table in enumerate(tables):
            if not table.enabled:
                continue
            cls = registry.get(table.type)
            if cls is None:
                broken = [r.name for r in self.plugins.broken]
                hint = f" (broken plugins: {broken})" if broken else ""
                raise ConfigError(
                    f"{self.cfg.path or 'config'}: {kind}[{i}].type: unknown {kind[:-1]} type {table.type!r}; "
                    f"known: {sorted(registry)}{hint}"
                )
            settings = validate_table(cls.Settings, table.model_dump(exclude_unset=True), f"{kind}[{i}]", self.cfg.path)
            out.append((cls, settings))
        return out

    # -- the message path ---------------------------------------------------------------------

    def _on_message(self, source: Source | None, m: Message) -> Utterance | Rejection:
        name = source.name if source else "control"
        self.events.publish(
            "received", source=name, platform=m.platform, kind=m.kind.value, user=m.user.name, text=m.text, message_id=m.id
        )
        result = self.moderator.moderate(m, source=name, flood=self.queue.flooded, is_pending=self.queue.contains)
        if isinstance(result, Rejection):
            self.events.publish(
                "filtered", source=name, platform=m.platform, kind=m.kind.value, user=m.user.name,
                reason=result.reason, detail=result.detail,
            )  # fmt: skip
            return result
        if isinstance(result, Merged):  # a gift combo grew: the waiting utterance says the total
            self.events.publish("merged", **result.utterance.event_fields(), total=result.total, message_id=m.id)
            if self.journal:
                self.journal.update_text(result.utterance)
            return result.utterance
        if self.journal and self.journal.wants(result):
            self.journal.add(result)  # committed before the queue (or its bound) can touch it
        self.queue.put(result)
        return result

    # -- the journal and reload (issue 6) ---------------------------------------------------------

    def _journal_end(self, u: Utterance, outcome: str, reason: str) -> None:
        if self.journal is None or not self.journal.tracks(u):
            return
        if outcome == "cut" and reason == "skipped" and self.state == "stopping":
            return  # cut by our own shutdown: still owed, spoken after the restart
        if outcome == "failed" and self.journal.attempts(u) < self.journal.max_attempts and not u.expired():
            # paid speech gets another try (a transient engine error must not lose a super chat)
            self.events.publish("retry", **u.event_fields(), attempts=self.journal.attempts(u), reason=reason)
            self.queue.put(u)
            return
        self.journal.finish(u, outcome, reason)

    def open_journal(self) -> None:
        """Open the journal and queue again what a crash or restart left unsaid."""
        jc = self.cfg.journal
        if not jc.enabled:
            return
        path = self.cfg.resolve(jc.path) if jc.path else self.cfg.state_dir() / "journal.sqlite3"
        self.journal = Journal(path, jc.synchronous)
        try:
            self.journal.open()
        except JournalError as e:
            raise ConfigError(str(e)) from None
        self.journal.prune(jc.keep_days)
        now = time.monotonic()
        for platform, mid in self.journal.recent_message_ids():
            self.moderator.state.seen_id(platform, mid, now)
        live, stale, given_up = self.journal.recover()
        for s in stale:
            log.warning("journal: not said before its time-to-live ran out while stopped: %s", s.to_dict())
            self.events.publish("journal_stale", **s.to_dict(), reason="ttl_while_stopped")
        for s in given_up:
            log.error("journal: given up after repeated attempts without being said: %s", s.to_dict())
            self.events.publish("journal_stale", **s.to_dict(), reason="too_many_attempts")
        for u in live:
            self.events.publish("recovered", **u.event_fields(), age_s=round(time.time() - u.created_wall, 1))
            self.queue.put(u)

    def reload(self) -> dict[str, Any]:
        """Re-read the config file and swap moderation and queue policy; a bad file changes nothing."""
        if self.cfg.path is None:
            raise ConfigError("started without --config: there is no file to reload")
        new = load_config(self.cfg.path)
        # the whole file must be one the daemon would start with, or the next restart goes silent
        self._tables("sources", new.sources, self.plugins.sources)
        self._tables("sinks", new.sinks, self.plugins.sinks)
        EngineHost(new, self.plugins.engines, self.events)  # checks engines, engine tables, voices
        ttl = ttl_from_config(new.queue.ttl)
        moderator = Moderator(new.moderation, ttl, state=self.moderator.state)  # validates templates too
        changed = [k for k in ("moderation", "queue") if getattr(new, k) != getattr(self.cfg, k)]
        restart = [k for k in type(new).model_fields if k not in ("moderation", "queue") and getattr(new, k) != getattr(self.cfg, k)]
        self.moderator, self.ttl = moderator, ttl  # nothing above this line changed any state
        self.cfg.moderation, self.cfg.queue = new.moderation, new.queue
        q = new.queue
        dropped = self.queue.configure(q.max_pending, q.flood_threshold, q.flood_announce)
        self.speaker.batch_min_rtf = q.batch_min_rtf
        self.events.publish("reloaded", config=str(self.cfg.path), changed=changed, restart_needed=restart, dropped=len(dropped))
        return {"config": str(self.cfg.path), "changed": changed, "restart_needed": restart, "dropped": len(dropped)}

    def _on_deletion(self, source: Source | None, d: Deletion) -> None:
        ids = set(d.message_ids)

        def match(u: Utterance) -> bool:
            m = u.message
            if m is None or m.platform != d.platform:
                return False
            return d.everything or (m.id and m.id in ids) or (d.user_id is not None and m.user.id == d.user_id)

        removed = self.queue.remove_where(match, reason=f"deleted:{d.reason or 'platform'}")
        cut = self.speaker.cut_where(match, reason="deleted") if self.speaker else []
        self.events.publish(
            "deletion", platform=d.platform, message_ids=d.message_ids, user_id=d.user_id,
            everything=d.everything, removed=len(removed), cut=len(cut),
        )  # fmt: skip

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        self.build()
        self._register_methods()
        listener = await self.control.bind()
        try:
            self.open_journal()  # after bind: a second daemon on this socket is refused first
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self.notifier.watchdog_loop)
                tg.start_soon(self.control.serve, listener)
                tg.start_soon(self._signals, tg)
                # the socket is bound and the plugins are loaded: systemd may start what needs us
                self.notifier.ready(status=f"loading engine {self.cfg.engine.default}")
                for sink in self.sinks:
                    await self._start_sink(sink)
                for src in self.sources:
                    tg.start_soon(self._run_source, src)
                self.events.publish(
                    "started", version=__version__, socket=str(self.socket_path), pid=os.getpid(),
                    sources=len(self.sources), sinks=len(self.sinks), broken_plugins=len(self.plugins.broken),
                )  # fmt: skip
                tg.start_soon(self._telemetry_loop)
                tg.start_soon(self.monitor.run, self._refresh_hardware)
                await self.engines.start()
                self.state = "running"
                self.events.publish("ready", engine=self.engines.active)
                self.notifier.status(self._status_line())
                tg.start_soon(self.speaker.run)
                if self.exit_when_done:
                    tg.start_soon(self._exit_when_done, tg)
        finally:
            self.state = "stopping"
            self.notifier.stopping()
            self.control.unlink()
            with anyio.CancelScope(shield=True):
                for part in [*self.sources, *self.sinks]:
                    with anyio.move_on_after(3):
                        try:
                            await part.close()
                        except Exception as e:
                            log.warning("closing %s failed: %s", part.name, e)
            if self.journal:
                self.journal.close()
            self.hardware.close()
            self.events.publish("stopped", uptime_s=round(time.time() - self.started, 1))
            self.notifier.close()

    async def _start_sink(self, sink: Sink) -> None:
        try:
            with anyio.fail_after(10):
                await sink.start()
            sink.set_state("ok")
        except Exception as e:
            sink.set_state("error", "start failed", error=f"{type(e).__name__}: {e}")

    async def _run_source(self, src: Source) -> None:
        try:
            await src.run()
            if src.finite and src.state not in ("finished", "failed"):
                src.set_state("finished")
        except Exception as e:  # a broken source is reported, never fatal
            log.exception("source %s crashed", src.name)
            src.set_state("failed", "crashed; see the log", error=f"{type(e).__name__}: {e}")
        finally:
            self._finished_sources.add(src.name)

    async def _signals(self, tg) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        self.reload()
                    except ConfigError as e:
                        log.error("reload refused; the old config stays in force: %s", e)
                        self.events.publish("reload_failed", error=str(e))
                    continue
                self.state = "stopping"
                log.info("signal %s received; stopping", signal.Signals(signum).name)
                if self.speaker:
                    self.speaker.skip()
                tg.cancel_scope.cancel()
                return

    async def _exit_when_done(self, tg) -> None:
        while True:
            await anyio.sleep(0.1)
            live = [s for s in self.sources if s.name not in self._finished_sources]
            if not live and self.speaker.idle():
                await anyio.sleep(0.2)  # let the last events reach watchers
                if self.speaker.idle():
                    tg.cancel_scope.cancel()
                    return

    async def _telemetry_loop(self) -> None:
        """Sample the hardware, publish `telemetry`, feed the health monitor, update STATUS=."""
        failed = False
        while True:
            try:
                t = await anyio.to_thread.run_sync(self._sample_hardware)
                self.monitor.sample_memory()
                self.events.publish("telemetry", **{k: v for k, v in t.items() if k != "ts"})
                failed = False
            except Exception as e:  # telemetry is never worth dying for
                if not failed:
                    log.warning("hardware telemetry failed: %s: %s", type(e).__name__, e)
                failed = True
            self.notifier.status(self._status_line())
            await anyio.sleep(self.cfg.hardware.telemetry_interval_s)

    def _sample_hardware(self) -> dict[str, Any]:
        if self.hardware.info is None:
            self.hardware.detect()
        self.hardware.performance()
        return self.hardware.telemetry()

    async def _refresh_hardware(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """A fresh sample for a health answer: CPU use by others measured over half a second."""

        def work():
            self.hardware.cpu_contention()
            time.sleep(0.5)
            perf = self.hardware.performance()
            return self.hardware.telemetry(), perf

        return await anyio.to_thread.run_sync(work)

    def _status_line(self) -> str:
        """One line for `systemctl status` (sd_notify STATUS=)."""
        if self.state != "running" or self.speaker is None:
            return f"{self.state}: loading engine {self.cfg.engine.default}"
        sp = self.speaker.status()
        h = self.health()["status"] if self.monitor else "?"
        rtf = sp.get("rtf_median")
        return (f"running: {self.engines.active}, {sp['spoken']} spoken, {len(self.queue)} queued"
                f"{', paused' if sp['paused'] else ''}, median RTF {rtf if rtf is not None else '-'}, health {h}")  # fmt: skip

    # -- reports ---------------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        c = self.events.counts
        return {k: c.get(k, 0) for k in ("received", "filtered", "merged", "queued", "dropped", "expired", "spoken", "failed", "cut")}

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "state": self.state,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1),
            "socket": str(self.socket_path),
            "config": str(self.cfg.path) if self.cfg.path else None,
            "counts": self.counts(),
            "reasons": dict(self.events.reasons),
            "queue": self.queue.stats(),
            "journal": self.journal.status() if self.journal else None,
            "speaker": self.speaker.status() if self.speaker else None,
            "engine": self.engines.status() if self.engines else None,
            "sources": [s.status() for s in self.sources],
            "sinks": [s.status() for s in self.sinks],
            "plugins": {"loaded": sum(1 for r in self.plugins.records if r.state == "loaded"),
                        "broken": [r.to_dict() for r in self.plugins.broken]},
            "hardware": self.hardware.snapshot(),
        }  # fmt: skip

    def health(self) -> dict[str, Any]:
        """The self-checks (ishowttsd.health), from the latest hardware sample."""
        return self.monitor.report()

    def summary(self) -> dict[str, Any]:
        rtfs = list(self.speaker.rtfs) if self.speaker else []
        return {
            **self.counts(),
            "reasons": dict(self.events.reasons),
            "rtf_median": round(statistics.median(rtfs), 4) if rtfs else None,
            "rtf_min": round(min(rtfs), 4) if rtfs else None,
            "rtf_max": round(max(rtfs), 4) if rtfs else None,
            "engine": self.engines.active if self.engines else None,
        }

    # -- control methods -----------------------------------------------------------------------

    def _register_methods(self) -> None:
        c = self.control
        c.method("status", self._m_status)
        c.method("health", self._m_health)
        c.method("say", self._m_say, SayParams)
        c.method("inject", self._m_inject, InjectParams)
        c.method("queue", self._m_queue)
        c.method("queue.remove", self._m_queue_remove, IdParams)
        c.method("skip", self._m_skip)
        c.method("pause", self._m_pause)
        c.method("resume", self._m_resume)
        c.method("clear", self._m_clear, ClearParams)
        c.method("voices", self._m_voices)
        c.method("voices.reload", self._m_voices_reload, VoicesReloadParams)
        c.method("plugins", self._m_plugins)
        c.method("events.watch", self._m_watch, stream=True)
        c.method("reload", self._m_reload)
        c.method("metrics", self._m_metrics)
        c.method("bench", self._m_bench, BenchParams)

    async def _m_status(self, _: NoParams) -> dict:
        return self.status()

    async def _m_health(self, _: NoParams) -> dict:
        await self._refresh_hardware()
        return self.health()

    async def _m_metrics(self, _: NoParams) -> dict:
        from ishowttsd.metrics import render

        rtf = self.monitor.rtf_report()
        return {"text": render(self.status(), self.health(), rtf)}

    async def _m_bench(self, p: BenchParams) -> dict:
        engines = self._ready_engines()
        if p.voice is not None and not engines.has_voice(p.voice):
            raise ControlError("unknown_voice", f"no voice {p.voice!r}; list them with `ishowttsctl voices`")
        if self._bench_lock.locked():
            raise ControlError("busy", "a bench is already running; wait for it to finish")
        async with self._bench_lock:
            try:
                return await self.monitor.bench(p.voice, p.runs, p.texts, p.save_baseline)
            except OSError as e:
                raise ControlError("baseline_not_saved", f"cannot write {self.monitor.baselines.path}: {e.strerror}; "
                                   "check [health] baseline_file and its folder's permissions") from None  # fmt: skip
            except (EngineError, RuntimeError) as e:
                raise ControlError("bench_failed", str(e)) from None

    def _ready_engines(self) -> EngineHost:
        if self.engines is None or self.engines.active is None:
            raise ControlError("not_ready", "the engine is still loading; try again in a moment (see `ishowttsctl status`)")
        return self.engines

    async def _m_reload(self, _: NoParams) -> dict:
        try:
            return self.reload()
        except ConfigError as e:
            self.events.publish("reload_failed", error=str(e))
            raise ControlError("config_error", f"reload refused, the old config stays in force:\n{e}") from None

    async def _m_say(self, p: SayParams) -> dict:
        try:
            prio = Priority.parse(p.priority)
        except ValueError as e:
            raise ControlError("invalid_params", str(e)) from None
        if p.voice is not None and not self._ready_engines().has_voice(p.voice):
            raise ControlError("unknown_voice", f"no voice {p.voice!r}; list them with `ishowttsctl voices`")
        ttl = self.ttl.get(prio)
        utt = Utterance(
            text=p.text.strip(), priority=prio, voice=p.voice, source="control",
            deadline=None if ttl is None else time.monotonic() + ttl,
        )  # fmt: skip
        dropped = self.queue.put(utt)
        return {"queued": utt.id not in {d.id for d in dropped}, "id": utt.id}

    async def _m_inject(self, p: InjectParams) -> dict:
        try:
            kind = Kind(p.kind)
        except ValueError:
            raise ControlError("invalid_params", f"unknown kind {p.kind!r}; use one of {[k.value for k in Kind]}") from None
        try:
            user = User(name=p.user) if isinstance(p.user, str) else User(**p.user)
        except TypeError as e:
            raise ControlError("invalid_params", f"user: {e}") from None
        m = Message(
            platform=p.platform, kind=kind, text=p.text, user=user, amount=p.amount,
            currency=p.currency, id=p.id, extra=p.extra,
        )  # fmt: skip
        result = self._on_message(None, m)
        if isinstance(result, Rejection):
            return {"accepted": False, "reason": result.reason, "detail": result.detail}
        return {"accepted": True, "id": result.id, "text": result.text, "priority": result.priority.name.lower()}

    async def _m_queue(self, _: NoParams) -> dict:
        sp = self.speaker.status() if self.speaker else {}
        return {
            "speaking": sp.get("speaking"),
            "prepared": sp.get("prepared", []),
            "pending": [u.summary() for u in self.queue.pending()],
            "paused": sp.get("paused", False),
        }

    async def _m_queue_remove(self, p: IdParams) -> dict:
        u = self.queue.remove(p.id)
        cut = self.speaker.cut_where(lambda x: x.id == p.id, "removed") if self.speaker else []
        if u is None and not cut:
            raise ControlError("not_found", f"no pending utterance {p.id}; see `ishowttsctl queue`")
        return {"removed": p.id}

    async def _m_skip(self, _: NoParams) -> dict:
        u = self.speaker.skip() if self.speaker else None
        return {"skipped": u.id if u else None}

    async def _m_pause(self, _: NoParams) -> dict:
        await self.speaker.pause()
        return {"paused": True}

    async def _m_resume(self, _: NoParams) -> dict:
        await self.speaker.resume()
        return {"paused": False}

    async def _m_clear(self, p: ClearParams) -> dict:
        try:
            classes = None if p.classes is None else {Priority.parse(c) for c in p.classes}
        except ValueError as e:
            raise ControlError("invalid_params", str(e)) from None
        removed = self.queue.clear(classes)
        cut = self.speaker.cut_where(lambda u: classes is None or u.priority in classes, "cleared") if self.speaker else []
        return {"removed": len(removed), "cut": len(cut)}

    async def _m_voices(self, _: NoParams) -> dict:
        return {"voices": self._ready_engines().voices(), "default": self.cfg.engine.default_voice}

    async def _m_voices_reload(self, p: VoicesReloadParams) -> dict:
        """Re-read `[[voices]]` from the config file and (re)prepare them: added and edited
        voices (reference audio or text) are picked up without a restart."""
        engines = self._ready_engines()
        voices = self.cfg.voices
        if self.cfg.path is not None:
            try:
                voices = load_config(self.cfg.path).voices
            except ConfigError as e:
                raise ControlError("config_error", str(e)) from None
        if p.id is not None:
            voices = [v for v in voices if v.id == p.id]
            if not voices:
                raise ControlError("unknown_voice", f"no [[voices]] entry with id {p.id!r} in {self.cfg.path or 'the config'}")
        reloaded, errors = [], {}
        for vc in voices:
            if await engines.add_voice(vc) is None:
                errors[vc.id] = engines.voice_errors.get(vc.id, "failed")
            else:
                reloaded.append(vc.id)
        self.events.publish("voices.reloaded", voices=reloaded, errors=len(errors))
        return {"reloaded": reloaded, "errors": errors}

    async def _m_plugins(self, _: NoParams) -> dict:
        return {
            "plugins": self.plugins.summary(),
            "sources": sorted(self.plugins.sources),
            "sinks": sorted(self.plugins.sinks),
            "engines": sorted(self.plugins.engines),
        }

    async def _m_watch(self, _: NoParams):
        sub = self.events.subscribe()

        async def stream():
            with sub:
                while True:
                    yield await sub.receive()

        return {"status": self.status()}, stream()


def _unique_names(kind: str, parts, cfg: Config) -> None:
    seen = set()
    for p in parts:
        if p.name in seen:
            raise ConfigError(f"{cfg.path or 'config'}: {kind}: two entries are named {p.name!r}; give each a distinct `name`")
        seen.add(p.name)


def setup_logging(level: str) -> None:
    # under systemd journald stamps each line itself; elsewhere we add the time
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True)


def print_summary(summary: dict[str, Any], out=sys.stdout) -> None:
    print("\nishowttsd summary", file=out)
    for key in ("received", "filtered", "queued", "spoken", "dropped", "expired", "cut", "failed"):
        print(f"  {key:<9} {summary.get(key, 0)}", file=out)
    for reason, n in sorted(summary.get("reasons", {}).items()):
        print(f"    {reason:<24} {n}", file=out)
    rtf = summary.get("rtf_median")
    if rtf is not None:
        print(f"  median RTF {rtf:.4f} (min {summary['rtf_min']:.4f}, max {summary['rtf_max']:.4f}) on {summary['engine']}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ishowttsd", description="Speak live chat aloud.")
    ap.add_argument("--config", "-c", help="TOML config file (default: built-in defaults)")
    ap.add_argument("--socket", help="control socket path (overrides [daemon] socket)")
    ap.add_argument("--exit-when-done", action="store_true", help="exit once finite sources are replayed and all speech is done")
    ap.add_argument("--summary", action="store_true", help="print a summary of what happened on exit")
    ap.add_argument("--summary-json", help="also write the summary as JSON to this file")
    ap.add_argument("--check-config", action="store_true", help="validate the config and plugins, then exit")
    ap.add_argument("--version", action="version", version=f"ishowttsd {__version__}")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"ishowttsd: config error:\n{e}", file=sys.stderr)
        return 78  # EX_CONFIG: systemd will not restart-loop on a bad config with RestartPreventExitStatus
    setup_logging(cfg.daemon.log_level)
    sock = Path(args.socket or cfg.daemon.socket or default_socket_path())
    if args.socket is None and cfg.daemon.socket:
        sock = cfg.resolve(cfg.daemon.socket)
    try:
        daemon = Daemon(cfg, sock, exit_when_done=args.exit_when_done, notifier=Notifier.from_environment())
    except ConfigError as e:  # e.g. a template with an unknown field
        print(f"ishowttsd: config error:\n{cfg.path or 'config'}: {e}", file=sys.stderr)
        return 78
    if args.check_config:
        try:
            daemon.build()
        except ConfigError as e:
            print(f"ishowttsd: config error:\n{e}", file=sys.stderr)
            return 78
        print(f"{args.config or 'defaults'}: OK")
        return 0
    try:
        anyio.run(daemon.run)
    except ConfigError as e:
        print(f"ishowttsd: config error:\n{e}", file=sys.stderr)
        return 78
    except (EngineError, RuntimeError, OSError) as e:
        log.error("cannot run: %s", e)
        return 1
    except KeyboardInterrupt:
        pass
    summary = daemon.summary()
    if args.summary:
        print_summary(summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
