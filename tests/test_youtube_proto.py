"""YouTube wire code without the network: what `channel` names, purchase amounts, the pages'
embedded JSON, InnerTube actions and Data API items as Messages and Deletions, and fuzzing
that none of them crashes, hangs or lets something garbled through."""

from __future__ import annotations

import json
import math
import time

import pytest
from fakes import youtube as yf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ishowttsd.builtin_plugins.sources.youtube import actions as A
from ishowttsd.builtin_plugins.sources.youtube import dataapi, money, page, target
from ishowttsd.messages import Deletion, Kind, Message

OPTS = A.Options(max_amount=1e9)


# -- what `channel` names ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind, value, path", [
    ("@Some.Streamer", "handle", "@Some.Streamer", "/@Some.Streamer/live"),
    ("@日本語の名前", "handle", "@日本語の名前", "/@%E6%97%A5%E6%9C%AC%E8%AA%9E%E3%81%AE%E5%90%8D%E5%89%8D/live"),
    ("UCabcdefghijklmnopqrstuv", "channel", "UCabcdefghijklmnopqrstuv", "/channel/UCabcdefghijklmnopqrstuv/live"),
    ("dQw4w9WgXcQ", "video", "dQw4w9WgXcQ", "/watch?v=dQw4w9WgXcQ"),
    ("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42", "video", "dQw4w9WgXcQ", "/watch?v=dQw4w9WgXcQ"),
    ("https://youtu.be/dQw4w9WgXcQ?si=abc", "video", "dQw4w9WgXcQ", "/watch?v=dQw4w9WgXcQ"),
    ("youtube.com/live/dQw4w9WgXcQ", "video", "dQw4w9WgXcQ", "/watch?v=dQw4w9WgXcQ"),
    ("https://m.youtube.com/@name/streams", "handle", "@name", "/@name/live"),
    ("https://www.youtube.com/channel/UCabcdefghijklmnopqrstuv/live", "channel", "UCabcdefghijklmnopqrstuv",
     "/channel/UCabcdefghijklmnopqrstuv/live"),
    ("https://www.youtube.com/c/OldName", "custom", "c/OldName", "/c/OldName/live"),
])  # fmt: skip
def test_targets(text, kind, value, path):
    t = target.parse_target(text)
    assert (t.kind, t.value, t.page) == (kind, value, path)
    assert t.follows_channel == (kind != "video")


@pytest.mark.parametrize("bad", ["", "   ", "somename", "@a", "https://example.com/watch?v=dQw4w9WgXcQ",
                                 "https://www.youtube.com/watch?v=short", "UCshort", "@has space", "@a/b"])
def test_bad_targets_say_what_to_write(bad):
    with pytest.raises(ValueError, match="channel handle"):
        target.parse_target(bad)


@given(st.text(max_size=200))
@settings(max_examples=500, deadline=None)
def test_fuzz_targets(text):
    try:
        t = target.parse_target(text)
    except ValueError:
        return
    assert t.page.startswith("/") and " " not in t.page and "\n" not in t.page


# -- amounts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value, currency, known, problem", [
    ("$5.00", 5.0, "USD", True, ""), ("CA$10.00", 10.0, "CAD", True, ""), ("¥1,000", 1000.0, "JPY", True, ""),
    ("₩50,000", 50000.0, "KRW", True, ""), ("PLN 20.00", 20.0, "PLN", True, ""), ("1.234,56 €", 1234.56, "EUR", True, ""),
    ("12,50 €", 12.5, "EUR", True, ""), ("₹ 1,000,000.00", 1e6, "INR", True, ""), ("NT$75.00", 75.0, "TWD", True, ""),
    ("₿ 3", 3.0, "₿", False, "unknown_currency"), ("kr 50,00", 50.0, "kr", False, "unknown_currency"),
    ("$99999999999", None, "USD", True, "implausible"), ("$" + "9" * 60, None, "USD", True, "implausible"),
    ("FREE", None, "FREE", False, "no_number"), ("", None, "", False, "no_number"),
])  # fmt: skip
def test_amounts(text, value, currency, known, problem):
    a = money.parse_amount(text, max_value=1e9)
    assert (a.value, a.currency, a.known, a.problem) == (value, currency, known, problem)


