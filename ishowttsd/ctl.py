"""ishowttsctl: talk to a running ishowttsd over its control socket."""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ishowttsd.config import default_socket_path
from wcwidth import wcswidth, wcwidth

from ishowttsd.api import ApiError
from ishowttsd.control import UnsafeSocket, check_socket_folder, client_request
from ishowttsd.events import format_fields
from ishowttsd.level import Level

EXIT_OK, EXIT_ERROR, EXIT_NO_DAEMON = 0, 1, 3
# `health` follows the monitoring-plugin convention: 0 ok, 1 warn, 2 fail (a daemon that is not
# running is a failure), 3 unknown (the daemon could not be asked)
HEALTH_FAIL, HEALTH_UNKNOWN = Level.fail.code, 3


def width(text: str) -> int:
    """Columns `text` takes in a terminal: a Chinese character takes two, a combining mark none."""
    w = wcswidth(text)
    return w if w >= 0 else sum(max(wcwidth(c), 0) for c in text)  # control characters count as nothing


def pad(text: str, columns: int) -> str:
    return text + " " * max(0, columns - width(text))


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(width(c), *(width(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = ["  ".join(pad(c.upper(), w) for c, w in zip(cols, widths)).rstrip()]
    out += ["  ".join(pad(v, w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(out)


_CELL_COLUMNS = 60


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (dict, list)):
        v = json.dumps(v, ensure_ascii=False)
    s = "".join(c if c.isprintable() else " " for c in str(v))  # chat text must not move the cursor
    if width(s) <= _CELL_COLUMNS:
        return s
    out, used = [], 0
    for c in s:  # cut by columns, not characters: 30 Chinese characters fill 60 columns
        w = max(wcwidth(c), 0)
        if used + w > _CELL_COLUMNS - 3:
            break
        out.append(c)
        used += w
    return "".join(out) + "..."


def _chat_lines(chat: dict, words: dict) -> list[str]:
    """Chat commands (mutes with time left, refusals), greetings and how words are said."""
    lines = []
    cmd = chat.get("commands")
    if cmd and cmd.get("enabled"):
        mutes = ", ".join(f"{m['user']} ({m['platform']}, {m['left_s']:.0f} s)" for m in cmd["mutes"]) or "none"
        lines.append(f"commands {cmd['prefix']}  muted: {mutes}  refused {cmd['refused_total']}"
                     + (f"  PROBLEM: {cmd['problem']}" if cmd.get("problem") else ""))  # fmt: skip
    greet = chat.get("greetings")
    if greet and greet.get("kinds"):
        lines.append(f"greeting {', '.join(greet['kinds'])} every {greet['interval_s']} s  lines {greet['lines']}"
                     f"  stale {greet['stale']}")  # fmt: skip
    if words and (words.get("nicknames") or words.get("replacements") or words.get("replacement_patterns")
                  or words.get("read_numbers") or words.get("emoji") != "keep"):  # fmt: skip
        c = words.get("counts") or {}
        problems = {k: c[k] for k in ("pattern_timeouts", "pattern_errors", "rewrite_errors") if c.get(k)}
        lines.append(f"words    {words['nicknames']} nicknames  {words['replacements']} replacements"
                     f"  {words['replacement_patterns']} patterns  numbers {'on' if words['read_numbers'] else 'off'}"
                     f"  emoji {words['emoji']}" + "".join(f"  {k.upper()} {v}" for k, v in problems.items()))  # fmt: skip
    return lines


def _human(verb: str, r: Any) -> str:
    if verb == "status":
        c = r["counts"]
        eng = r.get("engine") or {}
        sp = r.get("speaker") or {}
        lines = [
            f"ishowttsd {r['version']}  {r['state']}  pid {r['pid']}  up {r['uptime_s']} s",
            f"socket   {r['socket']}",
            f"engine   {eng.get('active') or '(loading)'}"
            + (f"  FALLBACK: {eng['fallback_reason']}" if eng.get("fallback_reason") else ""),
            "speech   " + "  ".join(f"{k} {v}" for k, v in c.items()),
            f"queue    {r['queue']['pending']}/{r['queue']['max_pending']} pending, oldest {r['queue']['oldest_wait_s']} s"
            + f", latency median {r['queue'].get('latency_median_s')} s"
            + ("  FLOOD" if r["queue"].get("flood") else "")
            + ("  PAUSED" if sp.get("paused") else ""),
            f"rtf      median {sp.get('rtf_median')}  ttfa median {sp.get('ttfa_median_s')} s",
        ]
        j = r.get("journal")
        if j and j.get("enabled"):
            owed = j["pending"] + j["parked"] + (0 if j["pending"] else j["waiting_for_sink"])
            line = f"journal  {owed} paid/membership owed  {j['path'] or '(unavailable)'}"
            if j["waiting_for_sink"]:
                line += f"  {j['waiting_for_sink']} NOT HEARD: no sink that people hear played them"
            if j["parked"]:
                line += f"  ({j['parked']} waiting in the journal)"
            if j.get("problem") or j.get("error"):
                line += f"  PROBLEM: {j.get('problem') or j.get('error')}"
            lines.append(line)
        web = r.get("web") or {}
        if web.get("enabled"):
            lines.append(f"web      {web.get('url') or 'NOT LISTENING: ' + str(web.get('error'))}"
                         + (f"  {web.get('clients')} streams open" if web.get("url") else "") + "  (`ishowttsctl web` to sign in)")
        if (r.get("sound") or {}).get("master") is not None:
            lines.append(_sound_line(r["sound"]))
        lines += _chat_lines(r.get("chat") or {}, r.get("moderation") or {})
        if r.get("reasons"):
            lines.append("reasons  " + "  ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items())))
        lines += _hardware_lines(r.get("hardware") or {})
        lines += ["", "SOURCES", _table(r["sources"], ["name", "type", "state", "detail", "last_error"])]
        lines += ["", "SINKS", _table(r["sinks"], ["name", "type", "state", "detail", "last_error"])]
        if r["plugins"]["broken"]:
            lines += ["", "BROKEN PLUGINS", _table(r["plugins"]["broken"], ["name", "state", "path", "error"])]
        return "\n".join(lines)
    if verb in ("sound", "volume", "rate", "voice-default"):
        out = [_sound_line(r)] + [f"  note: {n}" for n in r.get("notes", [])]
        if r.get("saved") is False:
            out.append(f"  NOT SAVED (holds until a restart): {r.get('problem')}")
        return "\n".join(out)
    if verb == "health":
        width = max((len(c["check"]) for c in r["checks"]), default=5)
        lines = [f"health: {r['status'].upper()}"]
        for c in r["checks"]:
            level = c["level"] if c["level"] == "ok" else c["level"].upper()
            lines.append(f"  {level:<4}  {c['check']:<{width}}  {c['reason']}")
            if c["fix"] and c["level"] != "ok":
                lines.append(f"  {'':<4}  {'':<{width}}  fix: {c['fix']}")
        return "\n".join(lines)
    if verb == "queue":
        rows = []
        if r.get("speaking"):
            rows.append({**r["speaking"], "state": "speaking"})
        rows += [{**u, "state": "prepared"} for u in r.get("prepared", [])]
        rows += [{**u, "state": "pending"} for u in r.get("pending", [])]
        head = "(paused)\n" if r.get("paused") else ""
        return head + _table(rows, ["id", "state", "priority", "age_s", "source", "user", "text"])
    if verb == "web":
        if not r.get("listening"):
            return f"the web control room is not listening: {r.get('error') or r.get('advice')}"
        return "\n".join([
            f"control room  {r['url']}",
            f"sign in       {r['login_url']}",
            f"login code    {r['code']}   (one use, expires in {r['expires_s'] // 60} min; `ishowttsctl web` makes another)",
            f"OBS overlay   {r['overlay_url']}",
            "              (read-only: add it as a Browser source; tick \"Control audio via OBS\" to capture its sound)",
            f"HTTP API      Authorization: Bearer <the token in {r['token_file']}>",
            f"OpenAI TTS    base URL {r['url']}v1, API key: that token ({r['speech_url']})",
        ])  # fmt: skip
    if verb == "history":
        rows = [{**e, "time": time.strftime("%H:%M:%S", time.localtime(e["ts"])), "audio": "yes" if e["has_audio"] else "-"}
                for e in r["history"]]  # fmt: skip
        return _table(rows, ["id", "time", "user", "voice", "rtf", "audio", "text"])
    if verb == "source":
        return f"{r['name']}: {r['state']}" + (f" ({r['detail']})" if r.get("detail") else "")
    if verb == "voices" and "seconds" in r:
        return f"voice {r['id']}: {r['seconds']} s recording prepared by {r['engine']}"
    if verb == "voices" and "now" in r:
        return f"voice {r['id']}: upload removed; " + ("the configured recording is back" if r["now"] == "config" else "the voice is gone")
    if verb == "voices" and "reloaded" in r:
        errs = "".join(f"\n  {vid}: {e}" for vid, e in r["errors"].items())
        return f"reloaded: {', '.join(r['reloaded']) or '(none)'}" + (f"\nfailed:{errs}" if errs else "")
    if verb == "voices":
        return _table(r["voices"], ["id", "engine", "language", "description", "error"])
    if verb == "plugins":
        return _table(r["plugins"], ["name", "origin", "state", "provides", "error"])
    if verb == "events":
        return _table(r["events"], ["event", "doc"])
    if verb == "remove":
        return f"removed {len(r['removed'])} waiting, cut {len(r['cut'])}: " + " ".join(f"#{i}" for i in r["removed"] + r["cut"])
    if verb == "inject":
        if r["accepted"]:
            return f"queued #{r['id']} ({r['priority']}): {r['text']}"
        return f"filtered: {r['reason']} ({r['detail']})"
    if verb == "reload":
        changed = ", ".join(r["changed"]) or "nothing changed"
        more = f"\n  restart to apply: {', '.join(r['restart_needed'])}" if r["restart_needed"] else ""
        details = "".join(f"\n  {d}" for d in r.get("details", []))
        return f"reloaded {r['config']}: {changed}{details}{more}"
    if verb == "say":
        return f"queued #{r['id']}" if r["queued"] else "dropped: the queue is full of higher-priority speech"
    if verb == "metrics":
        return r["text"].rstrip("\n")
    if verb == "bench":
        b = r["baseline"]
        lines = [f"bench {r['key']}: median RTF {b['rtf_median']} (min {b['rtf_min']}, max {b['rtf_max']}) over {b['runs']} runs "
                 f"of {b['texts']} texts, {b['audio_s_per_run']} s of audio each; median TTFA {b['ttfa_median_s']} s"]  # fmt: skip
        lines.append(_table(r["runs"], ["rtf", "synth_s", "audio_s", "ttfa_s"]))
        lines.append(f"baseline saved to {r['saved']}" if r["saved"] else "not saved (add --save-baseline to keep it as the health baseline)")
        return "\n".join(lines)
    return json.dumps(r, ensure_ascii=False)


def _sound_line(snd: dict) -> str:
    sinks = "  ".join(f"{name} {v}%" for name, v in snd.get("sinks", {}).items())
    voice = snd.get("default_voice") or "(the engine's first)"
    if snd.get("default_voice_chosen") and snd["default_voice_chosen"] != snd.get("default_voice"):
        voice += f" (chosen {snd['default_voice_chosen']}: not available)"
    elif not snd.get("default_voice_chosen"):
        voice += " (config)"
    return (f"sound    volume master {snd['master']}%" + (f"  {sinks}" if sinks else "")
            + f"  rate {snd['rate']:g}x  default voice {voice}")


def _volume_params(values: list[str]) -> dict[str, Any]:
    """`volume [SINK] PERCENT`: ("80"), ("alsa", "80"), ("master", "80"); "80%" is fine."""
    if len(values) not in (1, 2):
        raise ValueError("volume: give PERCENT (the master volume) or SINK PERCENT, e.g. `volume 80` or `volume alsa 120`")
    text = values[-1].strip().removesuffix("%")
    try:
        percent = int(text)
    except ValueError:
        raise ValueError(f"volume: {values[-1]!r} is not a whole number of percent (0-150)") from None
    params: dict[str, Any] = {"percent": percent}
    if len(values) == 2 and values[0] != "master":
        params["sink"] = values[0]
    return params


def _hardware_lines(hw: dict) -> list[str]:
    plat = hw.get("platform") or {}
    if not plat:
        return []
    t = hw.get("telemetry") or {}
    cpu = t.get("cpu") or {}
    mem = t.get("memory") or {}
    head = f"hardware {plat.get('kind')}: {plat.get('model') or '?'}"
    if plat.get("l4t"):
        head += f"  L4T {plat['l4t']}"
    lines = [head]
    if t:
        parts = [f"cpu {cpu.get('percent')}% load {' '.join(str(x) for x in cpu.get('load') or [])}",
                 f"ram {mem.get('available_mb')} MB free", f"rss {(t.get('process') or {}).get('rss_mb')} MB"]  # fmt: skip
        for g in t.get("gpu") or []:
            parts.append(f"gpu {g.get('load_percent')}% {g.get('freq_mhz')} MHz")
        temps = t.get("temperatures") or {}
        if temps:
            parts.append("max temp " + str(max(temps.values())) + " °C")
        if (t.get("power") or {}).get("total_w") is not None:
            parts.append(f"power {t['power']['total_w']} W")
        lines.append("         " + "  ".join(parts))
    perf = hw.get("performance") or {}
    if plat.get("kind") == "jetson" and perf:
        nv = perf.get("nvpmodel") or {}
        locked = {True: "locked", False: "NOT locked", None: "unknown"}[perf.get("clocks_locked")]
        lines.append(f"         clocks {locked}  nvpmodel {nv.get('name') or '-'} (id {nv.get('id')})")
    return lines


def _format_event(ev: dict) -> str:
    fields = format_fields({k: v for k, v in ev.items() if k not in ("event", "ts", "seq")})
    return f"{ev.get('ts', '')} {ev.get('event')} {fields}"


def _watch(path: Path, as_json: bool, events: list[str] | None) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.fspath(path))
        req = {"id": 1, "method": "events.watch", "params": {"events": events} if events else {}}
        s.sendall((json.dumps(req) + "\n").encode())
        f = s.makefile("rb")
        first = json.loads(f.readline())
        if "error" in first:
            raise ApiError(first["error"]["code"], first["error"]["message"])
        if not as_json:
            print(_human("status", first["result"]["status"]), flush=True)
            print("--- events (Ctrl-C to stop) ---", flush=True)
        for line in f:
            ev = json.loads(line)
            print(json.dumps(ev, ensure_ascii=False) if as_json else _format_event(ev), flush=True)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ishowttsctl", description="Control a running ishowttsd.")
    ap.add_argument("--socket", help=f"control socket (default {default_socket_path()})")
    ap.add_argument("--json", action="store_true", help="print JSON for scripts")
    ap.add_argument("--timeout", type=float, help="seconds to wait for an answer (default 30; bench 3600)")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    sub.add_parser("status", help="what the daemon is doing")
    sub.add_parser("health", help="self-checks; exit 0 ok, 1 warn, 2 fail")
    p = sub.add_parser("say", help="speak a text now (as the operator, no moderation)")
    p.add_argument("text")
    p.add_argument("--voice")
    p.add_argument("--priority", default="urgent", help="urgent, paid, membership, moderator, normal, low, greeting")
    _option_args(p)
    p = sub.add_parser("inject", help="a message as if from a platform, through moderation")
    p.add_argument("text", nargs="?", default="")
    p.add_argument("--platform", default="bilibili")
    p.add_argument("--kind", default="danmaku")
    p.add_argument("--user", default="tester")
    p.add_argument("--user-id", default="")
    p.add_argument("--amount", type=float)
    p.add_argument("--currency")
    p.add_argument("--id", default="")
    p.add_argument("--extra", default="{}", help='JSON object, e.g. \'{"gift": "辣条", "num": 3}\'')
    p.add_argument("--moderator", action="store_true")
    sub.add_parser("queue", help="what is speaking and waiting")
    p = sub.add_parser("remove", help="take back speech, waiting or speaking: by id, or a user's, platform's, classes'")
    p.add_argument("id", type=int, nargs="?", help="the utterance's id (see `ishowttsctl queue`)")
    p.add_argument("--user", help="everything of this user (name or id)")
    p.add_argument("--platform", help="only from this platform")
    p.add_argument("--class", dest="classes", action="append", help="only this priority class (repeatable)")
    sub.add_parser("skip", help="cut what is speaking now")
    sub.add_parser("pause", help="hold speech")
    sub.add_parser("resume", help="go on speaking")
    p = sub.add_parser("clear", help="drop pending speech (all, or --class ...)")
    p.add_argument("--class", dest="classes", action="append", help="only this priority class (repeatable)")
    p = sub.add_parser("voices", help="the voices you can use; --reload re-reads [[voices]] from the config")
    p.add_argument("--reload", nargs="?", const="", metavar="ID", help="re-prepare every voice (or only ID) after an edit")
    vs = p.add_subparsers(dest="action", metavar="ACTION")
    q = vs.add_parser("upload", help="give a voice (new or configured) a reference recording and its transcript")
    q.add_argument("id")
    q.add_argument("file", help="the recording: WAV, FLAC, Ogg or MP3, a few seconds of clear speech")
    q.add_argument("--transcript", required=True, help="what the recording says, word for word")
    q.add_argument("--engine", help="the engine that clones it (default: the voice's, else the active one)")
    q.add_argument("--language")
    q = vs.add_parser("restore", help="drop a voice's upload (a configured voice gets its own recording back)")
    q.add_argument("id")
    q = vs.add_parser("preview", help="write a sample of a voice to a file (not played on the stream)")
    q.add_argument("id")
    q.add_argument("--text")
    q.add_argument("--out", required=True, help="WAV file to write")
    p = sub.add_parser("source", help="stop or start a source, or add a Bilibili room or Twitch channel for this run")
    ss = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action in ("stop", "start"):
        ss.add_parser(action, help=f"{action} a source by name (see `ishowttsctl status`)").add_argument("name")
    q = ss.add_parser("add", help="add a source for this run: bilibili ROOM or twitch CHANNEL (a number, name or address)")
    q.add_argument("type", choices=["bilibili", "twitch"])
    q.add_argument("room", help="the Bilibili room number or live.bilibili.com address; "
                   "the Twitch channel, #channel or twitch.tv address")
    q.add_argument("--name", help="its name in status (default: TYPE-ROOM)")
    p = sub.add_parser("history", help="the last utterances spoken; --save ID FILE writes one's audio")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--save", nargs=2, metavar=("ID", "FILE"), help="write utterance ID's audio to FILE (WAV)")
    p = sub.add_parser("synthesize", help="speech as a file, not on the stream (what /v1/audio/speech does)")
    p.add_argument("text")
    p.add_argument("--voice")
    p.add_argument("--format", default="wav", choices=["wav", "pcm", "flac", "mp3", "opus"])
    p.add_argument("--out", required=True, help="the file to write")
    _option_args(p)
    sub.add_parser("sound", help="the live sound: master and per-sink volume, speech rate, default voice")
    p = sub.add_parser("volume", help="set the volume live, in percent (0-150): PERCENT for the master, SINK PERCENT for one sink")
    p.add_argument("values", nargs="*", metavar="[SINK] PERCENT", help="no value: show the volumes")
    p = sub.add_parser("rate", help="set the speech rate live (0.5-2.0; 1 is the voices' own speed)")
    p.add_argument("rate", nargs="?", help="e.g. 1.2 or 1.2x; no value: show it")
    p = sub.add_parser("voice-default", aliases=["default-voice"], help="choose the default voice live (see `voices`)")
    p.add_argument("id", nargs="?", help="a voice id; no value: show it")
    p.add_argument("--config", action="store_true", help="go back to [engine] default_voice from the config")
    sub.add_parser("web", help="the control room's address with a one-time login code, and the overlay's")
    sub.add_parser("plugins", help="loaded, broken and refused plugins")
    p = sub.add_parser("watch", help="stream events live")
    p.add_argument("--event", dest="events", action="append", help="only this event (repeatable; see `ishowttsctl events`)")
    sub.add_parser("events", help="the event catalogue: every event and what it means")
    sub.add_parser("reload", help="re-read the config file: moderation and queue policy (like SIGHUP)")
    sub.add_parser("metrics", help="Prometheus text metrics")
    p = sub.add_parser("bench", help="time the running engine; --save-baseline keeps it as the health baseline")
    p.add_argument("--save-baseline", action="store_true", help="store the result in [health] baseline_file")
    p.add_argument("--runs", type=int, default=3, help="timed passes over the text set (after one warm-up pass)")
    p.add_argument("--voice", help="voice id (default: the default voice)")
    p.add_argument("--text", action="append", dest="texts", help="a text to time (repeatable; default: a fixed set)")
    p.add_argument("--compare-upstream", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="instead: run the side-by-side F5 benchmark here (python -m ishowttsd.bench --engine f5 "
                   "--compare-upstream ARGS, e.g. --out FILE); it needs no daemon")
    return ap


def _option_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speed", type=float, help="speaking rate (1 = the voice's own)")
    p.add_argument("--steps", type=int, help="F5: sampling steps")
    p.add_argument("--cfg-strength", type=float, help="F5: guidance strength")
    p.add_argument("--seed", type=int, help="F5: noise seed")


def _options(args) -> dict[str, Any]:
    return {k: v for k in ("speed", "steps", "cfg_strength", "seed") if (v := getattr(args, k)) is not None}


def _room_request(args) -> tuple[str, dict[str, Any], str | None]:
    """(method, params, file to write the answer's audio to) for the control-room verbs."""
    verb = args.verb
    if verb == "voices" and args.action == "upload":
        audio = base64.b64encode(Path(args.file).read_bytes()).decode()
        params = {"id": args.id, "transcript": args.transcript, "audio_b64": audio, "engine": args.engine, "language": args.language}
        return "voices.upload", {k: v for k, v in params.items() if v is not None}, None
    if verb == "voices" and args.action == "restore":
        return "voices.restore", {"id": args.id}, None
    if verb == "voices":  # preview
        return "voices.preview", {"id": args.id, **({"text": args.text} if args.text else {})}, args.out
    if verb == "source" and args.action == "add":
        key = "room_id" if args.type == "bilibili" else "channel"
        settings = {key: args.room, **({"name": args.name} if args.name else {})}  # an address is normalised by the daemon
        return "sources.add", {"type": args.type, "settings": settings}, None
    if verb == "source":
        return f"sources.{args.action}", {"name": args.name}, None
    if verb == "history" and args.save:
        return "history.audio", {"id": int(args.save[0])}, args.save[1]
    if verb == "history":
        return "history", {"limit": args.limit}, None
    return "synthesize", {"text": args.text, "voice": args.voice, "format": args.format, "options": _options(args)}, args.out


def _sound_request(args, verb: str) -> tuple[str, dict[str, Any]]:
    """(method, params) of `volume`, `rate` and `voice-default`; without a value, they show the sound."""
    if verb == "volume":
        return ("volume", _volume_params(args.values)) if args.values else ("sound", {})
    if verb == "rate":
        if args.rate is None:
            return "sound", {}
        try:
            return "rate", {"rate": float(args.rate.strip().rstrip("x×"))}
        except ValueError:
            raise ValueError(f"rate: {args.rate!r} is not a number; give a speed multiplier 0.5-2.0, e.g. `rate 1.2`") from None
    if args.config:
        return "voices.default", {"id": None}
    return ("voices.default", {"id": args.id}) if args.id else ("sound", {})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.socket) if args.socket else default_socket_path()
    verb = args.verb
    if verb == "bench" and args.compare_upstream is not None:
        # heavy and local: two full models side by side, so it never runs inside the daemon
        from ishowttsd import bench

        return bench.main(["--engine", "f5", "--compare-upstream", *[a for a in args.compare_upstream if a != "--"]])
    method, params, out = verb, {}, None
    if verb == "say":
        params = {"text": args.text, "voice": args.voice, "priority": args.priority, "options": _options(args)}
    elif verb == "inject":
        try:
            extra = json.loads(args.extra)
        except json.JSONDecodeError as e:
            print(f"ishowttsctl: --extra is not JSON: {e}", file=sys.stderr)
            return EXIT_ERROR
        params = {
            "platform": args.platform, "kind": args.kind, "text": args.text,
            "user": {"name": args.user, "id": args.user_id, "moderator": args.moderator},
            "amount": args.amount, "currency": args.currency, "id": args.id, "extra": extra,
        }  # fmt: skip
    elif verb == "remove":
        method = "queue.remove"
        params = {k: v for k, v in (("id", args.id), ("user", args.user), ("platform", args.platform),
                                    ("classes", args.classes)) if v is not None}  # fmt: skip
    elif verb == "clear":
        params = {"classes": args.classes}
    elif verb == "voices" and args.reload is not None:
        method, params = "voices.reload", ({"id": args.reload} if args.reload else {})
    elif verb in ("volume", "rate", "voice-default", "default-voice"):
        verb = "voice-default" if verb == "default-voice" else verb
        try:
            method, params = _sound_request(args, verb)
        except ValueError as e:
            print(f"ishowttsctl: {e}", file=sys.stderr)
            return EXIT_ERROR
    elif verb == "bench":
        params = {"runs": args.runs, "voice": args.voice, "texts": args.texts, "save_baseline": args.save_baseline}
    elif verb in ("source", "history", "synthesize") or (verb == "voices" and args.action):
        try:
            method, params, out = _room_request(args)
        except (OSError, ValueError) as e:
            print(f"ishowttsctl: {e}", file=sys.stderr)
            return EXIT_ERROR
    try:
        check_socket_folder(path)  # never talk to a socket another user could have put there
    except UnsafeSocket as e:
        print(f"ishowttsctl: refusing to connect: {e}", file=sys.stderr)
        return HEALTH_UNKNOWN if verb == "health" else EXIT_ERROR
    try:
        if verb == "watch":
            return _watch(path, args.json, args.events)
        # a bench on a big model takes minutes
        timeout = args.timeout or (3600.0 if verb == "bench" else 30.0)
        result = client_request(path, method, params, timeout=timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        print(
            f"ishowttsctl: ishowttsd is not running (nothing listens on {path}).\n"
            f"  start it with: ishowttsd --config YOUR.toml   (or: systemctl start ishowttsd)\n"
            f"  or point at its socket with --socket PATH",
            file=sys.stderr,
        )
        return HEALTH_FAIL if verb == "health" else EXIT_NO_DAEMON
    except PermissionError:
        print(f"ishowttsctl: permission denied on {path}; run as the daemon's user or join its group", file=sys.stderr)
        return HEALTH_UNKNOWN if verb == "health" else EXIT_NO_DAEMON
    except ApiError as e:
        print(f"ishowttsctl: {e.code}: {e.message}", file=sys.stderr)
        return HEALTH_UNKNOWN if verb == "health" else EXIT_ERROR
    except TimeoutError:
        print(f"ishowttsctl: ishowttsd at {path} did not answer in time; it may be overloaded or hung "
              f"(check `journalctl -u ishowttsd`)", file=sys.stderr)  # fmt: skip
        return HEALTH_UNKNOWN if verb == "health" else EXIT_ERROR
    except OSError as e:
        print(f"ishowttsctl: cannot talk to ishowttsd at {path}: {e}", file=sys.stderr)
        return HEALTH_UNKNOWN if verb == "health" else EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    if out is not None:
        Path(out).write_bytes(base64.b64decode(result.pop("audio_b64")))
        result["file"] = out
        print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else f"wrote {out} ({result['format']})")
        return EXIT_OK
    print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else _human(verb, result))
    if verb == "health":
        return Level(result["status"]).code
    if verb == "inject" and not result["accepted"]:
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
