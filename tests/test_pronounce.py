"""Saying names and words right: nicknames, replacements, patterns, numbers, emoji, rewrite plugins.

Unit tests of each transform, then the real daemon: messages injected over the control socket
and what was said read back from the file sink's spoken.jsonl, a reload that changes a
nickname, and plugins that rewrite in load order (one of them broken).
"""

from __future__ import annotations

import time

import pytest
from daemon_process import DaemonProcess, spoken_log

from ishowttsd.config import ConfigError, ModerationConfig, parse_config
from ishowttsd.messages import Message
from ishowttsd.moderation import Moderator, Rejection
from ishowttsd.plugins import PluginManager
from ishowttsd.pronounce import dangerous_pattern, emoji_name, language_of, read_numbers, spell_number
from ishowttsd.queue import DEFAULT_TTL


def msg(text="", platform="bilibili", name="阿伟", uid="1001", kind="danmaku", **kw) -> Message:
    return Message.from_dict({"platform": platform, "kind": kind, "text": text, "user": {"id": uid, "name": name}, **kw})


def moderator(**cfg) -> Moderator:
    return Moderator(ModerationConfig(**cfg), DEFAULT_TTL)


def said(mod: Moderator, m: Message) -> str:
    r = mod.moderate(m)
    assert not isinstance(r, Rejection), r
    return r.text


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, lang, expected",
    [
        ("2026年3月5日开播", "zh", "二零二六年三月五日开播"),
        ("涨了3.5%", "zh", "涨了百分之三点五"),
        ("12:30开播", "zh", "十二点三十分开播"),
        ("12:05", "zh", "十二点零五分"),
        ("20:00见", "zh", "二十点见"),
        ("¥5", "zh", "五元"),
        ("$5", "zh", "五美元"),
        ("共计10,000元", "zh", "共计一万元"),
        ("-5度", "zh", "负五度"),
        ("2026-12-02", "zh", "二零二六年十二月二日"),
        ("电话13800138000", "zh", "电话一三八零零一三八零零零"),
        ("007", "zh", "零零七"),
        ("$5", "en", "five dollars"),
        ("$1", "en", "one dollar"),
        ("$5.50 each", "en", "five dollars fifty cents each"),
        ("£2", "en", "two pounds"),
        ("50% off", "en", "fifty percent off"),
        ("see you at 12:30", "en", "see you at twelve thirty"),
        ("at 9:05", "en", "at nine oh five"),
        ("at 12:00", "en", "at twelve o'clock"),
        ("in 2026", "en", "in twenty twenty-six"),
        ("2026 points", "en", "two thousand and twenty-six points"),
        ("the 1st and 22nd", "en", "the first and twenty-second"),
        ("3.5 stars", "en", "three point five stars"),
        ("-5 degrees", "en", "minus five degrees"),
        ("1,000,000 people", "en", "one million people"),
        ("on 2026-12-02", "en", "on December second, twenty twenty-six"),
        ("gg2", "en", "gg two"),
    ],
)
def test_numbers_become_words_in_the_texts_language(text, lang, expected):
    assert read_numbers(text, lang)[0] == expected


def test_huge_numbers_are_bounded_never_an_exception_or_a_slow_conversion():
    t = time.perf_counter()
    out, n = read_numbers("还差99999999999999999999999个", "zh")
    assert out == "还差" + "九" * 23 + "个" and n == 1  # digit by digit
    long = "9" * 5000
    assert read_numbers(f"x {long} y", "en") == (f"x {long} y", 0)  # left as written
    assert read_numbers("1" * 40 + ".5", "zh")[0] == "1" * 40 + ".5"
    assert read_numbers("$" + "9" * 30, "en")[0] == "$" + "9" * 30
    assert read_numbers("1e999 nan inf", "en")[0] == "one e nine hundred and ninety-nine nan inf"
    assert time.perf_counter() - t < 0.5


def test_keycap_emoji_keep_their_digit_and_template_numbers_are_spoken():
    assert read_numbers("1️⃣ go", "en")[0] == "1️⃣ go"
    assert spell_number(15, "zh") == "十五" and spell_number(30.5, "en") == "thirty point five"
    assert spell_number("", "zh") == "" and spell_number(True, "en") is True
    assert spell_number(float("inf"), "en") == float("inf")


def test_language_is_judged_by_script_per_message():
    assert language_of("主播 gg") == "zh" and language_of("gg wp") == "en"
    assert language_of("666", "en") == "en" and language_of("😂") == "zh"


# -- emoji -----------------------------------------------------------------------------------