@given(st.text(max_size=80))
@settings(max_examples=800, deadline=None)
def test_fuzz_amounts(text):
    a = money.parse_amount(text, max_value=1e6)
    assert a.value is None or (math.isfinite(a.value) and 0 <= a.value <= 1e6)
    assert len(a.currency) <= 8 and not any(c.isspace() for c in a.currency)


def test_data_api_amounts_are_checked_too():
    assert money.checked(5.0, "USD", "$5.00").known
    assert money.checked(1e12, "USD", "x").problem == "implausible"
    assert money.checked(float("inf"), "USD", "x").value is None
    odd = money.checked(3.0, "₿ coin\n", "x")
    assert odd.problem == "unknown_currency" and odd.currency == "₿coin"


# -- the pages ----------------------------------------------------------------------------------------


def test_watch_page_of_a_live_stream():
    fake = yf.FakeYouTube()
    v = fake.start_stream("vid00000001", "Title with \"quotes\"; and }; braces")
    p = page.watch_page(fake._watch_page(v))
    assert (p.video_id, p.live, p.upcoming, p.status) == ("vid00000001", True, False, "OK")
    assert p.title.startswith("Title with") and p.channel_id == fake.channel_id
    assert p.chats == {"top": "reload-vid00000001-top", "live": "reload-vid00000001-live"}
    assert p.client.api_key == fake.innertube_key
    assert p.client.context["client"]["clientVersion"] == fake.client_version


def test_watch_page_shapes_not_live():
    fake = yf.FakeYouTube()
    channel = page.watch_page(fake._channel_page())
    assert not channel.is_video and not channel.live
    v = fake.start_stream("vid00000002")
    fake.end_stream()
    ended = page.watch_page(fake._watch_page(v))
    assert ended.is_video and not ended.live and ended.chats == {}
    gone = page.watch_page(yf._page(fake._cfg(), player={"playabilityStatus": {"status": "ERROR",
                                                                               "reason": "Video unavailable"}}))
    assert gone.status == "ERROR" and gone.reason == "Video unavailable"
    with pytest.raises(page.PageChanged):
        page.watch_page("<html><body>a consent page</body></html>")


def test_chat_page():
    fake = yf.FakeYouTube()
    v = fake.start_stream("vid00000003", history=[yf.text_message("h1", "@a", "UCa", "before")])
    cp = page.chat_page(fake._chat_frame(yf.Request(0, "GET", "/live_chat", {"continuation": "reload-vid00000003-live"},
                                                    {}, b""), None))  # fmt: skip
    batch = A.parse_continuation(cp.continuation, "vid00000003", OPTS)
    assert batch.token == v.issued and batch.timeout_ms == fake.timeout_ms and not batch.ended
    assert [e.text for e in batch.events] == ["before"]
    with pytest.raises(page.PageChanged):
        page.chat_page("<html>window[\"ytInitialData\"] = {\"responseContext\": {}};</html>")


def test_embedded_json_is_read_by_a_decoder():
    html = 'var ytInitialData = {"a": "};var x = {", "b": [1, {"c": "}"}]};</script>'
    assert page.embedded_json(html, "ytInitialData") == {"a": "};var x = {", "b": [1, {"c": "}"}]}
    assert page.embedded_json('window["ytInitialData"] = {"k": 1};', "ytInitialData") == {"k": 1}
    assert page.embedded_json('"ytInitialData": {"k": 1}', "ytInitialData") is None
    assert page.ytcfg('ytcfg.set({"A": 1}); ytcfg.set({"B": 2, "A": 3});') == {"A": 3, "B": 2}


@given(st.text(max_size=400), st.sampled_from(["var ytInitialData = ", "ytcfg.set(", "var ytInitialPlayerResponse = ",
                                                'window["ytInitialData"] = ', ""]), st.text(max_size=200))
@settings(max_examples=600, deadline=None)
def test_fuzz_pages(before, marker, after):
    html = before + marker + after
    try:
        p = page.watch_page(html)
    except page.PageChanged:
        pass
    else:
        assert isinstance(p.chats, dict)
    try:
        page.chat_page(html)
    except page.PageChanged:
        pass


