"""The real Triton server for tests: nvidia-pytriton's `tritonserver` in the server's environment
(`make triton-env` builds `.venv-triton` from /usr/bin/python3), on free loopback ports, with
model repositories built from `contrib/triton/` around a tiny random-weight F5 model.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from daemon_process import spoken_log
from f5_tiny import REF_TEXT, TINY_ARCH

REPO = Path(__file__).resolve().parents[1]
CONTRIB = REPO / "contrib" / "triton" / "model_repository"
FAULTY = Path(__file__).resolve().parent / "triton_models" / "faulty"

# upstream F5-TTS's f5_tts model (src/f5_tts/runtime/triton_trtllm/model_repo_f5_tts/f5_tts/config.pbtxt):
# its batching and its inputs and output exactly; our model.py behind them
UPSTREAM_IO = """
max_batch_size: 4
dynamic_batching {
    max_queue_delay_microseconds: 1000
}
input [
  { name: "reference_wav" data_type: TYPE_FP32 dims: [-1] optional: True },
  { name: "reference_wav_len" data_type: TYPE_INT32 dims: [1] optional: True },
  { name: "reference_text" data_type: TYPE_STRING dims: [1] },
  { name: "target_text" data_type: TYPE_STRING dims: [1] }
]
output [
  { name: "waveform" data_type: TYPE_FP32 dims: [ -1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def server_python() -> Path | None:
    venv = Path(os.environ.get("ISHOWTTS_TRITON_VENV") or REPO / ".venv-triton")
    py = venv / "bin" / "python"
    return py if py.exists() else None


def require_server() -> Path:
    py = server_python()
    if py is None:
        pytest.skip("no Triton server environment: `make triton-env` builds .venv-triton (make test does)")
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tiny_params(tiny: dict, **extra: str) -> dict[str, str]:
    """The model parameters that point our model at the tiny checkpoint."""
    params = {
        "reference_audio_sample_rate": "24000", "model": "tiny", "arch": json.dumps(TINY_ARCH), "checkpoint": str(tiny["safetensors"]),
        "vocab": str(tiny["vocab"]), "vocoder": str(tiny["vocos"]), "device": "cpu", "threads": "1",
    }  # fmt: skip
    params.update(extra)
    return params


def _parameters(params: dict[str, str]) -> str:
    rows = ",\n".join(f'  {{ key: "{k}", value: {{ string_value: {json.dumps(v)} }} }}' for k, v in params.items())
    return f"parameters [\n{rows}\n]\n"


def add_ours(repo: Path, name: str, params: dict[str, str], source: str = "f5_tts") -> None:
    """One of contrib's models (its config as shipped, only its parameters replaced)."""
    config = (CONTRIB / source / "config.pbtxt").read_text()
    config = re.sub(r'^name: ".*"$', f'name: "{name}"', config, count=1, flags=re.M)
    config = re.sub(r"^parameters \[.*?^\]\n", _parameters(params), config, count=1, flags=re.S | re.M)
    _write(repo, name, config, (CONTRIB / source / "1" / "model.py").read_text())


def add_upstream(repo: Path, name: str, params: dict[str, str]) -> None:
    """A model with upstream F5-TTS's f5_tts I/O, served by our model.py."""
    config = f'name: "{name}"\nbackend: "python"\n' + UPSTREAM_IO + _parameters(params)
    _write(repo, name, config, (CONTRIB / "f5_tts" / "1" / "model.py").read_text())


def add_faulty(repo: Path, name: str = "faulty") -> None:
    config = (CONTRIB / "f5_tts" / "config.pbtxt").read_text()
    config = re.sub(r'^name: ".*"$', f'name: "{name}"', config, count=1, flags=re.M)
    config = re.sub(r"^parameters \[.*?^\]\n", "", config, count=1, flags=re.S | re.M)
    _write(repo, name, config, (FAULTY / "1" / "model.py").read_text())


def _write(repo: Path, name: str, config: str, model: str) -> None:
    d = repo / name / "1"
    d.mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(config)
    (d / "model.py").write_text(model)


class TritonServer:
    """`tritonserver` as a child in its own session, on loopback; stopped by its process group."""

    def __init__(self, repo: Path, log: Path, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.repo, self.log_path = repo, log
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen | None = None
        self._shm: set[str] = set()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0) -> TritonServer:
        py = require_server()
        cmd = [str(py), "-m", "ishowttsd.engines.triton.serve", f"--model-repository={self.repo}",
               "--grpc-address=127.0.0.1", f"--grpc-port={self.port}", "--allow-http=false", "--allow-metrics=false",
               "--model-control-mode=explicit", "--load-model=*", "--log-info=true", *self.args]  # fmt: skip
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.repo)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tritonserver exited with {self.proc.returncode}:\n{self.log()[-6000:]}")
            if "Started GRPCInferenceService" in self.log():
                self._shm = set(re.findall(r"triton_python_backend_shm_region_[\w-]+", self._stub_cmdlines()))
                return self
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"tritonserver did not start within {timeout} s:\n{self.log()[-6000:]}")

    def _stub_cmdlines(self) -> str:
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if os.getpgid(int(p.name)) == self.proc.pid:
                        out.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except (OSError, ProcessLookupError):
                    pass
        return "\n".join(out)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the server and its model stubs at once, as a crash would."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        # its stubs' shared memory, also when stopped before it was ready
        self._shm |= set(re.findall(r"triton_python_backend_shm_region_[\w-]+", self._stub_cmdlines()))
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        # its model stubs may outlive it for a moment: wait for the group and the port
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                if not port_open(self.port):
                    break
            time.sleep(0.1)
        for name in self._shm:  # a killed stub leaves its shared memory behind
            Path("/dev/shm", name).unlink(missing_ok=True)
        self._log.close()
        self.proc = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()  # a graceful stop takes seconds of model finalizing that tests do not need


def daemon_config(port: int, model: str, ref: Path) -> str:
    """A daemon config: the triton engine on `model` at `port`, espeak as the fallback, WAVs into out/."""
    return f"""
[daemon]
state_dir = "state"

[engine]
default = "triton"
fallback = "espeak"
default_voice = "me"

[engine.triton]
url = "127.0.0.1:{port}"
model = "{model}"
retry_s = 0.2
timeout_s = 60

[[voices]]
id = "me"
engine = "triton"
reference_audio = "{ref}"
reference_text = "{REF_TEXT}"

[moderation]
max_chars = 1000

[[sinks]]
type = "file"
directory = "out"
"""


def wait_said(d, out: Path, n: int, timeout: float = 120) -> list[dict]:
    """spoken.jsonl once it has `n` lines."""
    d.wait_for(lambda: len(spoken_log(out)) >= n, timeout=timeout, what=f"{n} utterances in spoken.jsonl")
    return spoken_log(out)
