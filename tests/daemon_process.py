"""Run the real ishowttsd as a subprocess and talk to it over its real control socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ishowttsd.control import client_request

REPO = Path(__file__).resolve().parent.parent


def end_process(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM a daemon and wait; SIGKILL it if it does not stop in time. Returns its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(5)


class DaemonProcess:
    """`with DaemonProcess(tmp_path, config_text) as d: d.request("status")`."""

    def __init__(self, tmp: Path, config: str, exe: list[str] | None = None, env: dict | None = None,
                 args: list[str] = (), wait_ready: bool = True) -> None:  # fmt: skip
        self.tmp = Path(tmp)
        self.config_path = self.tmp / "ishowttsd.toml"
        self.config_path.write_text(config, encoding="utf-8")
        self.socket = self.tmp / "ctl.sock"
        self.exe = exe or [sys.executable, "-m", "ishowttsd"]
        self.env = {**os.environ, "ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = list(args)
        self.wait_ready = wait_ready
        self.proc: subprocess.Popen | None = None
        self.log_path = self.tmp / "daemon.log"

    def start(self) -> DaemonProcess:
        self._log = open(self.log_path, "wb")
        cmd = [*self.exe, "--config", str(self.config_path), "--socket", str(self.socket), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.tmp)
        if self.wait_ready:
            self.wait_for(lambda: self.request("status")["state"] == "running", timeout=60, what="the daemon to be ready")
        return self

    def request(self, method: str, params: dict | None = None, timeout: float = 10.0) -> Any:
        return client_request(self.socket, method, params, timeout=timeout)

    def wait_for(self, cond, timeout: float = 30.0, what: str = "a condition") -> None:
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode} while waiting for {what}:\n{self.log()}")
            try:
                if cond():
                    return
            except (OSError, KeyError, ValueError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what} (last error: {last!r})\n{self.log()[-4000:]}")

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the real `ishowttsctl` CLI against this daemon."""
        cmd = [sys.executable, "-m", "ishowttsd.ctl", "--socket", str(self.socket), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=self.env)
        if check and r.returncode != 0:
            raise AssertionError(f"ishowttsctl {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def raw(self, payload: bytes, read_lines: int = 1, timeout: float = 10.0) -> list[dict]:
        """Send raw bytes on a fresh connection; read back `read_lines` JSON lines."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket))
            s.sendall(payload)
            f = s.makefile("rb")
            return [json.loads(f.readline()) for _ in range(read_lines)]

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the daemon to exit by itself; returns its exit code."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            raise AssertionError(f"daemon did not stop within {timeout}s:\n{self.log()[-4000:]}")
        finally:
            self._log.close()
        return rc

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        elif self.proc is not None:
            self._log.close()


def wav_info(path: Path) -> tuple[float, float]:
    """(duration in seconds, peak absolute amplitude in [0, 1]) of a 16-bit mono WAV."""
    import wave

    import numpy as np

    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        frames = w.readframes(w.getnframes())
        rate = w.getframerate()
    samples = np.frombuffer(frames, dtype="<i2")
    return len(samples) / rate, (float(np.abs(samples).max()) / 32768.0 if len(samples) else 0.0)


def spoken_log(directory: Path) -> list[dict]:
    p = Path(directory) / "spoken.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