def test_a_hostile_page_is_read_in_bounded_time():
    hostile = 'ytcfg.set({"a": "' + "ytcfg.set({" * 200_000 + 'var ytInitialData = {"x": ' * 50_000
    t = time.perf_counter()
    with pytest.raises(page.PageChanged):
        page.watch_page(hostile)
    assert time.perf_counter() - t < 10


# -- actions ------------------------------------------------------------------------------------------


def parse(*actions, opts=OPTS):
    batch = A.Batch()
    out = []
    for a in actions:
        out.extend(A.parse_action(json.loads(json.dumps(a)), "vid", opts, batch))
    return out, batch


def test_chat_with_roles_and_emoji():
    [m], _ = parse(yf.text_message("m1", "@alice", "UCalice", "hi ", yf.emoji(":_wave:"), " there ",
                                   yf.emoji(":grinning:", custom=False, eid="😀"),
                                   badges=(yf.badge("moderator"), yf.badge("member", "Gold Member (1 year)"))))  # fmt: skip
    assert isinstance(m, Message) and m.kind == Kind.DANMAKU and m.platform == "youtube" and m.room == "vid"
    assert m.text == "hi :_wave: there 😀" and m.emotes == [(3, 10)] and not m.picture_only
    assert m.text[3:10] == ":_wave:"
    u = m.user
    assert (u.id, u.name, u.moderator, u.broadcaster, u.membership) == ("UCalice", "alice", True, False, "Gold Member")
    assert m.extra["handle"] == "@alice" and m.extra["member_since"] == "1 year" and m.extra["sent_usec"] > 0
    [owner], _ = parse(yf.text_message("m2", "Streamer", "UCs", "hello", badges=(yf.badge("owner"), yf.badge("verified"))))
    assert owner.user.broadcaster and owner.extra["verified"] and owner.user.name == "Streamer"
    [pic], _ = parse(yf.text_message("m3", "@p", "UCp", yf.emoji(":_a:"), " ", yf.emoji(":_b:")))
    assert pic.picture_only and pic.emotes == [(0, 4), (5, 9)]
    [std], _ = parse(yf.text_message("m4", "@p", "UCp", yf.emoji(":grinning:", custom=False, eid="😀")))
    assert not std.picture_only and std.text == "😀"


def test_super_chats_and_stickers():
    [sc], b = parse(yf.paid_message("p1", "@bob", "UCbob", "CA$20.00", "take ", yf.emoji(":_coin:"), " this"))
    assert sc.kind == Kind.SUPERCHAT and sc.paid and (sc.amount, sc.currency) == (20.0, "CAD")
    assert sc.text == "take :_coin: this" and sc.emotes == [(5, 12)] and sc.extra["amount_text"] == "CA$20.00"
    [silent], _ = parse(yf.paid_message("p2", "@bob", "UCbob", "$2.00"))
    assert silent.text == "" and silent.amount == 2.0
    [st_], _ = parse(yf.paid_sticker("s1", "@carol", "UCcarol", "¥500", "A cat dancing"))
    assert st_.kind == Kind.SUPERCHAT and st_.picture_only and st_.extra["sticker"] == "A cat dancing"
    assert (st_.amount, st_.currency) == (500.0, "JPY")
    [odd], b = parse(yf.paid_message("p3", "@x", "UCx", "₿ 1", "odd"))
    assert odd.currency == "₿" and odd.extra["currency_known"] is False and odd.paid
    assert b.counts["unknown_currency"] == 1
    huge2, b2 = parse(yf.paid_message("p5", "@y", "UCy", "$" + "9" * 40, "rich"))
    assert huge2[0].amount is None and huge2[0].currency is None and huge2[0].paid and b2.counts["implausible"] == 1


