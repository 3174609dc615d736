"""What streamers paste: a Twitch channel as a name or an address, a token as `oauth:x`, `Bearer x`
or a whole OAuth redirect; a Bilibili room as its address. Normalised, or refused with advice."""

from __future__ import annotations

import anyio
import pytest
from fakes import twitch as tf
from fakes.bilibili_twitch_daemon import RunningDaemon
from fakes.twitch import FakeTwitch

from ishowttsd.config import ConfigError, load_config
from ishowttsd.daemon import Daemon
from plugins.sources.bilibili.settings import BilibiliSettings, parse_room
from plugins.sources.twitch import TwitchSettings, normalise_channel, normalise_token

ADDRESS = "https://www.twitch.tv/popout/SomeChannel/chat?popout="


@pytest.mark.parametrize("pasted", ["somechannel", "SomeChannel", "#somechannel", "@SomeChannel", " somechannel\n",
                                    "twitch.tv/somechannel", "https://www.twitch.tv/SomeChannel", "http://m.twitch.tv/somechannel/",
                                    "www.twitch.tv/somechannel/videos?filter=archives", "twitch.tv/somechannel#chat",
                                    ADDRESS, "https://www.twitch.tv/moderator/somechannel",
                                    "https://dashboard.twitch.tv/u/somechannel/stream-manager"])  # fmt: skip
def test_a_channel_as_pasted(pasted):
    assert normalise_channel(pasted) == "somechannel"


@pytest.mark.parametrize("pasted, advice", [
    ("some channel", "characters a Twitch login cannot have (' ')"),
    ("主播", "characters a Twitch login cannot have"),
    ("x" * 26, "longer than 25"),
    ("#", "empty"),
    ("https://www.twitch.tv/", "front page"),
    ("twitch.tv/videos/123456", "a Twitch page (videos)"),
    ("https://www.youtube.com/@somechannel", "not a twitch.tv address"),
    ("https://twitch.tv.evil.example/somechannel", "not a twitch.tv address"),
    ("https://clips.twitch.tv/SomeClipSlug-abc", "a Twitch page (a clip, an API)"),
])  # fmt: skip
def test_a_channel_that_cannot_be_one_is_refused_with_advice(pasted, advice):
    with pytest.raises(ValueError) as e:
        normalise_channel(pasted)
    assert advice in str(e.value) and "twitch.tv/<name>" in str(e.value)


@pytest.mark.parametrize("pasted", ["abc123xyz", "oauth:abc123xyz", "OAuth:abc123xyz", "Bearer abc123xyz", "OAuth abc123xyz",
                                    '"oauth:abc123xyz"\n', "http://localhost/#access_token=abc123xyz&scope=chat%3Aread&token_type=bearer",
                                    "https://twitchapps.com/tmi/#access_token=abc123xyz&scope=chat%3Aread+chat%3Aedit&token_type=bearer",
                                    "#access_token=abc123xyz&scope=chat%3Aread", "access_token=abc123xyz&token_type=bearer",
                                    '{"access_token": "abc123xyz", "expires_in": 14124, "token_type": "bearer"}'])  # fmt: skip
def test_a_token_as_pasted(pasted):
    assert normalise_token(pasted) == "abc123xyz"


@pytest.mark.parametrize("pasted, advice", [
    ("oauth:", "the token is empty"),
    ("Bearer   ", "the token is empty"),
    ("client_secret=abc123xyz", "client id or client secret"),
    ("Client Secret: abc123xyz", "client id or client secret"),
    ("http://localhost/?code=abc123xyz&scope=chat%3Aread", "authorization code"),
    ("http://localhost/#error=access_denied&error_description=The+user+denied+you+access", "The user denied you access"),
    ("http://localhost/#scope=chat%3Aread&token_type=bearer", "no access_token"),
    ("abc123 xyz789", "spaces, quotes or other characters"),
    ('{"refresh_token": "r"}', "no access_token"),
    ("a" * 300, "far longer than a Twitch token"),
])  # fmt: skip
def test_a_token_that_is_not_one_is_refused_with_advice(pasted, advice):
    with pytest.raises(ValueError) as e:
        normalise_token(pasted)
    assert advice in str(e.value) and "access_token" in str(e.value)
    assert "abc123xyz" not in str(e.value)  # a secret never appears in an error


@pytest.mark.parametrize("pasted", [12345, "12345", " 12345 ", "https://live.bilibili.com/12345",
                                    "https://live.bilibili.com/12345?spm_id_from=333.1007.0.0&live_from=85001",
                                    "live.bilibili.com/h5/12345", "https://live.bilibili.com/blanc/12345?liteVersion=true",
                                    "http://m.live.bilibili.com/12345/", "live.bilibili.com/12345#chat"])  # fmt: skip
