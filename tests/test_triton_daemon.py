"""The real daemon with `[engine] default = "triton"` and the real Triton server on loopback,
down at start, killed in the middle of a paid utterance and restarted: espeak speaks
meanwhile, the paid message is said exactly once, status and health say why, and speech goes
back to the server when it is back. (The daemon speaking through a healthy server is in
test_triton.py, on that module's server.)"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("torch")
pytest.importorskip("f5_tts")

import f5_tiny  # noqa: E402
import triton_server as ts  # noqa: E402
from daemon_process import DaemonProcess, spoken_log  # noqa: E402

LONG = ("Thank you so much for the super chat, this is a very long message that keeps the server busy for a while, "
        "sentence after sentence. ") * 3  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return f5_tiny.build(tmp_path_factory.mktemp("f5tiny"))


def test_down_at_start_killed_mid_utterance_and_back(tiny, tmp_path_factory, tmp_path):
    ts.require_server()
    root = tmp_path_factory.mktemp("triton-faults")
    # many ODE steps: a long utterance keeps the server busy long enough to be killed in the middle
    ts.add_ours(root / "models", "f5_tts", ts.tiny_params(tiny, steps="64"))
    srv = ts.TritonServer(root / "models", root / "server.log")
    out = tmp_path / "out"
    with DaemonProcess(tmp_path, ts.daemon_config(srv.port, "f5_tts", tiny["ref"])) as d:
        # 1. the server is down at start: espeak speaks, status and health say why
        eng = d.request("status")["engine"]
        assert eng["active"] == "espeak" and "cannot reach the server" in eng["fallback_reason"]
        assert "Connection refused" in eng["down"]["triton"]["error"]
        health = d.ctl("health", check=False)
        assert health.returncode == 2 and "engine:triton" in health.stdout and "triton:server" in health.stdout
        d.request("say", {"text": "Said while the server is down."})
        assert ts.wait_said(d, out, 1)[0]["engine"] == "espeak"

        # 2. it starts: traffic goes to it
        srv.start()
        try:
            d.wait_for(lambda: d.request("status")["engine"]["active"] == "triton", timeout=60, what="triton to be back")
            d.request("say", {"text": "Said through the server."})
            assert ts.wait_said(d, out, 2)[1]["engine"] == "triton"

            # 3. killed in the middle of a paid message: said once, by espeak
            batches = srv.log().count("batch of")
            r = d.request("inject", {"kind": "superchat", "text": LONG, "amount": 30, "currency": "CNY", "user": "patron",
                                     "id": "sc-1"})  # fmt: skip
            assert r["accepted"]
            time.sleep(1.5)  # the request is on the server, which needs several seconds for it
            srv.kill()
            assert srv.log().count("batch of") == batches, "the server finished before it was killed: make it slower"
            log = ts.wait_said(d, out, 3)
            paid = [x for x in log if x.get("message_id") == "sc-1"]
            assert len(paid) == 1 and paid[0]["priority"] == "paid" and not paid[0]["cut"]
            assert "engine.down engine=triton" in d.log()
            eng = d.request("status")["engine"]
            assert eng["active"] == "espeak" and "triton" in eng["down"]
            time.sleep(1)
            assert len([x for x in spoken_log(out) if x.get("message_id") == "sc-1"]) == 1, "said twice"
        finally:
            srv.kill()

        # 4. restarted: traffic returns
        srv = ts.TritonServer(root / "models", root / "server2.log", port=srv.port).start()
        try:
            d.wait_for(lambda: d.request("status")["engine"]["active"] == "triton", timeout=60, what="triton to be back")
            d.request("say", {"text": "Back on the server."})
            assert ts.wait_said(d, out, 4)[-1]["engine"] == "triton"
            assert not d.request("status")["engine"]["down"]
            assert d.log().count("engine.back") == 2
        finally:
            srv.kill()
    journal = json.dumps(spoken_log(out), ensure_ascii=False)
    assert journal.count("sc-1") == 1
