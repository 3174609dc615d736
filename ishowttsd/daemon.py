"""The composition root: the only place that knows every part, wires them, and runs their lifecycle."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import anyio

from ishowttsd import __version__
from ishowttsd.api import Api, Runtime
from ishowttsd.channels import Channels
from ishowttsd.chat_commands import ChatCommands
from ishowttsd.config import Config, ConfigError, load_config, validate_table
from ishowttsd.control import MAX_LINE, ControlServer
from ishowttsd.direct import DirectSynthesis
from ishowttsd.engines.host import EngineHost
from ishowttsd.events import EventBus
from ishowttsd.greetings import Greeter
from ishowttsd.hardware import Hardware
from ishowttsd.health import HealthMonitor
from ishowttsd.intake import Intake
from ishowttsd.lineup import Lineup
from ishowttsd.live_settings import FILE_NAME as LIVE_FILE, LiveSettings
from ishowttsd.moderation import Moderator
from ishowttsd.paid import PaidSpeech
from ishowttsd.plugins import PluginManager
from ishowttsd.queue import SpeechQueue, ttl_from_config
from ishowttsd.sdnotify import Notifier
from ishowttsd.sink import Sink, SinkContext
from ishowttsd.source import Source, SourceContext
from ishowttsd.speaker import Speaker
from ishowttsd.stall import LoopWatch
from ishowttsd.voicestore import VoiceStore

log = logging.getLogger("ishowttsd")

# the config tables a reload applies at once; every other change needs a restart
RELOADABLE = ("moderation", "queue", "greetings", "commands")


class Daemon:
    """Builds the parts from a config (`build`), then runs them until a signal (`run`)."""

    def __init__(self, cfg: Config, socket_path: Path, exit_when_done: bool = False, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.exit_when_done = exit_when_done
        self.runtime = Runtime(socket=str(socket_path), config=str(cfg.path) if cfg.path else None)
        self.events = EventBus()
        dc = cfg.daemon
        self.plugins = PluginManager(strict=dc.strict_plugins, load_timeout_s=dc.plugin_load_timeout_s)
        self.loop_watch = LoopWatch(dc.stall_warn_s, dc.stall_exit_s, dc.stop_timeout_s, self.plugins.plugin_of, self.events)
        q = cfg.queue
        self.queue = SpeechQueue(q.max_pending, self.events, flood_threshold=q.flood_threshold, flood_announce=q.flood_announce)
        self.ttl = ttl_from_config(q.ttl)
        try:
            # checks the templates and replacement patterns: an error here is early
            self.moderator = Moderator(cfg.moderation, self.ttl, report=self.events.publish, rewrite=self.plugins.rewrite_text,
                                       live_default=self._live_default)  # fmt: skip
        except ConfigError as e:
            raise ConfigError(f"{cfg.path or 'config'}: {e}") from None
        # a voice upload (base64) must fit one request line
        upload_line = int(cfg.web.upload_max_mb * 1024 * 1024 * 4 / 3) + MAX_LINE
        self.control = ControlServer(socket_path, max_line=max(MAX_LINE, upload_line),
                                     idle_timeout=cfg.daemon.control_idle_timeout_s)  # fmt: skip
        self.notifier = notifier or Notifier()
        self.hardware = Hardware(cfg.hardware)
        self.sources: list[Source] = []
        self.sinks: list[Sink] = []
        self.channels = Channels()  # frames from parts to front-door clients (overlay audio)
        self.web = None

    @property
    def state(self) -> str:
        return self.runtime.state

    # -- wiring ---------------------------------------------------------------------------------

    def build(self) -> None:
        """Load plugins and build every part from the config. Raises ConfigError."""
        cfg = self.cfg
        self.plugins.load_all(extra_dirs=[cfg.resolve(d) for d in cfg.daemon.plugin_dirs])
        state_dir = cfg.state_dir()
        sctx = SourceContext(lambda s, m: self.intake.message(s.name if s else None, m),
                             lambda s, d: self.intake.deletion(s.name if s else None, d), self.events, cfg, state_dir)  # fmt: skip
        kctx = SinkContext(self.events, cfg, state_dir, self.channels)
        self.sources = [cls(settings, sctx) for cls, settings in self._tables("sources", cfg.sources, self.plugins.sources)]
        self.sinks = [cls(settings, kctx) for cls, settings in self._tables("sinks", cfg.sinks, self.plugins.sinks)]
        self.sinks += self._web_sinks(kctx)
        self.lineup = Lineup(self.sources, lambda cls, settings: cls(settings, sctx))
        _unique_names("sources", self.sources, cfg)
        _unique_names("sinks", self.sinks, cfg)
        self.live = LiveSettings(state_dir / LIVE_FILE)  # volumes, rate, default voice set at run time
        self.engines = EngineHost(cfg, self.plugins.engines, self.events, live=self.live)
        self.speaker = Speaker(self.queue, self.engines, self.sinks, self.events, batch_min_rtf=cfg.queue.batch_min_rtf,
                               live=self.live)  # fmt: skip
        self.paid = PaidSpeech(cfg, self.queue, self.events, stopping=lambda: self.runtime.state == "stopping",
                               said=self.speaker.said, audible=self.speaker.audible)  # fmt: skip
        self.commands = ChatCommands(cfg.commands, state_dir, self.events, has_voice=lambda v: self.engines.has_voice(v))
        self.greeter = Greeter(cfg.greetings, self.paid.admit, self.queue, self.speaker, self.events)
        self.speaker.on_spoken.append(self.greeter.ended)
        self.speaker.on_ended.append(self.greeter.ended)
        self.queue.on_discard.append(self.greeter.ended)
        self.intake = Intake(self.moderator, self.ttl, self.queue, self.speaker, self.paid, self.events,
                             commands=self.commands, greeter=self.greeter)  # fmt: skip
        self.monitor = HealthMonitor(
            cfg, self.events, self.hardware, engines=self.engines, speaker=self.speaker, queue=self.queue,
            sources=self.sources, sinks=self.sinks, plugins=self.plugins, state=lambda: self.runtime.state,
            paid=self.paid, loop_watch=self.loop_watch, live=self.live,
        )  # fmt: skip
        self.speaker.on_started.append(self.paid.started)
        self.speaker.on_spoken.append(self.paid.spoken)
        self.speaker.on_delivered.append(self.paid.delivered)
        self.speaker.on_synthesized.append(self.paid.synthesized)
        self.speaker.on_spoken.append(self.monitor.on_spoken)
        self.speaker.on_ended.append(self.paid.ended)
        self.queue.on_discard.append(self.paid.ended)
        self.voicestore = VoiceStore(state_dir / "voices")
        if cfg.web.enabled:
            from ishowttsd.web import WebServer  # starlette and uvicorn load only when the web is on

            self.web = WebServer(cfg, self.events, self.channels)
        self.api = Api(
            config=cfg, runtime=self.runtime, events=self.events, queue=self.queue, speaker=self.speaker,
            engines=self.engines, health=self.monitor, hardware=self.hardware, plugins=self.plugins,
            sources=self.sources, sinks=self.sinks, intake=self.intake, paid=self.paid, reload=self.reload,
            lineup=self.lineup, history=next((s for s in self.sinks if s.type == "history"), None),
            voicestore=self.voicestore, direct=DirectSynthesis(self.engines, self.queue, self.speaker, cfg.web),
            web=self.web, live=self.live,
        )  # fmt: skip
        self.control.api = self.api
        self.commands.act = self.api.call  # chat commands act through the control verbs
        if self.web is not None:
            self.web.api = self.api

    def _web_sinks(self, ctx: SinkContext) -> list[Sink]:
        """With the web on: a `browser` sink (overlay audio) and a `history` sink, unless the
        config has a table of that type or `[web]` switches them off."""
        w, have = self.cfg.web, {s.type for s in self.sinks}
        if not w.enabled:
            return []
        wanted = [("browser", {})] if w.overlay_audio else []
        if w.history:
            wanted.append(("history", {"keep": w.history, "max_mb": w.history_max_mb}))
        out = []
        for kind, extra in wanted:
            cls = self.plugins.sinks.get(kind)
            if kind not in have and cls is not None:
                out.append(cls(cls.Settings(type=kind, **extra), ctx))
        return out

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

    def _live_default(self) -> str | None:
        """The default voice the streamer chose at run time (it comes before [moderation] default_voice)."""
        return self.live.data.default_voice

    def reload(self) -> dict[str, Any]:
        """Re-read the config file and swap moderation and queue policy; a bad file changes
        nothing and is reported (`reload_failed`). Raises ConfigError."""
        try:
            return self._reload()
        except ConfigError as e:
            self.events.publish("reload_failed", error=f"reload refused, the old config stays in force: {e}")
            raise

    def _reload(self) -> dict[str, Any]:
        if self.cfg.path is None:
            raise ConfigError("started without --config: there is no file to reload")
        try:
            empty = not self.cfg.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            empty = False  # load_config says what is wrong with it
        if empty:
            raise ConfigError(f"{self.cfg.path} is empty (half-written by an editor?); reloading it would drop every "
                              "moderation rule. Save the whole file again, then reload")  # fmt: skip
        new = load_config(self.cfg.path)
        # the whole file must be one the daemon would start with, or the next restart goes silent
        self._tables("sources", new.sources, self.plugins.sources)
        self._tables("sinks", new.sinks, self.plugins.sinks)
        EngineHost(new, self.plugins.engines, self.events)  # checks engines, engine tables, voices
        ttl = ttl_from_config(new.queue.ttl)
        try:
            moderator = Moderator(new.moderation, ttl, state=self.intake.moderator.state, live_default=self._live_default,
                                  report=self.events.publish, rewrite=self.plugins.rewrite_text)
        except ConfigError as e:
            raise ConfigError(f"{self.cfg.path}: {e}") from None
        changed = [k for k in RELOADABLE if getattr(new, k) != getattr(self.cfg, k)]
        details = _policy_changes(self.cfg, new)
        restart = [k for k in type(new).model_fields if k not in RELOADABLE and getattr(new, k) != getattr(self.cfg, k)]
        # nothing above this line changed any state
        self.intake.swap(moderator, ttl)
        self.cfg.moderation, self.cfg.queue = new.moderation, new.queue
        self.commands.configure(new.commands)
        self.greeter.configure(new.greetings)
        self.cfg.commands, self.cfg.greetings = new.commands, new.greetings
        q = new.queue
        dropped = self.queue.configure(q.max_pending, q.flood_threshold, q.flood_announce)
        self.speaker.batch_min_rtf = q.batch_min_rtf
        result = {"config": str(self.cfg.path), "changed": changed, "details": details, "restart_needed": restart,
                  "dropped": len(dropped)}  # fmt: skip
        self.events.publish("reloaded", **result)
        return result

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        self.build()
        listener = await self.control.bind()
        try:
            # after bind: a second daemon on this socket is refused before it touches the journal
            self.paid.open(lambda platform, mid: self.intake.moderator.state.seen_id(platform, mid, time.monotonic()))
            self.live.load()
            if self.live.problem:
                self.events.publish("live.problem", path=str(self.live.path), problem=self.live.problem,
                                    moved_to=self.live.moved_to)  # fmt: skip
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.loop_watch.run)
                tg.start_soon(self.notifier.watchdog_loop)
                tg.start_soon(self.control.serve, listener)
                if self.web is not None:
                    await tg.start(self.web.run)
                tg.start_soon(self._signals, tg)
                # the socket is bound and the plugins are loaded: systemd may start what needs us
                self.notifier.ready(status=f"loading engine {self.cfg.engine.default}")
                for sink in self.sinks:
                    await self._start_sink(sink)
                await tg.start(self.lineup.run)
                self.events.publish(
                    "started", version=__version__, socket=self.runtime.socket, pid=self.runtime.pid,
                    sources=len(self.sources), sinks=len(self.sinks), broken_plugins=len(self.plugins.broken),
                )  # fmt: skip
                tg.start_soon(self._telemetry_loop)
                tg.start_soon(self.monitor.run, self._refresh_hardware)
                tg.start_soon(self.paid.run)
                tg.start_soon(self.commands.run)
                tg.start_soon(self.greeter.run)
                await self.engines.start()
                await self._uploaded_voices()
                chosen = self.live.default_voice
                if chosen and not self.engines.has_voice(chosen):  # kept: it may come back (an engine, an upload)
                    instead = self.engines.default_voice or "the engine's first voice"
                    self.events.publish("voice.fallback", voice=chosen, engine=self.engines.active,
                                        reason=f"the default voice chosen live is not available; {instead} speaks")  # fmt: skip
                self.runtime.state = "running"
                self.events.publish("ready", engine=self.engines.active)
                self.notifier.status(self._status_line())
                tg.start_soon(self.speaker.run)
                if self.exit_when_done:
                    tg.start_soon(self._exit_when_done, tg)
        finally:
            self.runtime.state = "stopping"
            self.notifier.stopping()
            self.control.unlink()
            with anyio.CancelScope(shield=True):
                for part in [*self.sources, *self.sinks]:
                    with anyio.move_on_after(3):
                        try:
                            await part.close()
                        except Exception as e:
                            log.warning("closing %s failed: %s", part.name, e)
            self.paid.close()
            self.commands.close()
            self.hardware.close()
            self.events.publish("stopped", uptime_s=round(time.time() - self.runtime.started, 1))
            self.notifier.close()

    async def _start_sink(self, sink: Sink) -> None:
        try:
            with anyio.fail_after(10):
                await sink.start()
            sink.set_state("ok")
        except Exception as e:
            sink.set_state("error", "start failed", error=f"{type(e).__name__}: {e}")

    async def _uploaded_voices(self) -> None:
        """Voices uploaded in earlier runs (state folder) replace their `[[voices]]` entries."""
        for vc in await anyio.to_thread.run_sync(self.voicestore.entries):
            await self.engines.add_voice(vc)

    async def _signals(self, tg) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            # the loop learns of a signal through its wakeup fd; this handler also tells the loop's
            # watcher, which ends the process if a blocked loop cannot act on it
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self.loop_watch.term_requested)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        self.reload()
                    except ConfigError:
                        pass  # reported by reload(); the old config stays in force
                    continue
                self.runtime.state = "stopping"
                log.info("signal %s received; stopping", signal.Signals(signum).name)
                self.speaker.skip()
                tg.cancel_scope.cancel()
                return

    async def _exit_when_done(self, tg) -> None:
        while True:
            await anyio.sleep(0.1)
            live = [s for s in self.sources if s.name not in self.lineup.finished]
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
                t = await anyio.to_thread.run_sync(self.hardware.sample)
                self.monitor.sample_memory()
                self.events.publish("telemetry", **{k: v for k, v in t.items() if k != "ts"})
                failed = False
            except Exception as e:  # telemetry is never worth dying for
                if not failed:
                    log.warning("hardware telemetry failed: %s: %s", type(e).__name__, e)
                failed = True
            self.notifier.status(self._status_line())
            await anyio.sleep(self.cfg.hardware.telemetry_interval_s)

    async def _refresh_hardware(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """A fresh sample for judging a regression: CPU use by others over half a second."""
        return await anyio.to_thread.run_sync(self.hardware.sample_for_health)

    def _status_line(self) -> str:
        """One line for `systemctl status` (sd_notify STATUS=)."""
        if self.runtime.state != "running":
            return f"{self.runtime.state}: loading engine {self.cfg.engine.default}"
        sp = self.speaker.status()
        rtf = sp.get("rtf_median")
        return (f"running: {self.engines.active}, {sp['spoken']} spoken, {len(self.queue)} queued"
                f"{', paused' if sp['paused'] else ''}, median RTF {rtf if rtf is not None else '-'}, "
                f"health {self.monitor.report()['status']}")  # fmt: skip


def _policy_changes(old: Config, new: Config) -> list[str]:
    """What a reload changes in moderation and queue policy, one line each ("moderation.block_words: 12 → 0")."""
    out = []
    for table in RELOADABLE:
        a, b = getattr(old, table), getattr(new, table)
        for name in type(a).model_fields:
            x, y = getattr(a, name), getattr(b, name)
            if x == y:
                continue
            if isinstance(x, (list, dict)):
                out.append(f"{table}.{name}: {len(x)} → {len(y)} entries")
            else:
                out.append(f"{table}.{name}: {x!r} → {y!r}")
    return out


def _unique_names(kind: str, parts, cfg: Config) -> None:
    seen = set()
    for p in parts:
        if p.name in seen:
            raise ConfigError(f"{cfg.path or 'config'}: {kind}: two entries are named {p.name!r}; give each a distinct `name`")
        seen.add(p.name)
