"""The HTTP front door of a real daemon: every verb over HTTP, every refusal, /v1/audio/speech."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import stat
import time

import numpy as np
import pytest
import soundfile as sf
from web_daemon import WebDaemon, raw_http, wav_seconds

from ishowttsd.api import ERRORS
from ishowttsd.web.http import STATUS

WEB = """
speech_max_chars = 500
upload_max_mb = 1
transcript_max_chars = 200
"""
CONFIG = """
[[sinks]]
type = "file"
directory = "out"
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    with WebDaemon(tmp_path_factory.mktemp("web"), CONFIG, web=WEB) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def http(d):
    with d.client() as c:
        yield c


def wait_spoken(http, n: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = http.get("/api/status").json()
        if st["counts"]["spoken"] >= n:
            return st
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} utterances spoken: {st['counts']}")


# -- who may ---------------------------------------------------------------------------------------


def test_every_route_needs_a_credential(d):
    with d.client(auth=False) as anon:
        assert anon.get("/").status_code == 303 and anon.get("/").headers["location"] == "/login"
        assert anon.get("/login").status_code == 200
        for path in ("/api/status", "/api", "/static/app.js", "/api/history/1.wav", "/overlay/custom.css", "/v1/models"):
            r = anon.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", path
        assert anon.get("/overlay").status_code == 401
        r = anon.post("/v1/audio/speech", json={"input": "hi"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
        assert anon.post("/api/say", json={"text": "hi"}).status_code == 401
    with d.client(auth=False, headers={"Authorization": "Bearer wrong-token-wrong-token"}) as bad:
        assert bad.get("/api/status").status_code == 401


def test_every_api_error_code_has_an_http_status():
    assert set(STATUS) == set(ERRORS)


def test_a_foreign_host_is_refused_dns_rebinding(d):
    with d.client(headers={"Host": f"evil.example:{d.port}"}) as c:
        r = c.get("/api/status")
        assert r.status_code == 403 and "Host" in r.json()["error"]["message"]
    with d.client(headers={"Host": f"localhost:{d.port}"}) as c:
        assert c.get("/api/status").status_code == 200


def test_state_changes_from_another_origin_are_refused(d, http):
    r = http.post("/api/pause", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert http.post("/api/pause", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert http.get("/api/queue").json()["paused"] is False
    same = http.post("/api/pause", headers={"Origin": d.url})
    assert same.status_code == 200
    assert http.post("/api/resume").status_code == 200


def test_no_cors_is_ever_granted(d, http):
    r = http.options("/api/status", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    r = http.get("/api/status", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_login_code_grants_a_strict_httponly_session_once(d):
    code = d.login_code()
    with d.client(auth=False) as browser:
        r = browser.get(f"/login?code={code}")
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
        assert browser.get("/api/status").status_code == 200
        assert browser.get("/").status_code == 200 and b"/static/app.js" in browser.get("/").content
        assert browser.get("/static/app.js").status_code == 200
    with d.client(auth=False) as again:
        assert again.get(f"/login?code={code}").status_code == 401  # one use
        assert again.post("/login", data={"code": "WRONGWRONG"}).status_code == 401


def test_wrong_codes_are_throttled(tmp_path):
    with WebDaemon(tmp_path) as d2, d2.client(auth=False) as c:
        codes = [c.post("/login", data={"code": f"NOPE{i:06d}"}).status_code for i in range(12)]
        assert codes[:10] == [401] * 10 and codes[-1] == 429
        # a right code waits out the minute as well: guessing gets nowhere
        assert c.get(f"/login?code={d2.login_code()}").status_code == 429


def test_the_overlay_key_only_reads_the_overlay(d):
    key = d.request("web")["overlay_url"].split("key=")[1]
    with d.client(auth=False) as obs:
        r = obs.get(f"/overlay?key={key}")
        assert r.status_code == 200 and b"overlay.js" in r.content
        assert "HttpOnly" in r.headers["set-cookie"]
        assert obs.get("/overlay/overlay.js").status_code == 200  # by the cookie the page set
        for method, path in (("GET", "/api/status"), ("POST", "/api/skip"), ("GET", "/api/history"), ("GET", "/")):
            r = obs.request(method, f"{path}?key={key}")
            assert r.status_code in (303, 403), (method, path, r.status_code)
        assert obs.post("/v1/audio/speech", json={"input": "x"}).status_code == 403


def test_secrets_are_in_no_page_answer_or_log(d, http):
    link = d.request("web")
    key = link["overlay_url"].split("key=")[1]
    pages = [http.get(p).text for p in ("/", "/static/app.js", "/api/status", "/api", "/overlay", "/api/voices")]
    for secret in (d.token, key, link["code"]):
        assert all(secret not in p for p in pages)
    with d.client(auth=False) as anon:
        anon.get(f"/login?code={link['code']}")
        anon.get(f"/overlay?key={key}")
        anon.get("/login?code=WRONG")
    log = d.log()
    for secret in (d.token, key, link["code"]):
        assert secret not in log
    token_file = d.tmp / "state" / "web-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


# -- every verb ------------------------------------------------------------------------------------


def test_every_verb_over_http(d, http):
    verbs = {v["name"]: v for v in http.get("/api").json()["verbs"]}
    done = set()

    def call(name, params=None, status=200, method=None):
        done.add(name)
        if method == "GET" or (method is None and params is None and not verbs[name]["mutates"]):
            r = http.get(f"/api/{name}", params=params or {})
        else:
            r = http.post(f"/api/{name}", json=params or {})
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        return r.json()

    st = call("status")
    assert st["state"] == "running" and st["web"]["url"].startswith("http://127.0.0.1:")
    assert {s["name"] for s in st["sinks"]} == {"file", "browser", "history"}
    assert call("health")["status"] in ("ok", "warn", "fail")
    assert "spoken" in call("summary")
    assert "ishowtts_up 1" in call("metrics")["text"]
    assert {"speaking", "pending"} <= set(call("queue"))
    v = call("voices")
    assert {x["id"] for x in v["voices"]} >= {"auto", "zh", "en"} and v["engines"]["espeak"]["options"]["speed"]["maximum"] == 4
    assert "sinks" in call("plugins")
    assert any(e["event"] == "voice.uploaded" for e in call("events")["events"])
    call("pause", method="POST")
    said = call("say", {"text": "HTTP says hello", "voice": "en", "options": {"speed": 1.5}})
    call("inject", {"text": "from chat", "user": "viewer"})
    q = call("queue", method="GET")
    assert said["id"] in [u["id"] for u in q["pending"] + q["prepared"] + ([q["speaking"]] if q["speaking"] else [])]
    call("queue.remove", {"user": "viewer"})
    call("resume", method="POST")
    call("skip", method="POST")
    call("clear", method="POST")
    assert call("reload", method="POST")["config"].endswith("ishowttsd.toml")
    assert call("voices.reload", method="POST")["errors"] == {}
    assert call("bench", {"runs": 1, "texts": ["bench"]})["baseline"]["runs"] == 1
    assert call("web", method="POST")["code"]
    audio = call("synthesize", {"text": "one two three", "format": "flac"})
    assert sf.info(io.BytesIO(base64.b64decode(audio["audio_b64"]))).format == "FLAC"
    call("voices.preview", {"id": "en", "text": "preview"})
    call("voices.restore", {"id": "en"}, status=404)
    err = call("voices.upload", {"id": "me", "transcript": "hi", "audio_b64": base64.b64encode(_wav(1.0)).decode()}, status=400)
    assert "cannot clone" in err["error"]["message"]  # espeak speaks, it does not clone
    http.post("/api/say", json={"text": "for the history", "voice": "en"})
    wait_spoken(http, 1)
    h = call("history")
    assert h["history"] and h["keep"] == 50
    entry = h["history"][0]
    call("history.audio", {"id": entry["id"]}, method="GET")
    call("sources.stop", {"name": "nope"}, status=404)
    call("sources.start", {"name": "nope"}, status=404)
    call("sources.add", {"type": "twitch", "settings": {"channel": "x", "token_file": "/etc/shadow"}}, status=400)
    # the live sound, the same verbs as `ishowttsctl volume / rate / voice-default`
    assert call("sound")["sinks"] == {"file": 100, "browser": 100, "history": 100}
    assert call("volume", {"percent": 40})["master"] == 40
    assert call("volume", {"sink": "browser", "percent": 150})["sinks"]["browser"] == 150
    assert "no sink 'nope'" in call("volume", {"sink": "nope", "percent": 10}, status=404)["error"]["message"]
    assert call("volume", {"percent": 151}, status=400)["error"]["code"] == "invalid_params"
    assert call("rate", {"rate": 1.5})["rate"] == 1.5
    assert call("rate", {"rate": 0.1}, status=400)["error"]["code"] == "invalid_params"
    assert call("voices.default", {"id": "zh"})["default_voice"] == "zh"
    assert call("voices", method="GET")["default"] == "zh"
    assert call("voices.default", {"id": "nope"}, status=400)["error"]["code"] == "unknown_voice"
    assert http.get("/api/volume", params={"percent": "10"}).status_code == 405  # a change is a POST
    assert call("status", method="GET")["sound"]["master"] == 40
    call("volume", {"percent": 100}), call("volume", {"sink": "browser", "percent": 100}), call("rate", {"rate": 1})
    assert call("voices.default", {"id": None})["default_voice_chosen"] is None
    r = http.post("/api/events.watch", json={})
    assert r.status_code == 400 and "/api/events" in r.json()["error"]["message"]
    done.add("events.watch")
    assert set(verbs) <= done, sorted(set(verbs) - done)


def _wav(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("body,status,code", [
    (b"{not json", 400, "parse_error"), (b"[1, 2]", 400, "invalid_params"), (b'{"text": 5}', 400, "invalid_params"),
    (b'{"text": "hi", "bogus": 1}', 400, "invalid_params"), (b'{"text": "hi", "priority": "whenever"}', 400, "invalid_params"),
    (b'{"text": "' + b"a" * 200_000 + b'"}', 413, "too_large"), (b'{"text": "x", "options": {"steps": 7}}', 400, "invalid_params"),
])  # fmt: skip
def test_bad_bodies_get_clear_errors(http, body, status, code):
    r = http.post("/api/say", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text[:200]


def test_unknown_verbs_and_wrong_methods(http):
    r = http.get("/api/explode")
    assert r.status_code == 404 and r.json()["error"]["code"] == "method_not_found"
    r = http.get("/api/skip")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


# -- /v1/audio/speech ------------------------------------------------------------------------------


def test_speech_returns_a_wav_of_the_expected_length(d, http):
    text = "The quick brown fox jumps over the lazy dog."
    direct = d.request("synthesize", {"text": text, "format": "wav", "voice": "en"})
    expected = wav_seconds(base64.b64decode(direct["audio_b64"]))
    r = http.post("/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": "en", "response_format": "wav"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    got = wav_seconds(r.content)
    assert got == pytest.approx(expected, abs=1e-3) and got > 1.0
    assert float(r.headers["x-audio-seconds"]) == pytest.approx(got, abs=0.01)
    # an OpenAI voice name speaks with the default voice; pcm is 24 kHz 16-bit mono
    pcm = http.post("/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": "en", "response_format": "pcm"})
    assert pcm.headers["content-type"] == "audio/pcm"
    assert len(pcm.content) / 2 / 24000 == pytest.approx(expected, rel=0.01)
    for fmt, container in (("mp3", "MP3"), ("opus", "OGG"), ("flac", "FLAC")):
        r = http.post("/v1/audio/speech", json={"input": text, "voice": "en", "response_format": fmt})
        info = sf.info(io.BytesIO(r.content))
        assert info.format == container and info.duration == pytest.approx(expected, abs=0.1), fmt
    fast = http.post("/v1/audio/speech", json={"input": text, "voice": "en", "response_format": "wav", "speed": 2.0})
    assert wav_seconds(fast.content) < expected * 0.7
    assert http.post("/v1/audio/speech", json={"input": text, "voice": "alloy", "response_format": "wav"}).status_code == 200


@pytest.mark.parametrize("body,status", [
    ({"input": "x" * 501}, 413), ({"input": "hi", "voice": "nobody"}, 400), ({"input": "hi", "response_format": "aac"}, 400),
    ({"input": ""}, 400), ({"input": "hi", "speed": 9}, 400), ({"input": "hi", "stream_format": "sse"}, 400),
    ({"input": "hi", "temperature": 1}, 400),
])  # fmt: skip
def test_speech_refusals_speak_openais_error_shape(http, body, status):
    r = http.post("/v1/audio/speech", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error" and err["code"]


def test_models_list_for_openai_clients(http):
    assert "tts-1" in [m["id"] for m in http.get("/v1/models").json()["data"]]


# -- uploads and history --------------------------------------------------------------------------


def test_a_gigabyte_upload_is_refused_before_it_is_read(d):
    head = (f"POST /api/voices/big/upload HTTP/1.1\r\nHost: {d.host}\r\nAuthorization: Bearer {d.token}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1073741824\r\n\r\n").encode()  # fmt: skip
    got, sent = raw_http(d.port, head, (b"\0" * 65536 for _ in range(16384)))
    assert got.startswith(b"HTTP/1.1 413") and b"upload_max_mb" in got + b"upload_max_mb"
    assert sent < 64 * 1024 * 1024  # answered long before a gigabyte went over the wire


def test_a_chunked_upload_is_cut_off_at_the_bound(d):
    head = (f"POST /api/voices/big/upload HTTP/1.1\r\nHost: {d.host}\r\nAuthorization: Bearer {d.token}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n").encode()  # fmt: skip
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    first = f"{len(part):x}\r\n".encode() + part + b"\r\n"
    chunk = b"10000\r\n" + b"\0" * 65536 + b"\r\n"
    got, sent = raw_http(d.port, head, itertools.chain([first], (chunk for _ in range(16384))))
    assert got.startswith(b"HTTP/1.1 413")
    assert sent < 64 * 1024 * 1024


def _upload(http, voice_id, data, transcript="hello there"):
    return http.post(f"/api/voices/{voice_id}/upload", files={"file": ("v.wav", data, "audio/wav")},
                     data={"transcript": transcript, "engine": "espeak"})  # fmt: skip


def test_hostile_uploads_are_refused_and_nothing_is_written(d, http):
    voices = d.tmp / "state" / "voices"
    r = _upload(http, "fake", b"RIFF" + os.urandom(5000))
    assert r.status_code == 415 and r.json()["error"]["code"] == "bad_audio" and "not audio" in r.json()["error"]["message"]
    r = _upload(http, "long", _wav(1.0), transcript="字" * 100_000)
    assert r.status_code == 413 and "transcript" in r.json()["error"]["message"]
    r = http.post("/api/voices.upload", json={"id": "../../etc/passwd", "transcript": "x", "audio_b64": base64.b64encode(_wav(1)).decode()})
    assert r.status_code == 400 and "plain name" in r.json()["error"]["message"]
    r = _upload(http, "..%2F..%2Fetc%2Fpasswd", _wav(1.0))
    assert r.status_code in (400, 404)
    r = _upload(http, "silent", _wav(0.0) + b"\0" * 32000)
    assert r.status_code in (400, 415)
    assert not voices.exists() or not any(voices.iterdir())
    assert not (d.tmp / "etc").exists()


def test_history_plays_and_downloads(d, http):
    before = http.get("/api/status").json()["counts"]["spoken"]
    http.post("/api/say", json={"text": "keep me in history", "voice": "en"})
    wait_spoken(http, before + 1)
    entry = next(e for e in http.get("/api/history").json()["history"] if e["text"] == "keep me in history")
    assert entry["has_audio"] and entry["voice"] == "en" and entry["rtf"] > 0
    r = http.get(f"/api/history/{entry['id']}.wav")
    assert r.headers["content-type"] == "audio/wav" and wav_seconds(r.content) == pytest.approx(entry["audio_s"], abs=0.01)
    dl = http.get(f"/api/history/{entry['id']}.wav?download=1")
    assert re.search(r'attachment; filename="ishowtts-\d+\.wav"', dl.headers["content-disposition"])
    assert http.get("/api/history/999999.wav").status_code == 404


def test_event_stream_over_sse(d, http):
    with http.stream("GET", "/api/events/sse", params={"events": "spoken"}) as r:
        lines = r.iter_lines()
        assert next(lines) == "event: status"
        assert json.loads(next(lines).removeprefix("data: "))["status"]["state"] == "running"
        http.post("/api/say", json={"text": "over sse", "voice": "en"})
        for line in lines:
            if line.startswith("data: ") and "over sse" in line:
                assert json.loads(line[6:])["event"] == "spoken"
                break


def test_ishowttsctl_web_and_the_control_room_verbs(d, http, tmp_path):
    out = d.ctl("web").stdout
    assert "/login?code=" in out and "overlay?key=" in out and "v1/audio/speech" in out and d.token not in out
    before = http.get("/api/status").json()["counts"]["spoken"]
    d.ctl("say", "said by ishowttsctl", "--voice", "en", "--speed", "1.3")
    wait_spoken(http, before + 1)
    assert "said by ishowttsctl" in d.ctl("history").stdout
    entry = next(e for e in d.request("history")["history"] if e["text"] == "said by ishowttsctl")
    d.ctl("history", "--save", str(entry["id"]), str(tmp_path / "h.wav"))
    assert wav_seconds((tmp_path / "h.wav").read_bytes()) == pytest.approx(entry["audio_s"], abs=0.01)
    d.ctl("synthesize", "written to a file", "--format", "mp3", "--out", str(tmp_path / "s.mp3"))
    assert sf.info(str(tmp_path / "s.mp3")).format == "MP3"
    d.ctl("voices", "preview", "zh", "--out", str(tmp_path / "p.wav"))
    assert wav_seconds((tmp_path / "p.wav").read_bytes()) > 0.5
    r = d.ctl("source", "stop", "nope", check=False)
    assert r.returncode == 1 and "not_found" in r.stderr
    (tmp_path / "v.wav").write_bytes(_wav(1.0))
    r = d.ctl("voices", "upload", "mine", str(tmp_path / "v.wav"), "--transcript", "hello", check=False)
    assert r.returncode == 1 and "cannot clone" in r.stderr
    assert d.ctl("voices").returncode == 0
