"""What saying names and words right costs: Moderator.moderate end to end, per message.

    python -m ishowttsd.bench.moderation --out docs/bench-moderation.json

One run, the same messages through two Moderators side by side: one with the pronunciation
step off (the defaults), one with 5,000 replacements, 5,000 nicknames, a few replacement
patterns, numbers and emoji read as words, and the built-in rewrite plugin. The messages are a
mix of Chinese and English danmaku as chat writes it (short lines, numbers, emoji, slang that
the table replaces, nicknamed and other users). Each message is timed through both, in
alternating order, so drift on a shared machine hits both sides alike; the ratio is what holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import random
import sys
import time
from typing import Any

from ishowttsd.bench.cli import emit

TARGET_P99_MS = 1.0

ZH_LINES = [
    "主播{slang}", "哈哈哈哈哈", "这波操作{slang}", "{year}年了还有人看吗", "今天{time}开播吗", "涨了{pct}%",
    "送了¥{money}的礼物", "{emoji}{emoji}", "第{n}次来了{emoji}", "主播好强{emoji}", "打了{n}分钟了",
    "{slang}{slang}", "晚上好{emoji}", "我重{n}kg", "这个{slang}是什么意思", "还差{big}个",
    "主播{n}岁了吗", "前面的{slang}", "{n}楼说得对", "日期是{date}",
]  # fmt: skip
EN_LINES = [
    "{slang} that was close", "gg {slang}", "${money} says he wins", "{pct}% chance", "see you at {time}",
    "first time here {emoji}", "in {year} this was meta", "the {nth} try", "{slang} {slang} {slang}",
    "PogChamp {emoji}", "that costs ${money}.50", "we need {n} more", "hello chat", "nice {emoji}",
    "{slang} lmao", "is this the {nth} run?", "{n} kills already",
]  # fmt: skip
SLANG = ["yyds", "xswl", "awsl", "666", "nb", "gg", "lol", "kekw", "pog", "omegalul", "xdd", "草", "绝绝子", "破防了"]
EMOJI = ["😂", "👍", "❤️", "🎉", "😭", "🔥", "👋", "🇨🇳"]
ZH_CHARS = (  # common characters, for made-up Chinese entries and names
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种"
    "面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本"
    "去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比"
    "或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总"
    "次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做"
    "必战先回则任取据处理世车"
)
LATIN = "abcdefghijklmnopqrstuvwxyz"


def make_tables(rng: random.Random, entries: int) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]]]:
    """`entries` replacements (the real slang, then made-up words and phrases, Latin and
    Chinese) and nicknames, and the pool of users messages come from (half nicknamed)."""
    reps = {"yyds": "永远的神", "xswl": "笑死我了", "awsl": "啊我死了", "666": "溜溜溜", "nb": "牛", "gg": "good game",
            "lol": "laugh out loud", "kekw": "kek", "pog": "pogg", "omegalul": "omega lul", "xdd": "x d d",
            "绝绝子": "绝了", "破防了": "心态崩了"}  # fmt: skip
    while len(reps) < entries:
        if rng.random() < 0.5:
            key = "".join(rng.choice(LATIN) for _ in range(rng.randint(3, 9)))
        else:
            key = "".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(2, 4)))
        reps.setdefault(key, "替换" + key if not key.isascii() else key.upper())
    users = [(f"{rng.choice(['小', '阿', '老', ''])}{''.join(rng.choice(ZH_CHARS) for _ in range(2))}{i}", str(100000 + i))
             for i in range(entries * 2)]  # fmt: skip
    nicks: dict[str, str] = {}
    for i, (name, uid) in enumerate(users[:entries]):
        nicks[f"bilibili:{uid}" if i % 2 else name] = f"昵称{i}"
    return reps, nicks, users


def make_messages(rng: random.Random, count: int, users: list[tuple[str, str]]):
    from ishowttsd.messages import Message

    out = []
    for i in range(count):
        zh = rng.random() < 0.65
        line = rng.choice(ZH_LINES if zh else EN_LINES)
        text = line.format_map(_Fill(rng))
        name, uid = rng.choice(users)
        platform_ = "bilibili" if zh else "twitch"
        out.append(Message.from_dict({"platform": platform_, "kind": "danmaku", "text": text,
                                      "user": {"name": name, "id": uid}, "id": f"m{i}"}))  # fmt: skip
    return out


class _Fill(dict):
    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def __missing__(self, key: str) -> str:
        r = self.rng
        return {
            "slang": lambda: r.choice(SLANG),
            "year": lambda: str(r.randint(1990, 2030)),
            "time": lambda: f"{r.randint(0, 23)}:{r.choice(['00', '05', '30', '45'])}",
            "pct": lambda: r.choice(["3.5", "50", "99", "12"]),
            "money": lambda: str(r.choice([1, 5, 30, 100, 648])),
            "emoji": lambda: r.choice(EMOJI),
            "n": lambda: str(r.randint(1, 500)),
            "big": lambda: "9" * r.randint(10, 24),
            "date": lambda: f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
            "nth": lambda: r.choice(["1st", "2nd", "3rd", "12th", "21st"]),
        }[key]()


def _pct(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def _stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"p50_ms": round(_pct(s, 0.50), 4), "p99_ms": round(_pct(s, 0.99), 4), "max_ms": round(s[-1], 4),
            "mean_ms": round(sum(s) / len(s), 4)}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    from ishowttsd import __version__, pronounce
    from ishowttsd.config import ModerationConfig
    from ishowttsd.hardware import cpu_info
    from ishowttsd.moderation import Moderator, Rejection
    from ishowttsd.plugins import PluginManager
    from ishowttsd.queue import DEFAULT_TTL

    rng = random.Random(args.seed)
    reps, nicks, users = make_tables(rng, args.entries)
    patterns = {r"(\d+)\s?kg": r"\1公斤", r"\bha(?:ha)++\b": "哈哈", r"w{3,}+": "哈哈"}
    base = dict(duplicate_window_s=0.0, max_chars=200)  # every message is said: the whole path is timed
    off_cfg = ModerationConfig(**base)
    on_cfg = ModerationConfig(**base, replacements=reps, nicknames=nicks, replacement_patterns=patterns,
                              read_numbers=True, emoji="name")  # fmt: skip
    pm = PluginManager()
    pm.add_module(pronounce, name="ishowttsd.pronounce")
    pm.collect()
    t = time.perf_counter()
    on = Moderator(on_cfg, DEFAULT_TTL, rewrite=pm.rewrite_text)
    load_ms = (time.perf_counter() - t) * 1000
    off = Moderator(off_cfg, DEFAULT_TTL)
    messages = make_messages(rng, args.messages, users)
    for m in messages[: min(500, len(messages))]:  # warm-up: imports, caches, the emoji tables
        off.moderate(m)
        on.moderate(m)
    off.state.recent_ids.clear()
    on.state.recent_ids.clear()
    times: dict[str, list[float]] = {"off": [], "on": []}
    rejected = {"off": 0, "on": 0}
    clock = time.perf_counter_ns
    gc.collect()
    for i, m in enumerate(messages):
        order = (("off", off), ("on", on)) if i % 2 == 0 else (("on", on), ("off", off))
        for name, mod in order:
            t0 = clock()
            r = mod.moderate(m)
            times[name].append((clock() - t0) / 1e6)
            rejected[name] += isinstance(r, Rejection)
    off_s, on_s = _stats(times["off"]), _stats(times["on"])
    samples = []
    for m in messages[:10]:
        m = dataclasses.replace(m, id="")  # a message id is said once: these are shown again
        samples.append({"message": m.text, "off": getattr(off.moderate(m), "text", None),
                        "on": getattr(on.moderate(m), "text", None)})  # fmt: skip
    return {
        "benchmark": "moderation",
        "what": "Moderator.moderate end to end per message, pronunciation off vs on, same messages, alternating",
        "messages": len(messages),
        "zh_share": round(sum(1 for m in messages if m.platform == "bilibili") / len(messages), 3),
        "config_on": {"replacements": len(reps), "nicknames": len(nicks), "replacement_patterns": len(patterns),
                      "read_numbers": True, "emoji": "name", "rewrite_plugins": [n for n, _, _ in pm.rewriters]},
        "off": off_s,
        "on": on_s,
        "ratio": {"p50": round(on_s["p50_ms"] / off_s["p50_ms"], 2), "p99": round(on_s["p99_ms"] / off_s["p99_ms"], 2)},
        "rejected": rejected,
        "load_ms": round(load_ms, 1),
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": on_s["p99_ms"] <= TARGET_P99_MS,
        "counts_on": on.status()["counts"],
        "samples": samples,
        "cpu": cpu_info().model or platform.processor() or platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "versions": {"ishowttsd": __version__, "python": platform.python_version(),
                     **{p: version(p) for p in ("pyahocorasick", "regex", "cn2an", "num2words", "emoji")}},  # fmt: skip
        "seed": args.seed,
    }


def render(r: dict[str, Any]) -> str:
    c = r["config_on"]
    lines = [
        f"moderation cost per message, {r['messages']} messages ({r['zh_share']:.0%} Chinese), on {r['cpu']}",
        f"on = {c['replacements']} replacements, {c['nicknames']} nicknames, {c['replacement_patterns']} patterns, "
        f"numbers and emoji read, rewrite plugins {c['rewrite_plugins']}; built in {r['load_ms']} ms",
        "",
        f"{'':6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'mean ms':>9}",
    ]
    for side in ("off", "on"):
        s = r[side]
        lines.append(f"{side:6} {s['p50_ms']:9.4f} {s['p99_ms']:9.4f} {s['max_ms']:9.4f} {s['mean_ms']:9.4f}")
    lines.append(f"{'on/off':6} {r['ratio']['p50']:9.2f} {r['ratio']['p99']:9.2f}")
    lines.append("")
    verdict = "meets" if r["meets_target"] else "MISSES"
    lines.append(f"p99 with everything on: {r['on']['p99_ms']:.4f} ms, {verdict} the target of {r['target_p99_ms']} ms")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ishowttsd.bench.moderation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20_000, help="messages timed through each side")
    ap.add_argument("--entries", type=int, default=5_000, help="replacements, and nicknames, in the table")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", help="write the JSON result here")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    emit(run(args), render, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
