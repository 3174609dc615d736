"""The one config loader: TOML validated by pydantic, errors that say where and what to do."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # Jetson images ship Python 3.10
    import tomli as tomllib


class ConfigError(Exception):
    """A config problem a user can fix: the message names the file, the key and the fix."""


class Strict(BaseModel):
    """A config table: unknown keys are errors, not silently ignored typos."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DaemonConfig(Strict):
    socket: str | None = None  # default: $XDG_RUNTIME_DIR/ishowtts/ishowttsd.sock
    plugin_dirs: list[str] = Field(default_factory=list)
    strict_plugins: bool = False  # re-raise plugin errors instead of skipping the plugin
    state_dir: str | None = None  # default: $XDG_STATE_HOME/ishowtts
    log_level: str = "info"
    # a control connection that sends no request for this long is closed (watch streams are exempt)
    control_idle_timeout_s: float = Field(default=60.0, gt=0)
    # a plugin whose import or registration takes longer is reported broken and skipped
    plugin_load_timeout_s: float = Field(default=10.0, gt=0)
    # the event loop blocked this long (by a plugin that does not await) is logged with its stack ...
    stall_warn_s: float = Field(default=2.0, gt=0)
    # ... and this long ends the daemon, so that systemd restarts it (under the unit's WatchdogSec)
    stall_exit_s: float = Field(default=20.0, gt=0)
    # after SIGTERM, a daemon whose event loop cannot stop cleanly exits anyway after this long
    # (under the unit's TimeoutStopSec)
    stop_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("use one of debug, info, warning, error")
        return v.lower()


class EngineConfig(BaseModel):
    """`[engine]`; each engine's own settings live in an `[engine.<name>]` sub-table."""

    model_config = ConfigDict(extra="allow")
    default: str = "espeak"
    fallback: str | None = "espeak"
    default_voice: str | None = None
    warmup: bool = True

    def engine_tables(self) -> dict[str, dict[str, Any]]:
        return dict(self.model_extra or {})


class VoiceConfig(Strict):
    id: str = Field(min_length=1)
    engine: str | None = None  # default: [engine] default
    reference_audio: str | None = None
    reference_text: str | None = None
    language: str | None = None
    speed: float = Field(default=1.0, gt=0.2, le=3.0)
    options: dict[str, Any] = Field(default_factory=dict)