def test_memberships():
    [new, levelled, ms, gift], _ = parse(
        yf.new_member("n1", "@dan", "UCdan"), yf.new_member("n2", "@eli", "UCeli", "Gold Tier"),
        yf.milestone("ms", "@eve", "UCeve", 8, "Gold Tier", "still ", yf.emoji(":_heart:")),
        yf.gift_purchase("g1", "@frank", "UCfrank", 5))  # fmt: skip
    assert all(m.kind == Kind.SUB for m in (new, levelled, ms, gift))
    assert new.text == "New member" and new.user.membership == "New member"
    assert levelled.text == "Welcome to Gold Tier!" and levelled.user.membership == "Gold Tier"
    assert ms.text == "Member for 8 months: still :_heart:" and ms.extra["months"] == 8
    assert ms.emotes == [(27, 35)] and ms.text[27:35] == ":_heart:" and ms.user.membership == "Gold Tier"
    assert gift.text == "Gifted 5 Fake Streamer memberships" and gift.extra["num"] == 5 and gift.user.id == "UCfrank"
    assert gift.user.name == "frank"
    none, b = parse(yf.gift_redemption("r1", "@gina", "UCgina", "frank"))
    assert none == [] and b.counts["gift_redemptions"] == 1
    [red], _ = parse(yf.gift_redemption("r1", "@gina", "UCgina", "frank"), opts=A.Options(read_gift_redemptions=True))
    assert red.kind == Kind.SUB and red.text == "received a gift membership by frank"


def test_deletions_tickers_and_the_rest():
    out, b = parse(yf.mark_deleted("m1"), yf.remove_item("m2"), yf.mark_author_deleted("UCbad"), yf.remove_by_author("UCbad2"),
                   yf.ticker_for(yf.paid_message("p1", "@b", "UCb", "$5.00", "x")), yf.engagement("Welcome to live chat"),
                   {"addBannerToLiveChatCommand": {}}, {"someNewAction": {}})  # fmt: skip
    assert [d.message_ids for d in out[:2]] == [["m1"], ["m2"]]
    assert [(d.user_id, d.reason) for d in out[2:]] == [("UCbad", "ban"), ("UCbad2", "ban")]
    assert all(isinstance(d, Deletion) and d.platform == "youtube" for d in out)
    assert b.counts["ticker"] == 1 and b.counts["ignored"] == 3 and b.unknown == {"someNewAction"}
    placeholder = {"replaceChatItemAction": {"targetItemId": "m9", "replacementItem": yf.text_message(
        "m9", "@late", "UCl", "held for review")["addChatItemAction"]["item"]}}  # fmt: skip
    replay = {"replayChatItemAction": {"actions": [yf.text_message("r1", "@r", "UCr", "from a replay")],
                                       "videoOffsetTimeMsec": "1000"}}  # fmt: skip
    [late, old], _ = parse(placeholder, replay)
    assert (late.id, late.text, old.text) == ("m9", "held for review", "from a replay")


def test_continuation_shapes():
    timed = A.parse_continuation({"continuations": [{"timedContinuationData": {"continuation": "abc", "timeoutMs": 5000}}]})
    assert (timed.token, timed.timeout_ms, timed.ended) == ("abc", 5000, "")
    ended = A.parse_continuation({"actions": [yf.text_message("z", "@z", "UCz", "bye")]})
    assert ended.token is None and "ended" in ended.ended and len(ended.events) == 1
    replay = A.parse_continuation({"continuations": [{"liveChatReplayContinuationData": {"continuation": "r"}}]})
    assert replay.token is None and "replay" in replay.ended
    bad = A.parse_continuation({"continuations": [{"invalidationContinuationData": {"continuation": "a b\"c"}}]})
    assert bad.token is None and bad.counts["bad_token"] == 1 and bad.ended
    huge_timeout = A.parse_continuation({"continuations": [{"timedContinuationData": {"continuation": "t", "timeoutMs": 1e309}}]})
    assert huge_timeout.timeout_ms is None
    assert A.parse_continuation(None).ended and A.parse_continuation([1, 2]).ended
    mixed = A.parse_continuation({"actions": [1, {"addChatItemAction": {"item": {}}}, yf.text_message("ok", "@o", "UCo", "ok")],
                                  "continuations": [{"timedContinuationData": {"continuation": "t"}}]})  # fmt: skip
    assert mixed.counts["malformed"] == 2 and [e.text for e in mixed.events] == ["ok"]