def test_a_room_as_pasted(pasted):
    assert parse_room(pasted) == 12345
    assert BilibiliSettings(type="bilibili", room_id=pasted).room_id == 12345


@pytest.mark.parametrize("pasted, advice", [
    ("https://b23.tv/AbCdEf", "short link"),
    ("b23.tv/AbCdEf", "short link"),
    ("https://space.bilibili.com/12345", "user's space"),
    ("https://www.bilibili.com/video/BV1xx411c7mD", "not a live room"),
    ("https://live.bilibili.com/p/html/live-app-hotrank/index.html", "no room number"),
    ("房间", "not a room number"),
])  # fmt: skip
def test_a_room_that_cannot_be_one_is_refused_with_advice(pasted, advice):
    with pytest.raises(ValueError) as e:
        BilibiliSettings(type="bilibili", room_id=pasted)
    assert advice in str(e.value) and "live.bilibili.com/<number>" in str(e.value)


def test_a_config_with_pasted_addresses_loads(tmp_path):
    (tmp_path / "token").write_text("http://localhost/#access_token=abc123xyz&scope=chat%3Aread&token_type=bearer\n")
    p = tmp_path / "c.toml"
    p.write_text(f"""
[[sources]]
type = "twitch"
channel = "{ADDRESS}"
login = "MyBot"
token_file = "token"

[[sources]]
type = "bilibili"
room_id = "https://live.bilibili.com/h5/7734200?broadcast_type=0"
""")
    d = Daemon(load_config(p), tmp_path / "s.sock")
    d.build()
    twitch, bili = d.sources
    assert twitch.s.channel == "somechannel" and twitch._token == "abc123xyz"
    assert bili.s.room_id == 7734200
    assert TwitchSettings(type="twitch", channel="#SomeChannel").channel == "somechannel"


def test_a_bad_paste_in_the_config_names_the_file_the_key_and_the_fix(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[[sources]]\ntype = "bilibili"\nroom_id = "https://b23.tv/AbCdEf"\n')
    with pytest.raises(ConfigError) as e:
        Daemon(load_config(p), tmp_path / "s.sock").build()
    assert str(p) in str(e.value) and "room_id" in str(e.value) and "short link" in str(e.value)
    (tmp_path / "token").write_text("http://localhost/?code=abc123xyz&scope=chat%3Aread\n")
    p.write_text('[[sources]]\ntype = "twitch"\nchannel = "x"\nlogin = "me"\ntoken_file = "token"\n')
    with pytest.raises(ConfigError) as e:
        Daemon(load_config(p), tmp_path / "s.sock").build()
    assert "token_file token" in str(e.value) and "authorization code" in str(e.value) and "abc123xyz" not in str(e.value)


@pytest.mark.anyio
async def test_a_pasted_channel_address_and_oauth_token_reach_twitch(tmp_path):
    fake = FakeTwitch(valid_token="abc123xyz")
    await fake.start()
    (tmp_path / "token").write_text("oauth:abc123xyz\n")
    source = {"type": "twitch", "name": "tw", "channel": "https://www.twitch.tv/SomeChannel?referrer=raid", "url": fake.url,
              "login": "MyBot", "token_file": "token", "reconnect": {"base": 0.2, "cap": 1.0}}  # fmt: skip
    try:
        async with RunningDaemon(tmp_path, [source]) as d:
            await fake.wait_joined()
            assert "PASS oauth:abc123xyz" in fake.received and "JOIN #somechannel" in fake.received
            await d.wait_state("connected")
            await fake.send(tf.privmsg(fake.channel, "alice", "pasted and connected", id="p-1"))
            said = await d.wait_spoken("pasted and connected")
            assert said["platform"] == "twitch" and said["user"] == "Alice"
            # a channel added for this run from its address: normalised, named for the channel
            added = await d.call("sources.add", {"type": "twitch", "settings": {"channel": "twitch.tv/OtherChannel/",
                                                                                "url": fake.url}})  # fmt: skip
            assert added["name"] == "twitch-otherchannel" and added["channel"] == "otherchannel"
            r = await anyio.to_thread.run_sync(lambda: d.ctl("source", "add", "bilibili", "https://b23.tv/x", check=False))
            assert r.returncode == 1 and "invalid_params" in r.stderr and "short link" in r.stderr
            nowhere = "http://127.0.0.1:9"  # never the real Bilibili from a test
            added = await d.call("sources.add", {"type": "bilibili", "settings": {
                "room_id": "https://live.bilibili.com/h5/42?x=1", "api_base": nowhere, "live_api_base": nowhere}})  # fmt: skip
            assert added["name"] == "bilibili-42"
        assert "abc123xyz" not in d.log()
    finally:
        await fake.stop()