class PluginTable(BaseModel):
    """A `[[sources]]` or `[[sinks]]` table; keys beyond these belong to the plugin's Settings."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(min_length=1)
    name: str | None = None
    enabled: bool = True


class ModerationConfig(Strict):
    """`[moderation]`: what is read aloud and how; reloadable (SIGHUP, `ishowttsctl reload`)."""

    max_chars: int = Field(default=80, ge=1, le=2000)
    block_words: list[str] = Field(default_factory=list)
    block_patterns: list[str] = Field(default_factory=list)  # Python regexes, case-insensitive
    # per kind ("danmaku") or per platform and kind ("twitch.danmaku"); {user} {text} {num}
    # {gift} {amount} {bits} {currency} {membership} {months} {reward} {viewers} {platform} {backlog}
    templates: dict[str, str] = Field(default_factory=dict)
    # used instead of `templates` when the username is not read (read_username, flood mode)
    anonymous_templates: dict[str, str] = Field(default_factory=dict)
    read_username: dict[str, bool] = Field(default_factory=dict)  # kind -> read the name? (default yes)
    default_voice: str | None = None
    kind_voices: dict[str, str] = Field(default_factory=dict)  # kind -> voice id
    user_voices: dict[str, str] = Field(default_factory=dict)  # "name", "id" or "platform:id" -> voice id
    # who may speak: entries are a name, an id, or "platform:name-or-id"
    block_users: list[str] = Field(default_factory=list)
    allow_users: list[str] = Field(default_factory=list)  # pass every user check, like moderators
    allow_only: bool = False  # chat only from allow_users, moderators and the broadcaster
    min_user_level: int = Field(default=0, ge=0)  # Bilibili user level (UL)
    min_medal_level: int = Field(default=0, ge=0)  # Bilibili fan-medal level
    medal_name: str | None = None  # only this room's medal counts for min_medal_level
    require_member: bool = False  # chat only from members: guards (舰长...), subscribers
    ignore_bots: list[str] = Field(
        default_factory=lambda: ["Nightbot", "StreamElements", "Streamlabs", "Moobot", "Fossabot", "Wizebot"]
    )
    ignore_commands: bool = True  # "!command" lines are for bots, not for the voice
    strip_links: bool = True
    link_replacement: str = ""  # what a link is read as, e.g. "链接"
    strip_emotes: bool = True  # Twitch emote ranges, Bilibili emoticons
    max_repeat: int = Field(default=3, ge=1, le=50)  # "哈哈哈哈哈哈" -> "哈哈哈"
    max_emoji: int = Field(default=3, ge=0, le=100)  # emoji kept per message
    max_spoken_s: float = Field(default=0.0, ge=0.0)  # estimated speaking time limit; 0 = off
    cjk_chars_per_s: float = Field(default=4.5, gt=0)
    latin_chars_per_s: float = Field(default=14.0, gt=0)
    user_cooldown_s: float = Field(default=0.0, ge=0.0)  # per user, for chat lines
    duplicate_window_s: float = Field(default=30.0, ge=0.0)  # same text again within it is dropped
    min_gift_value: float = Field(default=0.0, ge=0.0)  # paid gifts worth less are not read
    read_free_gifts: bool = True
    combo_window_s: float = Field(default=5.0, ge=0.0)  # gift combos merged into one utterance
    # saying names and words right (ishowttsd/pronounce.py), before templates are filled:
    # a user ("name", "id" or "platform:id", like user_voices) -> the name spoken for them
    nicknames: dict[str, str] = Field(default_factory=dict)
    # a word or phrase -> how it is spoken; case-insensitive, longest match wins, whole words
    # for Latin keys ("lol" is not found in "lollipop"); thousands of entries cost no more
    replacements: dict[str, str] = Field(default_factory=dict)
    # a regular expression (the `regex` module, case-insensitive) -> its replacement (\1, \g<name>),
    # applied in file order to what `replacements` left; checked (and dangerous ones refused) by moderation.py
    replacement_patterns: dict[str, str] = Field(default_factory=dict)
    # all replacement_patterns together may take this long per message; one that runs out is skipped
    pattern_timeout_ms: float = Field(default=20.0, gt=0, le=1000)
    # numbers, dates, times, percentages and money as words in the text's language (2026年 -> 二零二六年,
    # $5 -> five dollars). Off by default: espeak reads digits itself; neural engines (F5) need it on
    read_numbers: bool = False
    emoji: Literal["keep", "drop", "name"] = "keep"  # drop emoji, or read them by name (笑哭了, thumbs up)
    # the language of a text with neither CJK characters nor Latin letters ("😂", "666")
    default_language: Literal["zh", "en"] = "zh"

    @field_validator("read_username", "kind_voices")
    @classmethod
    def _kinds(cls, v: dict) -> dict:
        from ishowttsd.messages import Kind

        kinds = [k.value for k in Kind]
        bad = sorted(k for k in v if k not in kinds)
        if bad:
            raise ValueError(f"unknown kind(s) {bad}; use {kinds}")
        return v

    @field_validator("nicknames", "replacements")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        empty = [k for k in v if not k.strip()]
        if empty:
            raise ValueError("an empty key; write a user (for nicknames) or the word or phrase to replace")
        return v

    @field_validator("block_patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        import re

        for i, pat in enumerate(v):
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(
                    f"block_patterns[{i}] {pat!r} is not a valid regular expression ({e}); "
                    f"escape special characters with \\ or put plain words in block_words"
                ) from None
        return v


class QueueConfig(Strict):
    max_pending: int = Field(default=50, ge=1, le=100_000)
    # seconds an utterance of each class may wait before it is stale and dropped
    ttl: dict[str, float] = Field(default_factory=dict)
    # flood mode: at this backlog usernames are no longer read (0 = off) ...
    flood_threshold: int = Field(default=20, ge=0)
    # ... and this is said once per flood ("" = say nothing); {backlog} is the number waiting
    flood_announce: str = ""
    # an engine that can batch (F5 on CUDA) gets the utterances queued behind the next one in
    # one pass only while synthesis is slow next to playback: median RTF of recent utterances
    # at least this. Below it one utterance at a time keeps up, and a batch prepared ahead
    # would only make paid speech that arrives meanwhile wait longer. 0 = always batch.
    batch_min_rtf: float = Field(default=0.5, ge=0.0)

    @field_validator("ttl")
    @classmethod
    def _classes(cls, v: dict[str, float]) -> dict[str, float]:
        from ishowttsd.messages import Priority

        for k, secs in v.items():
            Priority.parse(k)
            if secs <= 0:
                raise ValueError(f"ttl for {k!r} must be positive seconds")
        return v


GREETING_KIND_NAMES = ("enter", "follow", "share", "like")
GREETING_TEMPLATE_FIELDS = ("names", "count", "others", "total")


class GreetingsConfig(Strict):
    """`[greetings]`: entries, follows, shares and likes read as one throttled line; off by default."""

    kinds: list[str] = Field(default_factory=list)  # which to read: enter, follow, share, like ([] = none)
    interval_s: float = Field(default=10.0, ge=1.0, le=3600.0)  # at most one greeting line per interval
    max_names: int = Field(default=3, ge=0, le=20)  # names read in one line; the rest are counted
    ttl_s: float = Field(default=15.0, gt=0, le=600.0)  # a line (or gathered names) older than this is dropped
    language: str = "zh"  # the built-in templates: zh or en
    voice: str | None = None  # the voice greetings use; default: the default voice
    # per kind, overriding the language's: "<kind>" when every name is read, "<kind>_more" when some are
    # only counted, "<kind>_count" when none is read; fields {names} {count} {others} {total}
    # (total: the room's like count, when the platform says it)
    templates: dict[str, str] = Field(default_factory=dict)

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(GREETING_KIND_NAMES))
        if bad:
            raise ValueError(f"unknown greeting kind(s) {bad}; use some of {list(GREETING_KIND_NAMES)}")
        return v

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        if v not in ("zh", "en"):
            raise ValueError("use zh or en (then override single lines in [greetings.templates])")
        return v

    @field_validator("templates")
    @classmethod
    def _templates(cls, v: dict[str, str]) -> dict[str, str]:
        import string

        keys = [f"{k}{form}" for k in GREETING_KIND_NAMES for form in ("", "_more", "_count")]
        for key, tpl in v.items():
            if key not in keys:
                raise ValueError(f"unknown template {key!r}; use one of {keys}")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(tpl) if f is not None}
            except ValueError as e:
                raise ValueError(f"templates.{key}: {e}; use {{name}} for fields and {{{{ }}}} for braces") from None
            bad = sorted(fields - set(GREETING_TEMPLATE_FIELDS))
            if bad:
                raise ValueError(f"templates.{key}: unknown field(s) {bad}; use {list(GREETING_TEMPLATE_FIELDS)}")
        return v


COMMAND_ROLES = ("broadcaster", "moderator", "vip", "member")


class CommandsConfig(Strict):
    """`[commands]`: chat commands (`!tts skip`) from the broadcaster, moderators and allowed users."""

    enabled: bool = False
    prefix: str = Field(default="!tts", min_length=1, max_length=20)  # a line starting with it is a command, never read
    roles: list[str] = Field(default_factory=lambda: ["broadcaster", "moderator"])  # who may run commands
    allow_users: list[str] = Field(default_factory=list)  # and these: a name, an id, or "platform:name-or-id"
    mute_default_s: float = Field(default=600.0, gt=0, le=7 * 86400)  # `mute <user>` without a time
    mute_max_s: float = Field(default=86400.0, gt=0, le=30 * 86400)
    # viewers may pick their own voice from these ids (`!tts voice <id>` or `!voice <id>`); [] = off
    voices: list[str] = Field(default_factory=list)
    voice_command: str = "!voice"  # the short form for viewers ("" = only `<prefix> voice`)

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(COMMAND_ROLES))
        if bad:
            raise ValueError(f"unknown role(s) {bad}; use some of {list(COMMAND_ROLES)}")
        return v

    @field_validator("prefix", "voice_command")
    @classmethod
    def _no_space(cls, v: str) -> str:
        if v != v.strip() or " " in v:
            raise ValueError("one word without spaces, e.g. !tts")
        return v


class JournalConfig(Strict):
    """`[journal]`: paid and membership speech survives a crash or restart."""

    enabled: bool = True
    path: str | None = None  # default: <state dir>/journal.sqlite3
    synchronous: str = "full"  # full: survives power loss; normal: survives a daemon crash
    keep_days: float = Field(default=7.0, ge=0.0)  # finished entries are pruned after this
    # owed speech held in memory at most; more waits in the journal (never dropped for space)
    owed_in_memory: int = Field(default=200, ge=1, le=100_000)
    # owed speech no audible sink played is played again this often until one does
    retry_owed_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=100)  # syntheses that fail before owed speech is given up

    @field_validator("synchronous")
    @classmethod
    def _sync(cls, v: str) -> str:
        if v.lower() not in ("full", "normal"):
            raise ValueError("use full or normal")
        return v.lower()


class HealthConfig(Strict):
    baseline_file: str | None = None  # default: <state_dir>/rtf-baseline.json
    rtf_margin: float = Field(default=0.2, ge=0.0)  # warn when the rolling median RTF is this much over baseline
    rtf_fail_margin: float = Field(default=1.0, ge=0.0)  # fail beyond this (1.0 = twice as slow)
    rtf_floor: float = Field(default=0.05, ge=0.0)  # medians under this never count as regressions: too fast to matter
    rtf_window: int = Field(default=20, ge=1, le=10_000)  # utterances in the rolling median
    rtf_min_samples: int = Field(default=3, ge=1)  # judge only after this many utterances
    learn_baseline: bool = True  # no stored baseline: learn one from the first utterances after warm-up
    learn_samples: int = Field(default=5, ge=1)
    ttfa_warn_s: float = Field(default=3.0, gt=0)
    ttfa_fail_s: float = Field(default=10.0, gt=0)
    queue_wait_warn_s: float = Field(default=30.0, gt=0)
    memory_growth_warn_mb_per_h: float = Field(default=50.0, gt=0)
    memory_min_span_s: float = Field(default=3600.0, gt=0)  # judge growth over at least this long
    disk_warn_mb: float = Field(default=1024.0, ge=0)
    disk_fail_mb: float = Field(default=100.0, ge=0)
    contention_cores: float = Field(default=0.5, ge=0)  # other processes using this many cores = contention


class HardwareConfig(Strict):
    sysroot: str | None = None  # read /sys, /proc, /etc under this folder (tests); also $ISHOWTTS_SYSROOT
    telemetry_interval_s: float = Field(default=10.0, ge=0.1)
    use_jtop: bool = True  # when jetson-stats is installed and jtop.service runs
    use_nvml: bool = True  # when nvidia-ml-py is installed
    thermal_limit_c: float = Field(default=85.0, gt=0)
    command_timeout_s: float = Field(default=5.0, gt=0)
    performance_refresh_s: float = Field(default=60.0, ge=0)  # how often jetson_clocks/nvpmodel are asked
    # what the box should run at; health warns when it does not (ishowtts-performance.service applies it)
    expect_clocks_locked: bool | None = None  # None: expected on a Jetson, not elsewhere
    expect_nvpmodel: str | None = None  # a mode name ("MAXN") or id ("0")


class WebConfig(Strict):
    """`[web]`: the control room page, the OBS overlay, the HTTP API and `/v1/audio/speech`."""

    enabled: bool = True
    listen: str = "127.0.0.1:8765"  # host:port; port 0 picks a free one (`ishowttsctl web` says which)
    allow_remote: bool = False  # a non-loopback listen address must be asked for explicitly
    allowed_hosts: list[str] = Field(default_factory=list)  # Host names besides the listen address and localhost
    token_file: str | None = None  # default <state dir>/web-token, created (mode 0600) when missing
    session_days: float = Field(default=30.0, gt=0, le=366)  # how long a browser stays signed in
    login_code_ttl_s: float = Field(default=300.0, ge=10, le=86_400)
    max_clients: int = Field(default=100, ge=1, le=10_000)  # event streams and overlays at once
    client_backlog_mb: float = Field(default=4.0, gt=0, le=256)  # a client further behind is dropped
    overlay_audio: bool = True  # add a `browser` sink (overlay audio) unless [[sinks]] has one
    overlay_css: str | None = None  # the streamer's overlay style; default <state dir>/overlay.css
    history: int = Field(default=50, ge=0, le=10_000)  # utterances whose audio is kept (0: no history sink)
    history_max_mb: float = Field(default=64.0, gt=0, le=4096)
    upload_max_mb: float = Field(default=5.0, gt=0, le=100)
    upload_max_s: float = Field(default=30.0, gt=0, le=600)  # longest reference recording accepted
    transcript_max_chars: int = Field(default=500, ge=1, le=10_000)
    speech_max_chars: int = Field(default=4096, ge=1, le=100_000)  # /v1/audio/speech `input`
    speech_concurrency: int = Field(default=1, ge=1, le=64)
    speech_per_minute: int = Field(default=30, ge=1, le=100_000)
    speech_priority: str = "normal"  # it waits while speech of a higher class is queued or prepared
    speech_timeout_s: float = Field(default=120.0, gt=0, le=3600)

    @field_validator("speech_priority")
    @classmethod
    def _class(cls, v: str) -> str:
        from ishowttsd.messages import Priority

        return Priority.parse(v).name.lower()

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        listen_address(v)
        return v

    @model_validator(mode="after")
    def _remote(self) -> "WebConfig":
        host, _ = listen_address(self.listen)
        if self.enabled and not is_loopback(host) and not self.allow_remote:
            raise ValueError(
                f"listen = {self.listen!r} is reachable from other machines; keep 127.0.0.1, "
                "or set allow_remote = true if you mean it (and read docs/web.md)"
            )
        return self


def listen_address(v: str) -> tuple[str, int]:
    """("host", port) of a `host:port` listen address; IPv6 hosts in brackets ([::1]:8765)."""
    import ipaddress

    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{v!r} is not host:port (e.g. 127.0.0.1:8765)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address; listen on an address (127.0.0.1, ::1, 0.0.0.0)") from None
    return host, int(port)


def is_loopback(host: str) -> bool:
    import ipaddress

    return host == "localhost" or ipaddress.ip_address(host).is_loopback


class Config(Strict):
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    voices: list[VoiceConfig] = Field(default_factory=list)
    sources: list[PluginTable] = Field(default_factory=list)
    sinks: list[PluginTable] = Field(default_factory=list)
    moderation: ModerationConfig = Field(default_factory=ModerationConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    greetings: GreetingsConfig = Field(default_factory=GreetingsConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    journal: JournalConfig = Field(default_factory=JournalConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    web: WebConfig = Field(default_factory=WebConfig)

    # where the config came from; relative paths in it are relative to that file's folder
    _path: Path | None = None

    @property
    def path(self) -> Path | None:
        return self._path

    def resolve(self, p: str | os.PathLike[str]) -> Path:
        """A path from the config: `~` expanded, relative ones taken from the config's folder."""
        path = Path(os.path.expanduser(str(p)))
        if not path.is_absolute() and self._path is not None:
            path = self._path.parent / path
        return path

    def state_dir(self) -> Path:
        if self.daemon.state_dir:
            return self.resolve(self.daemon.state_dir)
        systemd = os.environ.get("STATE_DIRECTORY")  # StateDirectory=ishowtts: already ours
        if systemd:
            return Path(systemd.split(":")[0])
        base = os.environ.get("XDG_STATE_HOME")
        return (Path(base) if base else Path.home() / ".local" / "state") / "ishowtts"