def test_emoji_are_kept_dropped_or_named_in_the_texts_language():
    assert emoji_name("😂", "zh") == "笑哭了" and emoji_name("👍", "en") == "thumbs up"
    m = msg("好耶😂")
    assert said(moderator(emoji="keep"), m) == "阿伟说：好耶😂"
    assert said(moderator(emoji="drop"), msg("好耶😂")) == "阿伟说：好耶"
    assert said(moderator(emoji="name"), msg("好耶😂")) == "阿伟说：好耶 笑哭了"
    tw = msg("nice 👍", platform="twitch", name="bob")
    assert said(moderator(emoji="name"), tw) == "bob says: nice thumbs up"
    # max_emoji still applies first: only the first emoji are read
    assert said(moderator(emoji="name", max_emoji=1), msg("好😂😂😂")) == "阿伟说：好 笑哭了"
    r = moderator(emoji="drop").moderate(msg("😂👍"))
    assert isinstance(r, Rejection) and r.reason == "empty"


# -- replacements and nicknames --------------------------------------------------------------


def test_replacements_longest_match_whole_words_case_insensitive():
    mod = moderator(replacements={"lol": "laugh out loud", "lol guys": "hello everyone", "yyds": "永远的神", "666": "溜溜溜"})
    assert said(mod, msg("LOL guys, lollipop lol", platform="twitch", name="bob")) == \
        "bob says: hello everyone, lollipop laugh out loud"  # fmt: skip
    assert said(mod, msg("主播yyds666")) == "阿伟说：主播永远的神溜溜溜"
    c = mod.status()["counts"]
    assert c["replacements"] == 4


def test_a_replacement_result_is_said_as_written_numbers_and_all():
    mod = moderator(replacements={"p2": "P2 server"}, read_numbers=True, nicknames={"bob": "Bob 2000"})
    out = said(mod, msg("join p2 at 8:00 with 3 friends", platform="twitch", name="bob"))
    assert out == "Bob 2000 says: join P2 server at eight o'clock with three friends"


def test_nicknames_by_name_id_and_platform_and_replacements_on_names():
    mod = moderator(nicknames={"twitch:777": "Seven", "阿伟": "伟哥", "42": "answer"}, replacements={"xx_gamer": "gamer"})
    assert said(mod, msg("hi", platform="twitch", name="whatever", uid="777")) == "Seven says: hi"
    assert said(mod, msg("晚上好")) == "伟哥说：晚上好"
    assert said(mod, msg("yo", platform="twitch", name="x", uid="42")) == "answer says: yo"
    assert said(mod, msg("yo there", platform="twitch", name="xX_Gamer", uid="9")) == "gamer says: yo there"
    # a nickname on a gift's template too, with its count read as words
    mod = moderator(nicknames={"阿伟": "伟哥"}, read_numbers=True)
    gift = msg(kind="gift", amount=1.5, currency="CNY", extra={"gift": "辣条", "num": 15})
    assert said(mod, gift) == "感谢伟哥送的十五个辣条"
    assert mod.status()["counts"]["nicknames"] == 1


def test_thousands_of_entries_stay_fast():
    reps = {f"word{i}": f"spoken{i}" for i in range(5000)}
    nicks = {f"user{i}": f"nick{i}" for i in range(5000)}
    mod = moderator(replacements=reps, nicknames=nicks, read_numbers=True, duplicate_window_s=0, max_chars=500)
    text = " ".join(f"word{i}" for i in range(0, 5000, 500))
    assert said(mod, msg(text, platform="twitch", name="user4999", uid="u")).startswith("nick4999 says: spoken0 spoken500")
    t = time.perf_counter()
    for i in range(200):
        mod.moderate(msg(f"word{i} and 12 more {i}", platform="twitch", name=f"user{i}", uid=str(i)))
    assert (time.perf_counter() - t) / 200 < 0.01  # linear in the text, not the table: far under 10 ms


# -- patterns --------------------------------------------------------------------------------


def test_patterns_replace_with_groups_in_file_order_after_plain_entries():
    mod = moderator(replacement_patterns={r"(\d+)kg": r"\1公斤", r"ha(ha)+": "哈哈", r"公斤": "no"})
    assert said(mod, msg("我重60kg hahaha")) == "阿伟说：我重60公斤 哈哈"  # a result is not matched again (numbers off)
    assert mod.status()["counts"]["pattern_replacements"] == 2
    # plain entries come first: what they replaced is not seen by the patterns
    mod = moderator(replacements={"kg": "千克"}, replacement_patterns={r"(\d+)kg": r"\1公斤"})
    assert said(mod, msg("我重60kg")) == "阿伟说：我重60千克"


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(\w*)*x", r"((ab)+)+", r"(?:x+y?)*z"])
def test_catastrophic_patterns_are_refused_at_load_with_advice(pattern):
    assert dangerous_pattern(pattern)
    with pytest.raises(ConfigError, match=r"replacement_patterns.*refused.*possessive"):
        moderator(replacement_patterns={pattern: "x"})


