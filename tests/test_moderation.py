"""Table-driven moderation tests across Bilibili and Twitch message shapes.

Each row: a config (ModerationConfig keys), a message as a source produces it, and what must come
out: a Rejection reason, or the exact text to say (and its class).
"""

from __future__ import annotations

import pytest

from ishowttsd.config import ConfigError, ModerationConfig, parse_config
from ishowttsd.messages import Message, Priority
from ishowttsd.moderation import Merged, Moderator, Rejection
from ishowttsd.queue import DEFAULT_TTL


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def bili(text="", kind="danmaku", name="阿伟", uid="1001", **kw) -> Message:
    user = {"id": uid, "name": name, **kw.pop("user", {})}
    return Message.from_dict({"platform": "bilibili", "kind": kind, "text": text, "user": user, **kw})


def twitch(text="", kind="danmaku", name="viewer42", uid="777", **kw) -> Message:
    user = {"id": uid, "name": name, **kw.pop("user", {})}
    return Message.from_dict({"platform": "twitch", "kind": kind, "text": text, "user": user, **kw})


SC = dict(amount=30.0, currency="CNY")
MOD = {"moderator": True}

# (id, config, message, expected reason | expected text, expected priority or None)
CASES = [
    # -- templates, both platforms
    ("bili-danmaku", {}, bili("晚上好"), "阿伟说：晚上好", Priority.NORMAL),
    ("twitch-privmsg", {}, twitch("hello chat"), "viewer42 says: hello chat", Priority.NORMAL),
    ("bili-superchat", {}, bili("主播加油", kind="superchat", **SC), "阿伟的醒目留言：主播加油", Priority.PAID),
    ("bili-gift-paid", {}, bili(kind="gift", amount=1.5, currency="CNY", extra={"gift": "辣条", "num": 15}),
     "感谢阿伟送的15个辣条", Priority.PAID),
    ("bili-gift-free", {}, bili(kind="gift", amount=0.1, currency="silver", extra={"gift": "小心心", "num": 1}),
     "感谢阿伟送的1个小心心", Priority.LOW),
    ("bili-guard", {}, bili(kind="guard", user={"membership": "舰长"}), "感谢阿伟开通舰长", Priority.MEMBERSHIP),
    ("twitch-bits", {}, twitch("take my bits", kind="bits", amount=100, currency="bits"),
     "viewer42 cheered 100 bits. take my bits", Priority.PAID),
    ("twitch-sub", {}, twitch("", kind="sub", extra={"months": 3}), "viewer42 subscribed.", Priority.MEMBERSHIP),
    ("twitch-raid", {}, twitch(kind="raid", extra={"viewers": 12}), "viewer42 is raiding with 12 viewers!",
     Priority.MODERATOR),
    ("platform-template", {"templates": {"bilibili.superchat": "SC {amount}元 {user}：{text}"}},
     bili("hi", kind="superchat", **SC), "SC 30元 阿伟：hi", Priority.PAID),
    ("bits-template-brief", {"templates": {"bits": "{user} cheered {bits} bits: {text}"}},
     twitch("gg", kind="bits", amount=500, currency="bits"), "viewer42 cheered 500 bits: gg", Priority.PAID),
    ("read-username-off", {"read_username": {"danmaku": False}}, bili("晚上好"), "晚上好", Priority.NORMAL),
    ("read-username-off-twitch", {"read_username": {"danmaku": False}}, twitch("hi all"), "hi all", Priority.NORMAL),
    # -- money that is not money: a broken or hostile packet is not paid speech
    ("amount-infinite", {}, bili("hi", kind="superchat", amount=float("inf"), currency="CNY"), "bad_amount", None),
    ("amount-nan", {}, bili("hi", kind="superchat", amount=float("nan"), currency="CNY"), "bad_amount", None),
    ("amount-negative", {}, bili(kind="gift", amount=-5.0, currency="CNY", extra={"gift": "x"}), "bad_amount", None),
    # -- words and patterns
    ("block-word", {"block_words": ["傻逼"]}, bili("你是傻逼"), "blocked_word", None),
    ("block-word-case", {"block_words": ["FollowZ"]}, twitch("get followz cheap"), "blocked_word", None),
    ("block-word-in-name", {"block_words": ["spam"]}, twitch("hi", name="spambot9"), "blocked_word", None),
    ("block-word-in-link", {"block_words": ["casino"]}, twitch("visit https://casino.example"), "blocked_word", None),
    ("block-word-fullwidth", {"block_words": ["badword"]}, twitch("ｂａｄｗｏｒｄ here"), "blocked_word", None),
    ("block-word-zero-width", {"block_words": ["badword"]}, twitch("bad\u200bword here"), "blocked_word", None),
    ("block-word-soft-hyphen", {"block_words": ["badword"]}, twitch("b\u00adadword"), "blocked_word", None),
    ("block-word-fullwidth-name", {"block_words": ["badword"]}, twitch("hi", name="ＢａｄＷｏｒｄ"), "blocked_word", None),
    ("block-pattern-fullwidth", {"block_patterns": [r"\bevil\b"]}, twitch("so ｅｖｉｌ"), "blocked_pattern", None),
    ("block-pattern", {"block_patterns": [r"\bv\s*x\s*\d{5,}"]}, bili("加 vx 123456 领福利"), "blocked_pattern", None),
    ("block-pattern-miss", {"block_patterns": [r"^buy\b"]}, twitch("i will not buy"), "viewer42 says: i will not buy",
     Priority.NORMAL),
    # -- who
    ("block-user-name", {"block_users": ["阿伟"]}, bili("hi"), "blocked_user", None),
    ("block-user-platform-id", {"block_users": ["twitch:777"]}, twitch("hi"), "blocked_user", None),
    ("block-user-other-platform", {"block_users": ["twitch:1001"]}, bili("hi"), "阿伟说：hi", Priority.NORMAL),
    ("block-user-blocks-paid", {"block_users": ["1001"]}, bili("钱", kind="superchat", **SC), "blocked_user", None),
    ("bot-default", {}, twitch("!uptime is 3h", name="Nightbot"), "bot", None),
    ("bot-custom", {"ignore_bots": ["弹幕姬"]}, bili("欢迎", name="弹幕姬"), "bot", None),
    ("command", {}, twitch("!discord"), "command", None),
    ("command-fullwidth", {}, bili("！签到"), "command", None),
    ("command-allowed", {"ignore_commands": False}, twitch("!hi"), "viewer42 says: !hi", Priority.NORMAL),
    ("user-level", {"min_user_level": 10}, bili("hi", user={"level": 3}), "user_level", None),
    ("user-level-ok", {"min_user_level": 10}, bili("hi", user={"level": 12}), "阿伟说：hi", Priority.NORMAL),
    ("medal-level", {"min_medal_level": 5}, bili("hi", user={"medal_name": "猫猫", "medal_level": 2}), "medal_level", None),
    ("medal-wrong-room", {"min_medal_level": 5, "medal_name": "猫猫"},
     bili("hi", user={"medal_name": "狗狗", "medal_level": 20}), "medal_level", None),
    ("medal-right-room", {"min_medal_level": 5, "medal_name": "猫猫"},
     bili("hi", user={"medal_name": "猫猫", "medal_level": 6}), "阿伟说：hi", Priority.NORMAL),
    ("member-required", {"require_member": True}, twitch("hi"), "not_member", None),
    ("member-sub", {"require_member": True}, twitch("hi", user={"membership": "subscriber"}), "viewer42 says: hi",
     Priority.NORMAL),
    ("member-guard", {"require_member": True}, bili("hi", user={"membership": "舰长"}), "阿伟说：hi", Priority.NORMAL),
    ("member-rule-not-for-paid", {"require_member": True, "min_user_level": 20}, bili("钱", kind="superchat", **SC),
     "阿伟的醒目留言：钱", Priority.PAID),
    ("moderator-always", {"require_member": True, "min_user_level": 20, "allow_only": True},
     twitch("hi", user=MOD), "viewer42 says: hi", Priority.MODERATOR),
    ("broadcaster-always", {"min_medal_level": 30}, bili("hi", user={"broadcaster": True}), "阿伟说：hi",
     Priority.MODERATOR),
    ("allow-user", {"min_user_level": 20, "allow_users": ["bilibili:阿伟"]}, bili("hi"), "阿伟说：hi", Priority.NORMAL),
    ("allow-only", {"allow_only": True}, twitch("hi"), "not_allowed", None),
    ("moderator-still-no-commands", {}, twitch("!ban x", user=MOD), "command", None),
    # -- text cleaning
    ("links-stripped", {}, twitch("look https://example.com/x?y=1 now"), "viewer42 says: look now", Priority.NORMAL),
    ("bare-domain", {}, bili("去 bit.ly/abc 看看"), "阿伟说：去 看看", Priority.NORMAL),
    ("link-replacement", {"link_replacement": "链接"}, bili("看 www.bilibili.com"), "阿伟说：看 链接", Priority.NORMAL),
    ("only-link", {}, twitch("https://spam.example/x"), "empty", None),
    ("emotes", {}, twitch("Kappa hello Kappa", emotes=[[0, 5], [12, 17]]), "viewer42 says: hello", Priority.NORMAL),
    ("emote-codepoints", {}, twitch("😀 Kappa ok", emotes=[[2, 7]]), "viewer42 says: 😀 ok", Priority.NORMAL),
    ("only-emotes", {}, twitch("Kappa Kappa", emotes=[[0, 5], [6, 11]]), "empty", None),
    ("emotes-kept-when-off", {"strip_emotes": False}, twitch("Kappa hi", emotes=[[0, 5]]),
     "viewer42 says: Kappa hi", Priority.NORMAL),
    ("picture-only", {}, bili("[dog]", picture_only=True), "emoticon", None),
    ("picture-only-kept-when-off", {"strip_emotes": False}, bili("[dog]", picture_only=True), "阿伟说：[dog]",
     Priority.NORMAL),
    ("inline-emoticons", {}, bili("好耶[dog][妙啊]", emotes=[[2, 7], [7, 11]]), "阿伟说：好耶", Priority.NORMAL),
    ("repeat-collapse", {}, bili("哈哈哈哈哈哈哈哈哈哈"), "阿伟说：哈哈哈", Priority.NORMAL),
    ("repeat-collapse-latin", {"max_repeat": 2}, twitch("nooooooo"), "viewer42 says: noo", Priority.NORMAL),
    ("repeat-unit", {}, twitch("lolololololololol"), "viewer42 says: lololol", Priority.NORMAL),
    ("digits-kept", {}, bili("100000块"), "阿伟说：100000块", Priority.NORMAL),
    ("emoji-flood", {}, twitch("gg 🎉🎉🎉🎉🎉🎉🎉🎉"), "viewer42 says: gg 🎉🎉🎉", Priority.NORMAL),
    ("emoji-none", {"max_emoji": 0}, twitch("gg 👍🏽❤️"), "viewer42 says: gg", Priority.NORMAL),
    ("emoji-only-none", {"max_emoji": 0}, bili("😀😀"), "empty", None),
    # what one emoji is comes from Unicode's data: a flag is one and is never split into letters
    ("emoji-flags-whole", {"max_emoji": 1}, twitch("gg 🇨🇳🇺🇸🇯🇵"), "viewer42 says: gg 🇨🇳", Priority.NORMAL),
    ("emoji-keycaps", {"max_emoji": 1}, twitch("pick 1️⃣2️⃣3️⃣"), "viewer42 says: pick 1️⃣", Priority.NORMAL),
    ("emoji-tag-flag", {"max_emoji": 0}, twitch("go 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"),
     "viewer42 says: go", Priority.NORMAL),
    ("emoji-family-zwj", {"max_emoji": 1}, twitch("hi 👨\u200d👩\u200d👧👍🏽"), "viewer42 says: hi 👨\u200d👩\u200d👧",
     Priority.NORMAL),
    ("not-emoji-symbols", {"max_emoji": 0}, bili("好评☆☆☆✓"), "阿伟说：好评☆☆☆✓", Priority.NORMAL),
    ("empty-danmaku", {}, bili("   "), "empty", None),
    # -- length
    ("too-long", {"max_chars": 5}, bili("一二三四五六七"), "too_long", None),
    ("paid-truncated", {"max_chars": 5}, bili("一二三四五六七", kind="superchat", **SC), "阿伟的醒目留言：一二三四五…",
     Priority.PAID),
    ("too-long-spoken-cjk", {"max_spoken_s": 3.0}, bili("这是一个需要说很久很久的句子"), "too_long_spoken", None),
    ("spoken-latin-fits", {"max_spoken_s": 3.0}, twitch("short enough"), "viewer42 says: short enough",
     Priority.NORMAL),
    # -- gifts
    ("free-gift-off", {"read_free_gifts": False}, bili(kind="gift", amount=0.1, currency="silver",
                                                        extra={"gift": "小心心"}), "free_gift", None),
    ("gift-too-small", {"min_gift_value": 1.0}, bili(kind="gift", amount=0.1, currency="CNY", extra={"gift": "辣条"}),
     "gift_value", None),
    ("gift-big-enough", {"min_gift_value": 1.0}, bili(kind="gift", amount=5, currency="CNY",
                                                       extra={"gift": "告白气球", "num": 1}),
     "感谢阿伟送的1个告白气球", Priority.PAID),
]