def default_socket_path() -> Path:
    """$XDG_RUNTIME_DIR/ishowtts/ishowttsd.sock, or /run/ishowtts/ under systemd."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")  # set by systemd's RuntimeDirectory=
    if runtime:
        return Path(runtime.split(":")[0]) / "ishowttsd.sock"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "ishowtts" / "ishowttsd.sock"
    return Path(f"/tmp/ishowtts-{os.getuid()}") / "ishowttsd.sock"


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a config file; no path gives the defaults (espeak, no sources)."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file; copy config/example.toml to start one") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text; save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse_config(raw, p)


def parse_config(raw: dict[str, Any], path: Path | None = None) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, path)) from None
    cfg._path = path.resolve() if path else None
    return cfg


def format_validation_error(e: ValidationError, path: Path | None, prefix: str = "") -> str:
    where = str(path) if path else "config"
    lines = []
    for err in e.errors():
        key = prefix + _loc(err["loc"]) if err["loc"] else (prefix.rstrip(".") or "(top level)")
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: {key}: unknown key; check its spelling or remove it")
        elif err["type"] == "missing":
            lines.append(f"{where}: {key}: required; add it")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {key}: {msg} (got {err.get('input')!r})")
    return "\n".join(lines)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def validate_table(model: type[BaseModel], table: dict[str, Any], where: str, path: Path | None) -> Any:
    """Validate a plugin's part of the config (e.g. `sources[0]`) against its Settings model."""
    try:
        return model.model_validate(table)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, path, prefix=where + ".")) from None


def read_secret(file: str | None, env: str | None, what: str, cfg: Config | None = None) -> str | None:
    """A secret from a file or an environment variable; never from the config text itself.

    Returns None when neither is configured. The error names where we looked, never the value.
    """
    if env:
        value = os.environ.get(env)
        if value:
            return value.strip()
        if not file:
            raise ConfigError(f"{what}: environment variable {env} is not set; export it or name a file")
    if file:
        p = cfg.resolve(file) if cfg else Path(file)
        try:
            value = p.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{what}: cannot read {p} ({e.strerror}); check the path and its permissions") from None
        if not value:
            raise ConfigError(f"{what}: {p} is empty")
        return value
    return None
