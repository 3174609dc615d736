"""Uploaded voices on a real daemon with a tiny F5 model: uploaded over HTTP, spoken with,
kept across a restart and prepared from the cache, restored to the configured recording."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("f5_tts")

import f5_tiny  # noqa: E402
from web_daemon import WebDaemon  # noqa: E402

pytestmark = pytest.mark.slow


def _config(tmp, tiny) -> str:
    (tmp / "voice.wav").write_bytes(tiny["ref"].read_bytes())
    return ('[engine]\ndefault = "espeak"\n\n' + f5_tiny.engine_table(tiny)
            + f'\n[[voices]]\nid = "me"\nengine = "f5"\nreference_audio = "voice.wav"\nreference_text = "{f5_tiny.REF_TEXT}"\n'
            # what people hear: an audible file sink (the overlay counts only while a page listens)
            + '\n[[sinks]]\ntype = "file"\ndirectory = "out"\naudible = true\n')  # fmt: skip


def _cache(d) -> dict:
    return d.request("status")["engine"]["engines"]["f5"]["reference_cache"]


def test_uploaded_voices_survive_a_restart_and_restore_to_the_config(tmp_path):
    tiny = f5_tiny.build(tmp_path / "f5")
    other = tmp_path / "other.wav"
    f5_tiny.write_reference(other, seconds=1.6, seed=3)
    config = _config(tmp_path, tiny)
    with WebDaemon(tmp_path, config) as d, d.client() as http:
        for voice_id in ("me", "guest"):  # a configured voice gets a new recording; a new voice is made
            r = http.post(f"/api/voices/{voice_id}/upload", files={"file": ("o.wav", other.read_bytes(), "audio/wav")},
                          data={"transcript": "Another voice speaks here.", "engine": "f5"})  # fmt: skip
            assert r.status_code == 200 and r.json()["engine"] == "f5" and r.json()["seconds"] > 2, r.text
        voices = {v["id"]: v for v in http.get("/api/voices").json()["voices"]}
        assert voices["me"]["uploaded"] and voices["me"]["configured"] and voices["guest"]["uploaded"]
        assert voices["me"]["reference_text"] == "Another voice speaks here."
        said = http.post("/api/say", json={"text": "The guest voice is here.", "voice": "guest", "options": {"steps": 4, "seed": 3}})
        assert said.status_code == 200
        d.wait_for(lambda: d.request("status")["counts"]["spoken"] >= 1, timeout=60, what="the guest voice to speak")
        assert http.get("/api/history").json()["history"][0]["voice"] == "guest"
        # a preview is audio for the page, not speech on the stream
        preview = http.get("/api/voices/guest/preview.wav")
        assert preview.status_code == 200 and preview.headers["content-type"] == "audio/wav"
        assert d.request("status")["counts"]["spoken"] == 1
    stored = sorted(p.name for p in (tmp_path / "state" / "voices").iterdir())
    assert stored == ["guest", "me"]

    with WebDaemon(tmp_path, config) as d, d.client() as http:
        voices = {v["id"]: v for v in http.get("/api/voices").json()["voices"]}
        assert voices["guest"]["uploaded"] and voices["me"]["reference_text"] == "Another voice speaks here."
        assert _cache(d)["disk"] >= 1  # prepared once, in the first run; read back from its cache now
        r = http.post("/api/voices.restore", json={"id": "me"})
        assert r.json() == {"id": "me", "now": "config"}
        r = http.post("/api/voices.restore", json={"id": "guest"})
        assert r.json() == {"id": "guest", "now": "removed"}
        voices = {v["id"]: v for v in http.get("/api/voices").json()["voices"]}
        assert "guest" not in voices and voices["me"]["reference_text"] == f5_tiny.REF_TEXT and not voices["me"]["uploaded"]
        assert http.post("/api/say", json={"text": "gone", "voice": "guest"}).status_code == 400
