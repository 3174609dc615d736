"""Built-in plugins work from an installed wheel, not only from a checkout."""

import json
import os
import subprocess
import sys
import venv

import httpx
import pytest

from daemon_process import REPO, DaemonProcess, spoken_log

pytestmark = pytest.mark.slow


def test_wheel_installs_and_runs_the_daemon(tmp_path, monkeypatch):
    # the installed package must not see this checkout (developers run the suite with PYTHONPATH)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    [wheel] = list(dist.glob("ishowttsd-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip

    recording = tmp_path / "chat.jsonl"
    recording.write_text(
        json.dumps({"t": 0, "platform": "twitch", "kind": "danmaku", "user": {"name": "wheelie"}, "text": "from a wheel"})
        + "\n"
    )
    config = f"""
[[sources]]
type = "replay"
path = "{recording}"

[[sinks]]
type = "file"
directory = "out"
"""
    d = DaemonProcess(tmp_path, config, exe=[str(env_dir / "bin" / "ishowttsd")], args=["--exit-when-done"],
                      wait_ready=False).start()  # fmt: skip
    assert d.wait(120) == 0, d.log()
    [entry] = spoken_log(tmp_path / "out")
    assert entry["user"] == "wheelie" and entry["rtf"] > 0

    # the built-ins came from inside the installed package, not from this checkout, and a built-in
    # that is a package folder (bilibili: wire, signing, commands, ...) loads with its relative imports
    probe = (
        "import json; from ishowttsd.plugins import PluginManager; import ishowttsd.builtin_plugins as b\n"
        "pm = PluginManager(strict=True); pm.load_all(autoload=False)\n"
        "import ishowttsd.builtin_plugins.sources.bilibili as bili\n"
        "print(json.dumps({'path': list(b.__path__), 'checkout': str(b.CHECKOUT_PLUGINS or ''), 'bilibili': bili.__file__,\n"
        "                  'wire': bili.wire.__file__, 'sources': sorted(pm.sources), 'sinks': sorted(pm.sinks),\n"
        "                  'records': [(r.name, r.origin, r.path) for r in pm.records]}))\n"
    )
    found = json.loads(subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True,
                                      cwd=tmp_path).stdout)  # fmt: skip
    package_dir = str(env_dir)
    assert found["checkout"] == "" and len(found["path"]) == 1 and found["path"][0].startswith(package_dir)
    assert found["bilibili"].startswith(package_dir) and found["bilibili"].endswith("sources/bilibili/__init__.py")
    assert found["wire"].startswith(package_dir) and found["wire"].endswith("sources/bilibili/wire.py")
    assert {"bilibili", "twitch", "replay"} <= set(found["sources"]) and {"alsa", "file", "obs"} <= set(found["sinks"])
    builtins = {name: path for name, origin, path in found["records"] if origin == "builtin"}
    assert set(builtins) >= {"sources/bilibili", "sinks/file"}
    assert all(path.startswith(package_dir) for path in builtins.values()), builtins
    # the control room's pages and the overlay come from inside the installed package
    static = subprocess.run([str(py), "-c", "import ishowttsd.web.routes as r; print(r.STATIC)"], check=True,
                            capture_output=True, text=True, cwd=tmp_path).stdout.strip()  # fmt: skip
    assert static.startswith(package_dir) and {"index.html", "app.js", "overlay.js", "login.html"} <= set(os.listdir(static))
    (tmp_path / "web").mkdir()
    with DaemonProcess(tmp_path / "web", '[daemon]\nstate_dir = "state"\n[web]\nlisten = "127.0.0.1:0"\n',
                       exe=[str(env_dir / "bin" / "ishowttsd")]) as web:  # fmt: skip
        link = web.request("web")
        token = (tmp_path / "web" / "state" / "web-token").read_text().strip()
        with httpx.Client(base_url=link["url"], trust_env=False, timeout=30) as c:
            assert "ishowttsctl web" in c.get("/login").text
            assert "connect(" in c.get("/static/app.js", headers={"Authorization": f"Bearer {token}"}).text
            assert "overlay.js" in c.get(link["overlay_url"]).text
            r = c.post("/v1/audio/speech", headers={"Authorization": f"Bearer {token}"},
                       json={"input": "from the wheel", "response_format": "mp3"})  # fmt: skip
            assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    r = subprocess.run([str(env_dir / "bin" / "ishowttsctl"), "--socket", str(tmp_path / "none.sock"), "status"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 3 and "not running" in r.stderr
