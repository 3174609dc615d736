"""Bad input on the control socket gets an error; the daemon keeps serving everyone else."""

import json
import socket
import threading
import time

import pytest

from daemon_process import DaemonProcess

CONFIG = """
[[sinks]]
type = "file"
directory = "out"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with DaemonProcess(tmp_path_factory.mktemp("ctl"), CONFIG) as d:
        yield d


def error_code(resp):
    return resp["error"]["code"]


def test_invalid_json(daemon):
    [r] = daemon.raw(b"{not json\n")
    assert error_code(r) == "parse_error" and r["id"] is None


@pytest.mark.parametrize("payload", [b"[" * 60000 + b"\n", b'{"id": 1, "method": "say", "params": {"text": "x", "voice": ' + b"9" * 5000 + b"}}\n",
                                     b"\xff\xfe{}\n"])
def test_hostile_json_is_an_error_not_a_crash(daemon, payload):
    [r] = daemon.raw(payload)
    assert error_code(r) == "parse_error"
    assert daemon.request("status")["state"] == "running"


def test_not_an_object_and_missing_method(daemon):
    r1, r2 = daemon.raw(b'[1, 2]\n{"id": 7}\n', read_lines=2)
    assert error_code(r1) == "invalid_request"
    assert error_code(r2) == "invalid_request" and r2["id"] == 7


def test_unknown_method_lists_known(daemon):
    [r] = daemon.raw(b'{"id": 1, "method": "explode"}\n')
    assert error_code(r) == "method_not_found" and "status" in r["error"]["message"]


@pytest.mark.parametrize(
    "params,where",
    [({"text": 5}, "text"), ({"text": "hi", "priority": "whenever"}, "priority"), ({"txt": "hi"}, "txt"),
     ({"text": ""}, "text")],
)  # fmt: skip
def test_wrong_parameter_types(daemon, params, where):
    [r] = daemon.raw(json.dumps({"id": 2, "method": "say", "params": params}).encode() + b"\n")
    assert error_code(r) == "invalid_params" and where in r["error"]["message"]


def test_params_must_be_an_object(daemon):
    [r] = daemon.raw(b'{"id": 3, "method": "status", "params": [1]}\n')
    assert error_code(r) == "invalid_params"


def test_ten_megabyte_line_then_a_good_request_on_the_same_connection(daemon):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(daemon.socket))
        f = s.makefile("rb")
        s.sendall(b'{"id": 1, "method": "say", "params": {"text": "' + b"a" * (10 * 1024 * 1024) + b'"}}\n')
        r = json.loads(f.readline())
        assert error_code(r) == "line_too_long"
        s.sendall(b'{"id": 2, "method": "status"}\n')
        r = json.loads(f.readline())
        assert r["id"] == 2 and r["result"]["state"] == "running"


def test_several_requests_in_one_packet_and_split_across_packets(daemon):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(daemon.socket))
        f = s.makefile("rb")
        s.sendall(b'{"id": 1, "method": "status"}\n{"id": 2, "method": "voices"}\n{"id": 3, "met')
        time.sleep(0.1)
        s.sendall(b'hod": "plugins"}\n')
        ids = [json.loads(f.readline())["id"] for _ in range(3)]
        assert ids == [1, 2, 3]


def test_client_that_disconnects_mid_stream(daemon):
    for _ in range(5):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(daemon.socket))
        s.sendall(b'{"id": 1, "method": "events.watch"}\n')
        s.recv(100)  # part of the snapshot, then vanish
        s.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(daemon.socket))
    s.sendall(b'{"id": 1, "method": "sta')  # half a request, then vanish
    s.close()
    daemon.request("say", {"text": "still here"})
    assert daemon.request("status")["state"] == "running"


def test_two_hundred_clients_at_once(daemon):
    results: list = [None] * 200
    barrier = threading.Barrier(200)

    def client(i):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(daemon.socket))
            barrier.wait()
            if i % 4 == 0:
                s.sendall(b"garbage\n")
            else:
                s.sendall(json.dumps({"id": i, "method": "status"}).encode() + b"\n")
            results[i] = json.loads(s.makefile("rb").readline())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, r in enumerate(results):
        assert r is not None, f"client {i} got no answer"
        if i % 4 == 0:
            assert error_code(r) == "parse_error"
        else:
            assert r["id"] == i and r["result"]["state"] == "running"
    assert daemon.request("status")["state"] == "running"


def test_socat_style_plain_text_session(daemon):
    # what `socat - UNIX-CONNECT:path` sends: lines, and EOF at the end
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(daemon.socket))
        s.sendall(b'{"id": "a", "method": "queue"}\n')
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert json.loads(data)["id"] == "a"


@pytest.mark.parametrize("payload", [b'{"id": 1e999999, "method": "status"}\n', b'{"id": NaN, "method": "status"}\n',
                                     b'{"id": Infinity, "method": "status"}\n'])
def test_non_finite_numbers_are_not_json(daemon, payload):
    # json.loads accepts these; echoing them back would answer with something that is not JSON
    [r] = daemon.raw(payload)
    assert error_code(r) == "parse_error" and r["id"] is None


@pytest.mark.parametrize("rid", [[1], {"a": 1}, True, "x" * 500])
def test_request_ids_are_scalars(daemon, rid):
    [r] = daemon.raw(json.dumps({"id": rid, "method": "status"}).encode() + b"\n")
    assert error_code(r) == "invalid_request" and r["id"] is None


@pytest.mark.parametrize(
    "params,where",
    [({"user": 5}, "user"), ({"user": ["a"]}, "user"), ({"user": {"name": None}}, "user.InjectUser.name"),
     ({"user": {"name": "a", "guard": 3}}, "user.InjectUser.guard"), ({"user": {"level": "high"}}, "user.InjectUser.level"),
     ({"kind": "superchat", "amount": -1}, "amount"), ({"kind": "superchat", "amount": 1e308, "currency": "CNY"}, "amount"),
     ({"kind": "nonsense"}, "kind")],
)  # fmt: skip
def test_every_inject_field_is_validated(daemon, params, where):
    [r] = daemon.raw(json.dumps({"id": 3, "method": "inject", "params": params}).encode() + b"\n")
    assert error_code(r) == "invalid_params" and where in r["error"]["message"], r
    assert daemon.request("status")["state"] == "running"


def test_remove_needs_something_to_match(daemon):
    [r] = daemon.raw(b'{"id": 4, "method": "queue.remove", "params": {}}\n')
    assert error_code(r) == "invalid_params" and "id, user, platform or classes" in r["error"]["message"]
    [r] = daemon.raw(b'{"id": 5, "method": "queue.remove", "params": {"id": 999999}}\n')
    assert error_code(r) == "not_found"


def test_every_error_code_is_in_the_vocabulary():
    import re
    from pathlib import Path

    from ishowttsd.api import ERRORS

    root = Path(__file__).resolve().parent.parent / "ishowttsd"
    used = set()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r'ApiError\(\s*"([a-z_]+)"', text)) | set(re.findall(r'(?<!\w)_error\([^,]+,\s*"([a-z_]+)"', text))
    assert used and not used - set(ERRORS), f"add to ishowttsd.api.ERRORS: {sorted(used - set(ERRORS))}"


def test_every_verb_is_documented_and_validated():
    from ishowttsd.api import Api, Params

    verbs = [getattr(Api, a) for a in dir(Api) if getattr(getattr(Api, a), "_verb", None)]
    assert len(verbs) >= 18
    for fn in verbs:
        name, params, _stream, _mutates = fn._verb
        assert fn.__doc__, f"verb {name} needs a docstring (it is its documentation)"
        assert issubclass(params, Params)


def _serve(tmp_path, sock, env=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ishowttsd", "--socket", str(sock), "--check-config"], capture_output=True,
                          text=True, timeout=30, env=env)  # fmt: skip


def test_a_regular_file_named_as_the_socket_is_never_deleted(tmp_path):
    from daemon_process import DaemonProcess

    d = DaemonProcess(tmp_path, "", wait_ready=False)
    d.socket.write_text("precious notes")
    d.start()
    rc = d.wait(30)
    assert rc != 0 and "is not a socket" in d.log() and "left alone" in d.log()
    assert d.socket.read_text() == "precious notes"


def test_a_fallback_runtime_folder_made_by_someone_else_is_refused(tmp_path, monkeypatch):
    import os
    import shutil
    import subprocess
    import sys

    from ishowttsd.control import fallback_socket_folder

    folder = fallback_socket_folder()
    if folder.exists():
        pytest.skip(f"{folder} exists on this machine; not touching it")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY")}
    try:
        folder.mkdir(mode=0o777)
        os.chmod(folder, 0o777)  # as another user would leave it, for anyone to replace the socket
        r = subprocess.run([sys.executable, "-m", "ishowttsd", "--config", "/dev/null"], capture_output=True, text=True,
                           timeout=30, env=env)  # fmt: skip
        assert r.returncode != 0 and "must be yours and private (0700)" in r.stderr, r.stderr
        r = subprocess.run([sys.executable, "-m", "ishowttsd.ctl", "status"], capture_output=True, text=True, timeout=30,
                           env=env)  # fmt: skip
        assert r.returncode == 1 and "refusing to connect" in r.stderr and "0700" in r.stderr
        shutil.rmtree(folder)
        # a fresh one is made private
        p = subprocess.Popen([sys.executable, "-m", "ishowttsd"], env=env, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not (folder / "ishowttsd.sock").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert oct(folder.stat().st_mode & 0o777) == "0o700"
            r = subprocess.run([sys.executable, "-m", "ishowttsd.ctl", "status"], capture_output=True, text=True,
                               timeout=30, env=env)  # fmt: skip
            assert r.returncode == 0, r.stderr
        finally:
            p.terminate()
            p.wait(15)
            p.stderr.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_idle_connections_time_out_and_the_owner_always_gets_in(tmp_path):
    from daemon_process import DaemonProcess

    from ishowttsd.control import MAX_CLIENTS

    # other users cannot be had here; the daemon's own user gets OWNER_SLOTS beyond MAX_CLIENTS,
    # so hold MAX_CLIENTS idle connections and check the owner still gets an answer
    with DaemonProcess(tmp_path, CONFIG) as d:
        held = []
        try:
            for _ in range(MAX_CLIENTS):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(d.socket))
                held.append(s)
            assert d.request("status")["state"] == "running"  # an owner's slot
            log = d.log()
            assert "method=status uid=" in log  # the peer's uid, for every request
        finally:
            for s in held:
                s.close()


def test_an_idle_connection_is_closed(tmp_path):
    from daemon_process import DaemonProcess

    d = DaemonProcess(tmp_path, "[daemon]\ncontrol_idle_timeout_s = 1\n" + CONFIG)
    with d:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(d.socket))
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by the daemon
        assert 0.8 < time.monotonic() - t0 < 8
        s.close()
        d.wait_for(lambda: "reason=idle" in d.log(), timeout=5, what="the idle close to be logged")
