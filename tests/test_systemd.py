"""The unit files pass `systemd-analyze verify` with no output at all (warnings included)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from daemon_process import REPO

UNITS = sorted((REPO / "contrib" / "systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
# Debian 12 ships systemd-analyze in the `systemd` package (contrib/system-packages.txt)
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing: run `make sysdeps` (Debian package systemd)")


def _unit_dirs() -> list[Path]:
    return [d for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if (d / "sysinit.target").exists()]


def _root_with(tmp_path: Path, units: list[tuple[str, str]]) -> tuple[Path, list[str]]:
    """A filesystem root for `verify --root`: the distribution's units (for sysinit.target and
    friends), our units in /etc/systemd/system, and an executable at every absolute Exec path."""
    root = tmp_path / "root"
    shutil.copytree(_unit_dirs()[0], root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for name, text in units:
        (etc / name).write_text(text)
        for exe in re.findall(r"^Exec\w*=[-+@!:]*(/\S+)", text, re.M):
            fake = root / exe.lstrip("/")
            fake.parent.mkdir(parents=True, exist_ok=True)
            fake.write_text("#!/bin/sh\nexit 0\n")
            fake.chmod(0o755)
    return root, [f"/etc/systemd/system/{name}" for name, _ in units]


def _verify(tmp_path: Path, units: list[tuple[str, str]]) -> subprocess.CompletedProcess:
    root, paths = _root_with(tmp_path, units)
    return subprocess.run([ANALYZE, "verify", f"--root={root}", *paths], capture_output=True, text=True, timeout=60)


def test_units_exist():
    assert {u.name for u in UNITS} == {"ishowttsd.service", "ishowtts-performance.service"}


@needs_analyze
@pytest.mark.skipif(not _unit_dirs(), reason="no systemd unit directory to verify against")
def test_units_verify_without_warnings(tmp_path):
    r = _verify(tmp_path, [(u.name, u.read_text()) for u in UNITS])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", f"systemd-analyze verify said:\n{r.stdout}{r.stderr}"


@needs_analyze
@pytest.mark.skipif(not _unit_dirs(), reason="no systemd unit directory to verify against")
def test_verify_would_catch_a_mistake(tmp_path):
    """The check above can fail: a misspelt key is reported."""
    text = (REPO / "contrib/systemd/ishowttsd.service").read_text().replace("WatchdogSec=", "WatchdogSecs=")
    r = _verify(tmp_path, [("ishowttsd.service", text)])
    assert "WatchdogSecs" in r.stderr


def test_service_contract():
    svc = (REPO / "contrib/systemd/ishowttsd.service").read_text()
    keys = dict(re.findall(r"^(\w+)=(.*)$", svc, re.M))
    assert keys["Type"] == "notify" and keys["Restart"] == "on-failure"
    assert keys["RestartPreventExitStatus"] == "78"  # the daemon's exit code on a config error
    assert set(keys["SupplementaryGroups"].split()) == {"audio", "video"}  # jtop only via usermod: it may not exist
    assert keys["RuntimeDirectory"] == "ishowtts" and "/run/ishowtts/ishowttsd.sock" in keys["ExecStart"]
    assert keys["PrivateDevices"] == "no" and "DeviceAllow" not in keys and "DevicePolicy" not in keys
    assert int(keys["WatchdogSec"]) > 0 and keys["StartLimitBurst"] and keys["StartLimitIntervalSec"]
    perf = (REPO / "contrib/systemd/ishowtts-performance.service").read_text()
    assert "ConditionPathExists=/etc/nv_tegra_release" in perf and "Type=oneshot" in perf
    assert "Before=ishowttsd.service" in perf and "User=" not in perf  # root, and only this unit