@pytest.mark.parametrize("pattern", [r"(\d+)kg", r"(a++)+", r"(?>a+)+", r"[(a+)]+", r"(ab|cd)+", r"\(a+\)+"])
def test_safe_patterns_pass(pattern):
    assert dangerous_pattern(pattern) is None


def test_broken_patterns_and_bad_group_references_name_the_key():
    with pytest.raises(ConfigError, match=r"replacement_patterns\['\(oops'\].*not a valid regular expression"):
        moderator(replacement_patterns={"(oops": "x"})
    with pytest.raises(ConfigError, match=r"group \\2"):
        moderator(replacement_patterns={"(a)b": r"\2"})
    with pytest.raises(ConfigError, match="moderation.nicknames"):
        parse_config({"moderation": {"nicknames": {" ": "x"}}})
    with pytest.raises(ConfigError, match="moderation.emoji"):
        parse_config({"moderation": {"emoji": "sometimes"}})
    with pytest.raises(ConfigError, match="moderation.pattern_timeout_ms"):
        parse_config({"moderation": {"pattern_timeout_ms": 0}})


def test_a_pattern_that_runs_out_of_time_is_skipped_counted_and_reported_once():
    events = []
    # (a|aa)+ backtracks exponentially and passes the cheap shape check: the timeout bounds it
    cfg = ModerationConfig(replacement_patterns={r"(a|aa)+b": "B", "hello": "你好"}, pattern_timeout_ms=30,
                           duplicate_window_s=0, max_repeat=50)  # fmt: skip
    mod = Moderator(cfg, DEFAULT_TTL, report=lambda e, **f: events.append((e, f)))
    for _ in range(2):
        t = time.perf_counter()
        out = said(mod, msg("a" * 40 + " hello", platform="twitch", name="bob"))
        assert time.perf_counter() - t < 0.5
        assert out == "bob says: " + "a" * 40 + " hello"  # the budget was spent: later patterns are skipped too
    c = mod.status()["counts"]
    assert c["pattern_timeouts"] >= 2
    assert [e for e, _ in events].count("pronounce.pattern_timeout") == 2  # once per pattern
    assert "pattern_timeout_ms" in events[0][1]["advice"]
    # names are bounded the same way
    t = time.perf_counter()
    assert said(mod, msg("hi", platform="twitch", name="a" * 40, uid="a")) == "a" * 40 + " says: hi"
    assert time.perf_counter() - t < 0.5


# -- the rewrite hook ------------------------------------------------------------------------


PLUGIN_A = '''
from ishowttsd.hookspecs import hookimpl

@hookimpl
def ishowtts_rewrite_text(text, message, language):
    return text.replace("cat", "dog")
'''
PLUGIN_B = '''
from ishowttsd.hookspecs import hookimpl

@hookimpl
def ishowtts_rewrite_text(text, language):
    return text.replace("dog", "wolf") + ("!" if language == "en" else "！")
'''
PLUGIN_C = '''
from ishowttsd.hookspecs import hookimpl

@hookimpl
def ishowtts_rewrite_text(text, message, language):
    if "boom" in text:
        raise RuntimeError("boom")
    return None
'''