@pytest.mark.parametrize("cfg,msg,expected,prio", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_filter_table(cfg, msg, expected, prio):
    mod = Moderator(ModerationConfig(**cfg), DEFAULT_TTL, clock=Clock())
    out = mod.moderate(msg, source="test")
    if prio is None:
        assert isinstance(out, Rejection), f"expected rejection {expected!r}, got {out}"
        assert out.reason == expected
        assert out.detail
    else:
        assert not isinstance(out, Rejection), f"rejected: {out}"
        assert out.text == expected
        assert out.priority == prio
        assert out.deadline is not None and out.message is msg and out.source == "test"


def test_duplicate_window_and_cooldown():
    clock = Clock()
    mod = Moderator(ModerationConfig(duplicate_window_s=10, user_cooldown_s=5), DEFAULT_TTL, clock=clock)
    assert not isinstance(mod.moderate(bili("第一")), Rejection)
    assert mod.moderate(bili("第一", name="别人", uid="2")).reason == "duplicate"
    assert mod.moderate(twitch("ＦＩＲＳＴ  one")).text  # a different text
    assert mod.moderate(twitch("first one", name="x", uid="9")).reason == "duplicate"  # width and case ignored
    assert mod.moderate(bili("第二")).reason == "cooldown"  # same user, 0 s later
    assert not isinstance(mod.moderate(bili("第二", user={"moderator": True})), Rejection)  # mods skip cooldown
    clock.t += 6
    assert not isinstance(mod.moderate(bili("第三")), Rejection)
    clock.t += 11
    assert not isinstance(mod.moderate(bili("第一", name="别人", uid="2")), Rejection)


def test_rejected_line_does_not_start_a_cooldown():
    mod = Moderator(ModerationConfig(user_cooldown_s=30, block_words=["坏"]), DEFAULT_TTL, clock=Clock())
    assert mod.moderate(bili("坏话")).reason == "blocked_word"
    assert not isinstance(mod.moderate(bili("好话")), Rejection)


def test_duplicate_platform_id_any_kind():
    mod = Moderator(ModerationConfig(), DEFAULT_TTL, clock=Clock())
    sc = bili("谢谢", kind="superchat", id="sc-1", **SC)
    assert not isinstance(mod.moderate(sc), Rejection)
    assert mod.moderate(bili("谢谢", kind="superchat", id="sc-1", **SC)).reason == "duplicate_id"
    assert not isinstance(mod.moderate(twitch("谢谢", kind="bits", id="sc-1", amount=1)), Rejection)  # other platform


def test_gift_combo_merges_while_pending():
    clock = Clock()
    mod = Moderator(ModerationConfig(combo_window_s=5), DEFAULT_TTL, clock=clock)
    pending: set[int] = set()

    def gift(num, combo="c1", **kw):
        return bili(kind="gift", amount=0.1 * num, currency="CNY", extra={"gift": "辣条", "num": num, "combo_id": combo}, **kw)

    first = mod.moderate(gift(5), is_pending=pending.__contains__)
    assert first.text == "感谢阿伟送的5个辣条"
    pending.add(first.id)
    clock.t += 2
    m = mod.moderate(gift(10), is_pending=pending.__contains__)
    assert isinstance(m, Merged) and m.utterance is first and m.total == 15
    assert first.text == "感谢阿伟送的15个辣条"
    # the source knows the running total: it wins over the sum
    m = mod.moderate(bili(kind="gift", amount=2, currency="CNY", extra={"gift": "辣条", "num": 1, "combo_id": "c1",
                                                                       "combo_total": 20}),
                     is_pending=pending.__contains__)  # fmt: skip
    assert isinstance(m, Merged) and first.text == "感谢阿伟送的20个辣条"
    # once spoken, the rest of the combo is new speech
    pending.clear()
    nxt = mod.moderate(gift(3), is_pending=pending.__contains__)
    assert not isinstance(nxt, (Merged, Rejection)) and nxt.text == "感谢阿伟送的3个辣条"
    pending.add(nxt.id)
    clock.t += 6  # past the window
    late = mod.moderate(gift(1), is_pending=pending.__contains__)
    assert not isinstance(late, (Merged, Rejection))
    # without a combo_id the same user and gift make the combo
    a = mod.moderate(twitch(kind="gift", extra={"gift": "sub", "num": 1}), is_pending=lambda i: True)
    b = mod.moderate(twitch(kind="gift", extra={"gift": "sub", "num": 4}), is_pending=lambda i: True)
    assert isinstance(b, Merged) and a.text == "viewer42 gifted 5 sub"


def test_flood_mode_drops_usernames_for_chat_only():
    mod = Moderator(ModerationConfig(), DEFAULT_TTL, clock=Clock())
    assert mod.moderate(bili("晚上好"), flood=True).text == "晚上好"
    assert mod.moderate(twitch("hey"), flood=True).text == "hey"
    assert mod.moderate(bili("谢谢", kind="superchat", **SC), flood=True).text == "阿伟的醒目留言：谢谢"
    assert mod.moderate(bili(kind="gift", currency="silver", amount=0.1, extra={"gift": "小心心", "num": 2}),
                        flood=True).text == "收到2个小心心"  # fmt: skip


def test_voices_user_over_kind_over_default():
    cfg = ModerationConfig(default_voice="base", kind_voices={"superchat": "sc"},
                           user_voices={"阿伟": "wei", "twitch:777": "t777"})  # fmt: skip
    mod = Moderator(cfg, DEFAULT_TTL, clock=Clock())
    assert mod.moderate(bili("hi")).voice == "wei"
    assert mod.moderate(bili("hi", kind="superchat", name="b", uid="2", **SC)).voice == "sc"
    assert mod.moderate(bili("hey", name="c", uid="3")).voice == "base"
    assert mod.moderate(twitch("yo")).voice == "t777"


def test_paid_speech_is_shortened_to_fit_spoken_limit():
    mod = Moderator(ModerationConfig(max_spoken_s=4.0, max_chars=500), DEFAULT_TTL, clock=Clock())
    out = mod.moderate(bili("这是一条非常非常长的醒目留言，要念很久很久才能念完，所以要截短一点", kind="superchat", **SC))
    assert out.text.endswith("…") and mod.estimate_s(out.text) <= 4.0


def test_estimate_paces_cjk_and_latin():
    mod = Moderator(ModerationConfig(cjk_chars_per_s=5, latin_chars_per_s=10), DEFAULT_TTL)
    assert mod.estimate_s("你好你好你") == pytest.approx(1.0)
    assert mod.estimate_s("hello worl") == pytest.approx(1.0)


@pytest.mark.parametrize(
    "raw,where",
    [
        ({"moderation": {"block_patterns": ["ok", "(unclosed"]}}, ["block_patterns[1]", "(unclosed"]),
        ({"moderation": {"templates": {"danmaku": "{nick}: {text}"}}}, ["moderation.templates.danmaku", "nick"]),
        ({"moderation": {"anonymous_templates": {"gift": "{gift"}}}, ["moderation.anonymous_templates.gift"]),
        ({"moderation": {"read_username": {"chat": False}}}, ["moderation.read_username", "chat", "danmaku"]),
        ({"moderation": {"kind_voices": {"sc": "v"}}}, ["moderation.kind_voices", "sc"]),
        ({"moderation": {"max_repeat": 0}}, ["moderation.max_repeat"]),
        ({"queue": {"ttl": {"vip": 3}}}, ["queue.ttl", "vip"]),
        ({"journal": {"synchronous": "off"}}, ["journal.synchronous"]),
    ],
)
def test_bad_config_is_refused_with_where_and_why(raw, where):
    with pytest.raises(ConfigError) as e:
        Moderator(parse_config(raw).moderation, DEFAULT_TTL)  # templates are checked by the Moderator
    for part in where:
        assert part in str(e.value)


def test_bad_pattern_error_reads_like_advice():
    with pytest.raises(ConfigError) as e:
        parse_config({"moderation": {"block_patterns": ["[a-"]}})
    msg = str(e.value)
    assert "not a valid regular expression" in msg and "block_words" in msg


def test_emote_spans_that_do_not_fit_the_text_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        twitch("hi", emotes=[[5, 9]])
    with pytest.raises(ValueError, match="pairs of integers"):
        twitch("hi", emotes=["garbage"])


def test_state_survives_a_new_moderator():
    clock = Clock()
    old = Moderator(ModerationConfig(user_cooldown_s=60), DEFAULT_TTL, clock=clock)
    assert not isinstance(old.moderate(twitch("one")), Rejection)
    new = Moderator(ModerationConfig(user_cooldown_s=60, block_words=["x"]), DEFAULT_TTL, state=old.state, clock=clock)
    assert new.moderate(twitch("two")).reason == "cooldown"


def test_state_tables_stay_bounded():
    clock = Clock()
    mod = Moderator(ModerationConfig(duplicate_window_s=3600, user_cooldown_s=3600), DEFAULT_TTL, clock=clock)
    mod.state.max_entries = 100
    for i in range(1000):
        mod.moderate(twitch(f"line {i}", name=f"u{i}", uid=str(i), id=f"m{i}"))
    st = mod.state
    assert len(st.recent_texts) <= 100 and len(st.last_spoke) <= 100 and len(st.recent_ids) <= 100


def test_example_config_loads_and_works():
    from pathlib import Path

    from ishowttsd.config import load_config

    cfg = load_config(Path(__file__).parent.parent / "config" / "example-moderation.toml")
    mod = Moderator(cfg.moderation, DEFAULT_TTL, clock=Clock())
    assert mod.moderate(bili("加 v x 1234567")).reason == "blocked_pattern"
    assert mod.moderate(twitch("hi", name="spammer123")).reason == "blocked_user"
    assert mod.moderate(twitch("gg", kind="bits", amount=100, currency="bits")).text == "viewer42 cheered 100 bits: gg"
    assert mod.moderate(bili("老朋友来了", name="老朋友", uid="5")).voice == "streamer"
    assert cfg.queue.flood_threshold == 20 and cfg.journal.synchronous == "full"


def test_a_wall_of_one_character_is_too_long_not_collapsed():
    mod = Moderator(ModerationConfig(max_chars=40), DEFAULT_TTL, clock=Clock())
    assert mod.moderate(twitch("x" * 100)).reason == "too_long"
    assert mod.moderate(bili("哈" * 30)).text == "阿伟说：哈哈哈"
    # paid speech is collapsed, then shortened only if still too long
    assert mod.moderate(bili("哈" * 100, kind="superchat", **SC)).text == "阿伟的醒目留言：哈哈哈"
