"""The control room and the overlay in a real browser: Debian's chromium driven by Playwright.

A streamer signs in with the login code, sees the state, says a line and sees it in the queue,
the feed and the history, skips, uploads a voice (cloned by a tiny F5 model) and speaks with it;
an overlay page shows the text and receives the audio. With ISHOWTTS_UPDATE_SCREENSHOTS=1 the
screenshots go to docs/ (the README shows them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")
pytest.importorskip("torch")
pytest.importorskip("f5_tts")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (make sysdeps installs it)", allow_module_level=True)

import f5_tiny  # noqa: E402
from web_daemon import WebDaemon  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required", "--mute-audio"]  # fmt: skip


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    tiny = f5_tiny.build(tmp / "f5")
    (tmp / "voice.wav").write_bytes(tiny["ref"].read_bytes())
    config = ('[engine]\ndefault = "espeak"\ndefault_voice = "en"\n\n' + f5_tiny.engine_table(tiny)
              + f'\n[[voices]]\nid = "me"\nengine = "f5"\nreference_audio = "voice.wav"\nreference_text = "{f5_tiny.REF_TEXT}"\n'
              + '\n[[sinks]]\ntype = "file"\ndirectory = "out"\n')  # fmt: skip
    with WebDaemon(tmp, config) as d:
        d.reference = tmp / "voice.wav"
        yield d


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def shot(page, name: str, tmp: Path) -> None:
    path = (REPO / "docs" if os.environ.get("ISHOWTTS_UPDATE_SCREENSHOTS") else tmp) / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


def test_the_control_room_in_a_browser(daemon, browser, tmp_path):
    d = daemon
    expect = playwright.expect
    # the overlay, as OBS would load it: text and audio
    obs = browser.new_context(viewport={"width": 800, "height": 240}).new_page()
    obs.goto(d.request("web")["overlay_url"])
    obs.wait_for_function("() => document.body.dataset.state === 'idle'")
    d.wait_for(lambda: next(s for s in d.request("status")["sinks"] if s["type"] == "browser")["listeners"] == 1,
               what="the overlay to listen")  # fmt: skip

    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(d.url + "/")
    assert page.url.endswith("/login")
    page.fill("#code", "WRONGCODE1")
    page.click("#login")
    expect(page.locator("#error")).to_contain_text("ishowttsctl web")
    page.fill("#code", d.login_code())
    page.click("#login")
    page.wait_for_url(d.url + "/")

    # the state at a glance, in Chinese
    expect(page.locator("#engine")).to_have_text("espeak")
    expect(page.locator("#state")).to_have_text("运行中")
    expect(page.locator("h2[data-i18n=queue]")).to_have_text("队列")
    expect(page.locator("#sinks-list")).to_contain_text("browser")
    expect(page.locator("#health")).to_contain_text("health")

    # say a line while paused: it waits in the queue; resumed, it is said, in the feed and the history
    page.click("#pause")
    expect(page.locator("#resume")).to_be_visible()
    page.fill("#say-text", "你好，控制室 hello control room")
    page.select_option("#say-voice", "en")
    page.fill("#opt-speed", "1.2")
    page.click("#say-button")
    expect(page.locator("#queue-list")).to_contain_text("hello control room")
    page.click("#resume")
    expect(page.locator("#feed li[data-event=spoken]").first).to_contain_text("hello control room", timeout=30_000)
    expect(page.locator("#history-list")).to_contain_text("hello control room")

    # the overlay showed it and played its audio
    obs.wait_for_function("() => window.overlayStats.lastText.includes('hello control room')")
    stats = obs.evaluate("() => window.overlayStats")
    assert stats["frames"] > 0 and stats["samples"] > 22050 * 0.5 and stats["started"] >= 1

    # skip a long line from the page: the feed says it was cut, the overlay stops it at once
    page.fill("#say-text", "This is a long line that keeps going so that there is time to skip it. " * 4)
    page.click("#say-button")
    expect(page.locator("#queue-list li.speaking")).to_have_count(1, timeout=20_000)
    obs.wait_for_function("() => window.overlayStats.lastText.startsWith('This is a long line')")
    shot(obs, "overlay.png", tmp_path)
    cuts = obs.evaluate("() => window.overlayStats.cut")
    page.click("#skip")
    expect(page.locator("#feed li[data-event=cut]").first).to_contain_text("skipped")
    obs.wait_for_function(f"() => window.overlayStats.cut > {cuts}")

    # a history entry plays and downloads
    entry = page.locator("#history-list li").first
    with page.expect_download() as dl:
        entry.locator("a").click()
    assert dl.value.suggested_filename.endswith(".wav")

    # upload a new voice (cloned by the tiny F5 model) and speak with it
    page.fill("#upload-id", "guest")
    page.set_input_files("#upload-file", str(d.reference))
    page.fill("#upload-transcript", f5_tiny.REF_TEXT)
    page.select_option("#upload-engine", "f5")
    page.click("#upload-button")
    expect(page.locator("#voices-list li[data-voice=guest]")).to_contain_text("已上传", timeout=60_000)
    page.select_option("#say-voice", "guest")
    expect(page.locator("#opt-steps")).to_be_visible()  # F5's own options appear for an F5 voice
    page.fill("#opt-steps", "4")
    page.fill("#say-text", "Spoken in the uploaded voice.")
    page.click("#say-button")
    expect(page.locator("#history-list li").first).to_contain_text("guest", timeout=60_000)
    assert d.request("history")["history"][0]["engine"] == "f5"

    # chat as a streamer sees it: read, filtered with the reason, waiting while paused
    for user, text, extra in (("小明", "主播好！今天玩什么？", {}), ("Nightbot", "!commands: visit my site", {}),
                              ("土豪", "", {"kind": "superchat", "amount": 30, "currency": "CNY"})):  # fmt: skip
        d.request("inject", {"platform": "bilibili", "user": user, "text": text or "加油", **extra})
    expect(page.locator("#feed li[data-event=filtered]").first).to_be_visible(timeout=20_000)
    expect(page.locator("#history-list")).to_contain_text("主播好", timeout=30_000)
    page.click("#pause")
    for user, text in (("viewer42", "what song is this?"), ("小红", "晚上好")):
        d.request("inject", {"platform": "twitch" if user.isascii() else "bilibili", "user": user, "text": text})
    expect(page.locator("#queue-list")).to_contain_text("晚上好")
    expect(page.locator("#queue-list")).to_contain_text("what song is this?")
    shot(page, "control-room.png", tmp_path)
    page.click("#resume")

    # a bad upload is explained on the page
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"RIFF" + os.urandom(4000))
    page.fill("#upload-id", "broken")
    page.set_input_files("#upload-file", str(bad))
    page.fill("#upload-transcript", "whatever")
    page.click("#upload-button")
    expect(page.locator("#toast")).to_contain_text("not audio")

    page.click("#lang")
    expect(page.locator("h2[data-i18n=queue]")).to_have_text("Queue")
    # a narrow OBS dock: one column, still usable
    page.set_viewport_size({"width": 320, "height": 900})
    assert page.evaluate("() => document.documentElement.scrollWidth <= 320")
    shot(page, "control-room-dock.png", tmp_path)
    ctx.close()


def slide(page, selector: str, value) -> None:
    """Move a range input as a hand does: `input` events while dragging, `change` on release."""
    page.eval_on_selector(selector, """(e, v) => { e.focus(); e.value = v; e.dispatchEvent(new Event("input", {bubbles: true}));
                                                   e.dispatchEvent(new Event("change", {bubbles: true})); }""", str(value))


def test_live_sound_from_the_control_room(browser, tmp_path):
    """Volume sliders (master and per sink), the rate slider and the default-voice picker change the
    daemon at once, and a change from elsewhere (`ishowttsctl volume`) moves the slider."""
    expect = playwright.expect
    config = '[engine]\ndefault = "espeak"\ndefault_voice = "en"\n\n[[sinks]]\ntype = "file"\ndirectory = "out"\n'
    with WebDaemon(tmp_path, config) as d:
        page = browser.new_context(locale="en-US").new_page()
        page.goto(d.url + "/login?code=" + d.login_code())
        page.wait_for_url(d.url + "/")
        expect(page.locator("h2[data-i18n=sound]")).to_have_text("Sound")
        expect(page.locator("#vol-sink-file")).to_have_value("100")
        slide(page, "#vol-master", 50)
        d.wait_for(lambda: d.request("sound")["master"] == 50, what="the master volume from the page")
        expect(page.locator("#vol-master-value")).to_have_text("50%")
        slide(page, "#vol-sink-file", 120)
        d.wait_for(lambda: d.request("sound")["sinks"]["file"] == 120, what="the file sink's volume from the page")
        slide(page, "#rate", 1.5)
        d.wait_for(lambda: d.request("sound")["rate"] == 1.5, what="the rate from the page")
        expect(page.locator("#rate-value")).to_have_text("1.5×")
        page.select_option("#default-voice", "zh")
        d.wait_for(lambda: d.request("sound")["default_voice"] == "zh", what="the default voice from the page")
        expect(page.locator("#say-voice option").first).to_contain_text("zh")
        d.ctl("volume", "80")  # changed elsewhere: the page follows
        expect(page.locator("#vol-master")).to_have_value("80")
        page.select_option("#default-voice", "")  # back to the config's
        d.wait_for(lambda: d.request("sound")["default_voice_chosen"] is None, what="the config's default voice")
        shot(page, "control-room-sound.png", tmp_path)


def test_the_web_benchmark_runs(tmp_path):
    """A small run of the benchmark script (its figures come from a full run, not from tests)."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "ishowttsd.web.bench", "--pages", "2", "--events", "5", "--speech-runs", "2",
                        "--utterances", "2", "--stress-utterances", "2", "--repeats", "1", "--chromium", CHROMIUM,
                        "--out", str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(out.read_text())
    assert result["latency"]["2"]["samples"] == 10 and result["speech"]["overhead_ms"] is not None
    assert result["throughput"]["overlay_bytes_received"][0] > 0 and result["machine"]["cpu"]
    assert "event -> page p50 / p99" in r.stdout
