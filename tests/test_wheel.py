"""Built-in plugins work from an installed wheel, not only from a checkout."""

import json
import subprocess
import sys
import venv

import pytest

from daemon_process import REPO, DaemonProcess, spoken_log

pytestmark = pytest.mark.slow


def test_wheel_installs_and_runs_the_daemon(tmp_path):
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

    # the plugins came from inside the installed package, not from this checkout
    where = subprocess.run(
        [str(py), "-c", "from ishowttsd.plugins import builtin_plugin_dir; print(builtin_plugin_dir())"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(str(env_dir)) and where.endswith("_builtin_plugins")
    r = subprocess.run([str(env_dir / "bin" / "ishowttsctl"), "--socket", str(tmp_path / "none.sock"), "status"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 3 and "not running" in r.stderr
