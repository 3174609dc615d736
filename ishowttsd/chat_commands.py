"""Chat commands: the streamer's moderators run the reader from chat (`!tts skip`).

A chat line that starts with `[commands] prefix` (or, for viewers, `voice_command`) is a
command: it is never read aloud, whether or not commands are enabled and whatever
`[moderation] ignore_commands` says. Verbs:

- ``skip``, ``pause``, ``resume``, ``clear``: the control API's verbs of the same names (``clear``
  leaves paid and membership speech: what the streamer owes is not a moderator's to drop);
- ``mute <user> [seconds]`` / ``unmute <user>``: the user's chat is filtered (reason ``muted``)
  until then, and what of it waits is taken back (the API's ``queue.remove``);
- ``voice <id>`` (also ``!voice <id>``; ``voice default`` forgets the choice): a viewer picks
  the voice their chat is read in, from `[commands] voices`.

Who may run the first six: `roles` (broadcaster, moderator, vip, member) and `allow_users`;
``voice`` is for everyone when `voices` is not empty. A refusal (not allowed, unknown verb,
bad argument) is counted in `status` and published as ``command.refused``; a command done is
published as ``command.done``. Actions run through the control API (`act`), so each exists once.

Mutes and voice choices survive a restart: they are kept in ``<state dir>/chat.json``,
written atomically (a temporary file, fsync, rename) at most once a second.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio

from ishowttsd.config import CommandsConfig
from ishowttsd.events import EventBus
from ishowttsd.messages import Kind, Message, Priority, User
from ishowttsd.moderation import UserList

log = logging.getLogger("ishowttsd.chat_commands")

STATE_FILE = "chat.json"
MAX_VOICE_CHOICES = 100_000  # viewers whose voice is remembered; beyond it new choices are refused
MAX_MUTES = 10_000
ACTIONS_BUFFER = 64  # commands waiting for the API; beyond it they are refused as `busy`
# verbs that act on the reader, for `roles` and `allow_users` only
STAFF_VERBS = ("skip", "pause", "resume", "clear", "mute", "unmute")


class Outcome:
    """What a command line came to: `done` or refused with a `reason`; either way it is not read."""

    def __init__(self, verb: str, done: bool, reason: str = "", detail: str = "") -> None:
        self.verb, self.done, self.reason, self.detail = verb, done, reason, detail


class ChatCommands:
    """Recognises command lines, checks who sent them, and runs them through the control API."""

    def __init__(self, cfg: CommandsConfig, state_dir: Path, events: EventBus, has_voice: Callable[[str], bool],
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.events = events
        self.has_voice = has_voice
        self.clock = clock
        self.path = Path(state_dir) / STATE_FILE
        # the control API's `call(verb, params)`, set by the composition root once the API exists
        self.act: Callable[[str, dict], Awaitable[Any]] | None = None
        self.mutes: dict[tuple[str, str], float] = {}  # (platform, name or id, casefolded) -> until (Unix time)
        self.voices: dict[str, str] = {}  # "platform:user id or name" -> voice id
        self.refused: Counter[str] = Counter()
        self.done: Counter[str] = Counter()
        self.problem = ""
        self._dirty = False
        self._actions: deque[tuple[str, dict]] = deque()
        self.configure(cfg)
        self._load()

    def configure(self, cfg: CommandsConfig) -> None:
        """Use a new `[commands]` table (a reload); mutes and voice choices stay."""
        self.cfg = cfg
        self._allowed = UserList(cfg.allow_users)

    # -- the message path ---------------------------------------------------------------------

    def is_command(self, m: Message) -> bool:
        if m.kind != Kind.DANMAKU:
            return False
        word = (m.text or "").lstrip().split(maxsplit=1)
        head = word[0].casefold() if word else ""
        return head == self.cfg.prefix.casefold() or (bool(self.cfg.voice_command) and head == self.cfg.voice_command.casefold())

    def handle(self, m: Message) -> Outcome:
        """Run one command line (`is_command` said it is one)."""
        words = m.text.split()
        head = words[0].casefold()
        if head == self.cfg.prefix.casefold():
            verb, args = (words[1].casefold() if len(words) > 1 else ""), words[2:]
        else:
            verb, args = "voice", words[1:]
        if not self.cfg.enabled:
            return Outcome(verb, False, "off", "chat commands are off ([commands] enabled = false)")
        out = self._run(m, verb, args)
        fields = dict(platform=m.platform, user=m.user.name, verb=verb or "(none)", detail=out.detail)
        if out.done:
            self.done[verb] += 1
            self.events.publish("command.done", **fields)
        else:
            self.refused[out.reason] += 1
            self.events.publish("command.refused", **fields, reason=out.reason)
        return out

    def _run(self, m: Message, verb: str, args: list[str]) -> Outcome:
        if verb == "voice":
            return self._voice(m, args)
        if verb not in STAFF_VERBS:
            known = ", ".join([*STAFF_VERBS, *(["voice"] if self.cfg.voices else [])])
            return Outcome(verb, False, "unknown_verb", f"no verb {verb!r}; use {self.cfg.prefix} {{{known}}}")
        if not self.allowed(m):
            return Outcome(verb, False, "not_allowed",
                           f"{m.user.name or 'this user'} is not allowed ([commands] roles, allow_users)")  # fmt: skip
        if verb in ("mute", "unmute"):
            return self._mute(m, verb, args)
        if args:
            return Outcome(verb, False, "bad_argument", f"{verb} takes no argument")
        if verb == "clear":  # money is the streamer's to drop, not a moderator's: owed speech stays
            keep = [p.name.lower() for p in Priority if not p.owed]
            return self._queue_action(verb, "clear", {"classes": keep}, "clear requested (paid and membership speech stays)")
        return self._queue_action(verb, verb, {}, f"{verb} requested")

    def allowed(self, m: Message) -> bool:
        u, roles = m.user, self.cfg.roles
        if ("broadcaster" in roles and u.broadcaster) or ("moderator" in roles and u.moderator):
            return True
        if ("vip" in roles and u.vip) or ("member" in roles and u.membership):
            return True
        return self._allowed.match(m.platform, u)

    def _queue_action(self, verb: str, api_verb: str, params: dict, detail: str) -> Outcome:
        if len(self._actions) >= ACTIONS_BUFFER:
            return Outcome(verb, False, "busy", f"{ACTIONS_BUFFER} commands are still waiting; try again")
        self._actions.append((api_verb, params))
        return Outcome(verb, True, detail=detail)

    def _mute(self, m: Message, verb: str, args: list[str]) -> Outcome:
        if not args or len(args) > 2:
            return Outcome(verb, False, "bad_argument", f"use {self.cfg.prefix} {verb} <user>"
                           + (" [seconds]" if verb == "mute" else ""))  # fmt: skip
        who = args[0].lstrip("@")
        key = (m.platform, who.casefold())
        if verb == "unmute":
            if self.mutes.pop(key, None) is None:
                return Outcome(verb, False, "bad_argument", f"{who} is not muted")
            self._dirty = True
            return Outcome(verb, True, detail=f"{who} unmuted")
        secs = self.cfg.mute_default_s
        if len(args) == 2:
            try:
                secs = float(args[1])
            except ValueError:
                secs = math.nan
            if not (math.isfinite(secs) and 0 < secs <= self.cfg.mute_max_s):
                return Outcome(verb, False, "bad_argument",
                               f"{args[1]!r}: give seconds between 1 and {self.cfg.mute_max_s:g} (mute_max_s)")  # fmt: skip
        self._expire()
        if key not in self.mutes and len(self.mutes) >= MAX_MUTES:
            return Outcome(verb, False, "busy", f"{MAX_MUTES} users are muted already; unmute some first")
        self.mutes[key] = self.clock() + secs
        self._dirty = True
        return self._queue_action(verb, "queue.remove", {"user": who, "platform": m.platform},
                                  f"{who} muted for {secs:g} s")  # fmt: skip

    def _voice(self, m: Message, args: list[str]) -> Outcome:
        if not self.cfg.voices:
            return Outcome("voice", False, "unknown_verb", "viewers cannot pick voices here ([commands] voices is empty)")
        key = self._user_key(m.platform, m.user)
        if not key:
            return Outcome("voice", False, "bad_argument", "this platform does not say who you are")
        if len(args) != 1:
            return Outcome("voice", False, "bad_argument", f"use {self.cfg.voice_command or self.cfg.prefix + ' voice'} "
                           f"<{'|'.join(self.cfg.voices)}|default>")  # fmt: skip
        choice = args[0]
        if choice.casefold() == "default":
            self.voices.pop(key, None)
            self._dirty = True
            return Outcome("voice", True, detail=f"{m.user.name} speaks in the default voice")
        if choice not in self.cfg.voices:
            return Outcome("voice", False, "bad_argument", f"no voice {choice!r} to pick; choose one of {self.cfg.voices}")
        if not self.has_voice(choice):
            return Outcome("voice", False, "bad_argument", f"voice {choice!r} is not loaded now; try another")
        if key not in self.voices and len(self.voices) >= MAX_VOICE_CHOICES:
            return Outcome("voice", False, "busy", "too many viewers have picked a voice already")
        self.voices[key] = choice
        self._dirty = True
        return Outcome("voice", True, detail=f"{m.user.name} speaks in voice {choice}")

    def muted(self, m: Message) -> float | None:
        """Seconds left of this user's mute, or None."""
        if not self.mutes:
            return None
        now = self.clock()
        for who in (m.user.name, m.user.id):
            until = self.mutes.get((m.platform, who.casefold())) if who else None
            if until is not None and until > now:
                return until - now
        return None

    def voice_for(self, m: Message) -> str | None:
        """The voice this viewer picked, if it may still be picked."""
        if not self.voices:
            return None
        v = self.voices.get(self._user_key(m.platform, m.user))
        return v if v is not None and v in self.cfg.voices else None

    @staticmethod
    def _user_key(platform: str, u: User) -> str:
        if not u.id and "*" in u.name:  # a masked name ("小***") is many viewers, not one
            return ""
        who = u.id or u.name
        return f"{platform}:{who}" if who else ""

    # -- the actions and the state file ----------------------------------------------------------

    async def run(self, period: float = 0.05) -> None:
        """Runs the waiting actions through the API, and saves the state (at most once a second)."""
        saved = time.monotonic()
        while True:
            await anyio.sleep(period)
            while self._actions and self.act is not None:
                verb, params = self._actions.popleft()
                try:
                    await self.act(verb, params)
                except Exception as e:  # a failed action is reported; commands go on
                    log.warning("chat command %s failed: %s", verb, e)
            if time.monotonic() - saved >= 1.0:
                saved = time.monotonic()
                self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self._expire()
        data = {"version": 1, "voices": self.voices,
                "mutes": [{"platform": p, "user": u, "until": t} for (p, u), t in self.mutes.items()]}  # fmt: skip
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self.problem = ""
        except OSError as e:
            self.problem = f"cannot save {self.path} ({e.strerror}); voice choices and mutes last until a restart"
            log.warning("%s", self.problem)

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            self.problem = f"{self.path} is unreadable ({e}); starting without saved voice choices and mutes"
            log.warning("%s", self.problem)
            return
        if not isinstance(data, dict):
            return
        voices = data.get("voices")
        if isinstance(voices, dict):
            self.voices = {k: v for k, v in voices.items() if isinstance(k, str) and isinstance(v, str)}
        for e in data.get("mutes") or []:
            if isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("platform", "user")):
                until = e.get("until")
                if isinstance(until, (int, float)) and until > self.clock():
                    self.mutes[(e["platform"], e["user"])] = float(until)

    def _expire(self) -> None:
        now = self.clock()
        for k in [k for k, t in self.mutes.items() if t <= now]:
            del self.mutes[k]

    def close(self) -> None:
        self.flush()

    def status(self) -> dict[str, Any]:
        self._expire()
        now = self.clock()
        return {
            "enabled": self.cfg.enabled,
            "prefix": self.cfg.prefix,
            "mutes": [{"platform": p, "user": u, "left_s": round(t - now, 1)} for (p, u), t in self.mutes.items()],
            "voices_picked": len(self.voices),
            "done": dict(self.done),
            "refused": dict(self.refused),
            "refused_total": sum(self.refused.values()),
            **({"problem": self.problem} if self.problem else {}),
        }