# -- the Data API -------------------------------------------------------------------------------------


def test_data_api_items():
    body = {"nextPageToken": "GPQ1", "pollingIntervalMillis": 2500, "items": [
        yf.api_text("a1", "@alice", "UCalice", "hello :_wave: there", moderator=True, member=True),
        yf.api_superchat("a2", "@bob", "UCbob", 5_000_000, "USD", "$5.00", "for you"),
        yf.api_new_sponsor("a3", "@dan", "UCdan", "Gold"),
        yf.api_deleted("a4", "a1", "UCmod"), yf.api_banned("a5", "UCbob", "UCmod", temporary=True),
        yf.api_superchat("a6", "@rich", "UCrich", 10**25, "USD", "$lots", "hi"),
        {"id": "a7", "snippet": {"type": "pollEvent"}}, {"id": "a8"},
    ]}  # fmt: skip
    b = dataapi.api_batch(body, "vid", OPTS)
    assert (b.token, b.timeout_ms, b.ended) == ("GPQ1", 2500, "")
    text, sc, sub, dele, ban, rich = b.events
    assert text.kind == Kind.DANMAKU and text.emotes == [(6, 13)] and text.user.moderator and text.user.membership == "Member"
    assert text.user.name == "alice" and text.id == "a1" and text.extra["sent_usec"] == 1735725600000000
    assert sc.kind == Kind.SUPERCHAT and (sc.amount, sc.currency, sc.text) == (5.0, "USD", "for you")
    assert sub.kind == Kind.SUB and sub.text == "Welcome to Gold!" and sub.user.membership == "Gold"
    assert dele.message_ids == ["a1"] and (ban.user_id, ban.reason) == ("UCbob", "timeout")
    assert rich.amount is None and rich.paid and b.counts["implausible"] == 1
    assert b.counts["ignored"] == 1 and b.counts["malformed"] == 1
    assert dataapi.api_batch({"items": [], "offlineAt": "2025-01-01T12:00:00Z", "nextPageToken": "x"}).ended
    assert dataapi.api_batch({"items": []}).ended  # no nextPageToken
    assert dataapi.api_batch({"ended": "liveChatEnded"}).ended == "liveChatEnded"


# -- fuzzing ------------------------------------------------------------------------------------------

KEYS = ["addChatItemAction", "item", "liveChatTextMessageRenderer", "liveChatPaidMessageRenderer",
        "liveChatPaidStickerRenderer", "liveChatMembershipItemRenderer", "liveChatSponsorshipsGiftPurchaseAnnouncementRenderer",
        "liveChatSponsorshipsGiftRedemptionAnnouncementRenderer", "header", "liveChatSponsorshipsHeaderRenderer",
        "primaryText", "message", "runs", "text", "emoji", "emojiId", "isCustomEmoji", "shortcuts", "id", "authorName",
        "simpleText", "authorBadges", "liveChatAuthorBadgeRenderer", "icon", "iconType", "tooltip", "customThumbnail",
        "purchaseAmountText", "headerPrimaryText", "headerSubtext", "timestampUsec", "authorExternalChannelId",
        "markChatItemAsDeletedAction", "targetItemId", "removeChatItemByAuthorAction", "externalChannelId",
        "replaceChatItemAction", "replacementItem", "replayChatItemAction", "actions", "continuations",
        "invalidationContinuationData", "timedContinuationData", "continuation", "timeoutMs", "sticker",
        "snippet", "type", "authorDetails", "superChatDetails", "amountMicros", "currency", "nextPageToken",
        "items", "userBannedDetails", "bannedUserDetails", "channelId", "messageDeletedDetails", "deletedMessageId",
        "textMessageDetails", "messageText", "displayName", "isChatModerator", "offlineAt", "pollingIntervalMillis",
        "publishedAt"]  # fmt: skip
TYPES = ["textMessageEvent", "superChatEvent", "superStickerEvent", "newSponsorEvent", "memberMilestoneChatEvent",
         "membershipGiftingEvent", "giftMembershipReceivedEvent", "messageDeletedEvent", "userBannedEvent", "chatEndedEvent",
         "OWNER", "MODERATOR", "$5.00", "¥1,000"]  # fmt: skip
leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
          | st.text(max_size=30) | st.sampled_from(TYPES))  # fmt: skip
trees = st.recursive(leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6),
                                                                                  c, max_size=5), max_leaves=40)  # fmt: skip


def check(batch: A.Batch) -> None:
    for ev in batch.events:
        assert isinstance(ev, (Message, Deletion))
        if isinstance(ev, Message):
            assert ev.platform == "youtube" and ev.id and len(ev.text) <= A.MAX_TEXT
            assert not any(ord(c) < 32 for c in ev.text)
            assert all(0 <= a < b <= len(ev.text) for a, b in ev.emotes)
            assert ev.amount is None or (math.isfinite(ev.amount) and 0 <= ev.amount <= OPTS.max_amount)
            json.dumps(ev.to_dict())  # what the journal stores


@given(trees)
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_random_json(tree):
    check(A.parse_continuation(tree, "vid", OPTS))
    check(A.parse_continuation({"actions": tree if isinstance(tree, list) else [tree]}, "vid", OPTS))
    check(dataapi.api_batch(tree, "vid", OPTS))
    check(dataapi.api_batch({"items": tree if isinstance(tree, list) else [tree], "nextPageToken": "t"}, "vid", OPTS))


SAMPLES = [
    yf.text_message("m1", "@a", "UCa", "hi ", yf.emoji(":_x:"), badges=(yf.badge("moderator"), yf.badge("member"))),
    yf.paid_message("p1", "@b", "UCb", "$5.00", "money"), yf.paid_sticker("s1", "@c", "UCc", "¥500", "cat"),
    yf.new_member("n1", "@d", "UCd", "Gold"), yf.milestone("ms1", "@e", "UCe", 3, "Gold", "x"),
    yf.gift_purchase("g1", "@f", "UCf", 5), yf.gift_redemption("r1", "@g", "UCg", "f"), yf.mark_deleted("m1"),
    yf.remove_by_author("UCb"), yf.ticker_for(yf.paid_message("p2", "@b", "UCb", "$1.00")),
    yf.api_text("a1", "@a", "UCa", "hello"), yf.api_superchat("a2", "@b", "UCb", 1_000_000, "EUR", "€1", "c"),
    yf.api_banned("a3", "UCb", "UCm"), yf.api_deleted("a4", "a1", "UCm"), yf.api_new_sponsor("a5", "@d", "UCd", "Gold"),
]  # fmt: skip


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _replace(obj, path, value):
    if not path:
        return value
    obj[path[0]] = _replace(obj[path[0]], path[1:], value)
    return obj


@given(st.sampled_from(range(len(SAMPLES))), st.data())
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_real_shapes_with_mutations(i, data):
    sample = json.loads(json.dumps(SAMPLES[i]))
    paths = list(_paths(sample))
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(paths))
        try:
            sample = _replace(sample, path, data.draw(trees))
        except (KeyError, IndexError, TypeError):
            pass
        paths = list(_paths(sample))
    check(A.parse_continuation({"actions": [sample], "continuations": [{"timedContinuationData": {"continuation": "t"}}]},
                               "vid", OPTS))  # fmt: skip
    check(dataapi.api_batch({"items": [sample], "nextPageToken": "t"}, "vid", OPTS))


def test_a_big_batch_is_linear():
    actions = [yf.text_message(f"m{i}", f"@u{i}", f"UC{i}", "hello " * 30, yf.emoji(":_x:")) for i in range(5000)]
    t = time.perf_counter()
    batch = A.parse_continuation({"actions": actions, "continuations": [{"timedContinuationData": {"continuation": "t"}}]})
    assert len(batch.events) == 5000 and time.perf_counter() - t < 10
    long = A.parse_continuation({"actions": [yf.text_message("l", "@l", "UCl", "x" * 100_000, yf.emoji(":_y:"))]})
    assert len(long.events[0].text) == A.MAX_TEXT and long.events[0].emotes == []