def plugin_dir(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    for name, body in (("a_cat.py", PLUGIN_A), ("b_wolf.py", PLUGIN_B), ("c_boom.py", PLUGIN_C)):
        (d / name).write_text(body)
    return d


def test_rewrites_run_in_load_order_and_a_raising_one_is_skipped(tmp_path):
    pm = PluginManager()
    pm.load_all(extra_dirs=[plugin_dir(tmp_path)], autoload=False)
    assert [n for n, _, _ in pm.rewriters] == ["ishowttsd.pronounce", "a_cat", "b_wolf", "c_boom"]
    events = []
    mod = Moderator(ModerationConfig(), DEFAULT_TTL, report=lambda e, **f: events.append((e, f)), rewrite=pm.rewrite_text)
    assert said(mod, msg("my cat", platform="twitch", name="bob")) == "bob says: my wolf!"  # a, then b: not LIFO
    assert said(mod, msg("ｃａｔ boom", platform="twitch", name="bob")) == "bob says: wolf boom!"
    assert said(mod, msg("boom again", platform="twitch", name="bob")) == "bob says: boom again!"
    # reported once (then at most once a minute), counted every time
    assert events == [("pronounce.rewrite_failed", {"plugin": "c_boom", "error": "RuntimeError: boom", "failures": 1})]
    c = mod.status()["counts"]
    assert c["rewrite_errors"] == 2 and c["rewritten"] == 3


# -- the real daemon -------------------------------------------------------------------------

CONFIG = """
[engine]
default = "espeak"
warmup = false

[daemon]
state_dir = "state"
plugin_dirs = ["plugins"]

[[sinks]]
type = "file"
directory = "out"

[moderation]
read_numbers = true
emoji = "name"
duplicate_window_s = 0

[moderation.nicknames]
"bilibili:1001" = "{nick}"
"viewer42" = "Forty Two"

[moderation.replacements]
"yyds" = "永远的神"
"gg" = "good game"

[moderation.replacement_patterns]
'(\\d+)kg' = '\\1公斤'
"""


def inject(d, text, name="小明", uid="1001", platform="bilibili", **kw):
    return d.request("inject", {"platform": platform, "kind": "danmaku", "user": {"name": name, "id": uid}, "text": text, **kw})


def test_the_daemon_says_names_and_words_right_and_a_reload_changes_a_nickname(tmp_path):
    plugin_dir(tmp_path)
    with DaemonProcess(tmp_path, CONFIG.replace("{nick}", "明哥")) as d:
        assert inject(d, "主播yyds，2026年见😂，3.5%，重60kg")["accepted"]
        assert inject(d, "gg at 12:30, $5 for my cat", name="viewer42", uid="42", platform="twitch")["accepted"]
        assert inject(d, "boom 3", name="viewer42", uid="42", platform="twitch")["accepted"]
        d.wait_for(lambda: len(spoken_log(tmp_path / "out")) == 3, what="three lines said")
        said_ = [r["said"] for r in spoken_log(tmp_path / "out")]
        assert said_[0] == "明哥说：主播永远的神，二零二六年见 笑哭了 ，百分之三点五，重六十公斤！"
        assert said_[1] == "Forty Two says: good game at twelve thirty, five dollars for my wolf!"
        assert said_[2] == "Forty Two says: boom three!"  # c_boom raised: skipped, the line still said
        status = d.request("status")
        mod = status["moderation"]
        assert mod["nicknames"] == 2 and mod["replacements"] == 2 and mod["replacement_patterns"] == 1
        c = mod["counts"]
        assert c["nicknames"] == 3 and c["replacements"] == 2 and c["pattern_replacements"] == 1
        assert c["emoji_named"] == 1 and c["numbers"] >= 5 and c["rewrite_errors"] == 1
        assert status["events"]["pronounce.rewrite_failed"] == 1
        from ishowttsd.ctl import _human  # what `ishowttsctl status` prints

        assert "words    2 nicknames  2 replacements  1 patterns  numbers on  emoji name  REWRITE_ERRORS 1" in _human("status", status)
        assert 'ishowtts_words_total{step="nicknames"} 3' in d.request("metrics")["text"]
        plugins = {p["name"]: p for p in d.request("plugins")["plugins"]}
        assert "rewrite:text" in plugins["a_cat"]["provides"]

        # a reload changes the nickname at once; the counters carry over
        d.config_path.write_text(CONFIG.replace("{nick}", "小明同学"))
        r = d.request("reload")
        assert "moderation" in r["changed"]
        assert inject(d, "晚上好")["accepted"]
        d.wait_for(lambda: len(spoken_log(tmp_path / "out")) == 4, what="the line after the reload")
        assert spoken_log(tmp_path / "out")[-1]["said"] == "小明同学说：晚上好！"
        assert d.request("status")["moderation"]["counts"]["nicknames"] == 4

        # a dangerous pattern is refused by reload with advice; the old config stays
        d.config_path.write_text(CONFIG.replace("{nick}", "x") + "'(a+)+$' = 'b'\n")
        r = d.ctl("reload", check=False)
        assert r.returncode != 0 and "possessive" in (r.stdout + r.stderr)
        assert inject(d, "晚上好呀")["text"] == "小明同学说：晚上好呀！"


def test_the_example_configs_pronunciation_tables_load_and_work():
    from pathlib import Path

    from ishowttsd.config import load_config

    root = Path(__file__).parent.parent / "config"
    cfg = load_config(root / "example-moderation.toml")
    mod = Moderator(cfg.moderation.model_copy(update={"read_numbers": True}), DEFAULT_TTL)
    out = said(mod, msg("yyds 60kg lol www", platform="twitch", name="xX_Sn1per_Xx"))
    assert out == "Sniper says: 永远的神 六十公斤 laugh out loud 哈哈哈"
    assert said(mod, msg("主播666", uid="12345")) == "小明说：主播溜溜溜"
    Moderator(load_config(root / "example.toml").moderation, DEFAULT_TTL)


def test_the_benchmark_runs_and_writes_its_json(tmp_path, capsys):
    import json

    from ishowttsd.bench.moderation import main

    out = tmp_path / "bench.json"
    assert main(["--messages", "60", "--entries", "200", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["messages"] == 60 and r["config_on"]["replacements"] == 200 and r["cpu"]
    assert r["rejected"] == {"off": 0, "on": 0} and r["on"]["p99_ms"] > 0 and r["ratio"]["p99"] > 0
    assert "p99" in capsys.readouterr().out
