"""The hardware manager against a fake Jetson: a sysfs/proc/etc tree and fake tools on PATH."""

import json
import os
import socket
import sys
import types
from pathlib import Path

import pytest

from daemon_process import DaemonProcess
from ishowttsd.config import HardwareConfig
from ishowttsd.hardware import Hardware, cpu_info, parse_cpuinfo, parse_jetson_clocks, parse_l4t, parse_nvpmodel, throttle_reasons

TEGRA = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"

# the shape `jetson_clocks --show` prints on an AGX Orin
CLOCKS = """SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit
Online CPUs: 0-1
cpu0: Online=1 Governor=schedutil MinFreq={cpu_min} MaxFreq=2201600 CurrentFreq=1574400 IdleStates: WFI=1 c7=1
cpu1: Online=1 Governor=schedutil MinFreq={cpu_min} MaxFreq=2201600 CurrentFreq=1497600 IdleStates: WFI=1 c7=1
GPU MinFreq={gpu_min} MaxFreq=1300500000 CurrentFreq=1300500000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
DLA0_CORE:   Online=1 MinFreq=0 MaxFreq=1600000000 CurrentFreq=1600000000
FAN Dynamic Speed control=active hwmon4_pwm=77
NV Power Mode: MAXN
"""
UNLOCKED = CLOCKS.format(cpu_min=729600, gpu_min=306000000)
LOCKED = CLOCKS.format(cpu_min=2201600, gpu_min=1300500000)


def _w(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def make_jetson_root(root: Path, gpu_locked: bool = False, hot: bool = False) -> Path:
    _w(root, "etc/nv_tegra_release", TEGRA)
    _w(root, "proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\0")
    _w(root, "proc/loadavg", "0.52 0.58 0.59 1/389 12345\n")
    _w(root, "proc/meminfo", "MemTotal:       31546672 kB\nMemFree:        20000000 kB\nMemAvailable:   28000000 kB\n"
                             "SwapTotal:      15773320 kB\nSwapFree:       15000000 kB\n")  # fmt: skip
    _w(root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n")
    gpu = "sys/class/devfreq/17000000.ga10b"
    _w(root, f"{gpu}/cur_freq", "612000000\n")
    _w(root, f"{gpu}/min_freq", "1300500000\n" if gpu_locked else "306000000\n")
    _w(root, f"{gpu}/max_freq", "1300500000\n")
    _w(root, f"{gpu}/governor", "nvhost_podgov\n")
    _w(root, f"{gpu}/device/load", "253\n")  # per-mille
    for i, (name, milli) in enumerate([("CPU-therm", 91500 if hot else 48500), ("GPU-therm", 47000), ("tj-therm", -256000)]):
        _w(root, f"sys/class/thermal/thermal_zone{i}/type", name + "\n")
        _w(root, f"sys/class/thermal/thermal_zone{i}/temp", f"{milli}\n")
    hw = "sys/class/hwmon/hwmon1"
    _w(root, f"{hw}/name", "ina3221\n")
    for n, (label, mv, ma) in enumerate([("VDD_GPU_SOC", 5072, 1000), ("VDD_CPU_CV", 5072, 500), ("VIN_SYS_5V0", 5000, 400)], 1):
        _w(root, f"{hw}/in{n}_label", label + "\n")
        _w(root, f"{hw}/in{n}_input", f"{mv}\n")
        _w(root, f"{hw}/curr{n}_input", f"{ma}\n")
    for c in range(2):
        d = f"sys/devices/system/cpu/cpu{c}/cpufreq"
        _w(root, f"{d}/scaling_cur_freq", "1574400\n")
        _w(root, f"{d}/scaling_min_freq", "2201600\n" if gpu_locked else "729600\n")
        _w(root, f"{d}/scaling_max_freq", "2201600\n")
        _w(root, f"{d}/scaling_governor", "schedutil\n")
    _w(root, "var/lib/nvpmodel/status", "pmode:0002 fmode:quiet\n")
    return root


def make_tools(bindir: Path, clocks_file: Path, nvpmodel: bool = True, clocks_need_root: bool = False) -> Path:
    """Fake `jetson_clocks` / `nvpmodel` speaking the real output format, and a `sudo` trap."""
    bindir.mkdir(parents=True, exist_ok=True)
    if clocks_need_root:
        jc = "#!/bin/sh\necho 'jetson_clocks: must be run as root' >&2\nexit 1\n"
    else:
        jc = f'#!/bin/sh\n[ "$1" = "--show" ] || exit 2\ncat "{clocks_file}"\n'
    (bindir / "jetson_clocks").write_text(jc)
    if nvpmodel:
        (bindir / "nvpmodel").write_text('#!/bin/sh\n[ "$1" = "-q" ] || exit 2\nprintf "NV Power Mode: MAXN\\n0\\n"\n')
    (bindir / "sudo").write_text(f'#!/bin/sh\necho "$@" >> "{bindir}/sudo-was-called"\nexit 1\n')
    for f in bindir.iterdir():
        f.chmod(0o755)
    return bindir


@pytest.fixture
def jetson(tmp_path):
    root = make_jetson_root(tmp_path / "root")
    clocks = tmp_path / "clocks.txt"
    clocks.write_text(UNLOCKED)
    bindir = make_tools(tmp_path / "bin", clocks)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    hw = Hardware(HardwareConfig(performance_refresh_s=0), root=root, env=env)
    yield hw, clocks, bindir
    hw.close()
    assert not (bindir / "sudo-was-called").exists(), "the daemon must never call sudo"


def test_parsers():
    assert parse_l4t(TEGRA) == "35.4.1" and parse_l4t("garbage") is None and parse_l4t(None) is None
    st = parse_jetson_clocks(UNLOCKED)
    assert st["locked"] is False and st["gpu_locked"] is False and st["cpus"] == 2 and st["power_mode"] == "MAXN"
    assert parse_jetson_clocks(LOCKED)["locked"] is True
    assert parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: 15W\n2\n") == {"name": "15W", "id": 2}
    assert throttle_reasons(0x20 | 0x4 | 0x1) == ["gpu_idle", "sw_power_cap", "sw_thermal_slowdown"]
    assert throttle_reasons(None) is None


X86_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile
"""


def test_cpu_model_and_flags():
    x86 = parse_cpuinfo(X86_CPUINFO)
    assert x86.model == "Intel(R) Xeon(R) Platinum 8480+" and {"amx_bf16", "avx512_vnni", "avx512_bf16"} <= x86.flags
    arm = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n")
    assert arm.model == "ARMv8 Processor rev 1 (v8l)" and "i8mm" in arm.flags
    assert parse_cpuinfo("") == parse_cpuinfo("processor\t: 0\n") and not parse_cpuinfo("").flags


def test_cpu_info_is_read_once_per_root(tmp_path):
    _w(tmp_path, "proc/cpuinfo", X86_CPUINFO)
    first = cpu_info(str(tmp_path))
    _w(tmp_path, "proc/cpuinfo", "model name\t: changed\n")
    assert cpu_info(str(tmp_path)) is first and first.model.startswith("Intel")
    assert cpu_info(str(tmp_path / "none")).flags == frozenset()  # no /proc/cpuinfo: no flags, no error


def test_detects_a_jetson(jetson):
    hw, _, _ = jetson
    info = hw.detect()
    assert info["kind"] == "jetson" and info["l4t"] == "35.4.1" and info["device"] == "cuda"
    assert info["model"] == "NVIDIA Jetson AGX Orin Developer Kit"


def test_jetson_telemetry_from_sysfs(jetson):
    hw, _, _ = jetson
    t = hw.telemetry()
    assert t["kind"] == "jetson" and t["source"] == "sysfs"  # jtop only on the real root
    gpu = t["gpu"][0]
    assert gpu["load_percent"] == 25.3 and gpu["freq_mhz"] == 612.0 and gpu["max_freq_mhz"] == 1300.5
    assert t["temperatures"] == {"CPU-therm": 48.5, "GPU-therm": 47.0}  # the -256 °C zone is off
    assert t["power"]["rails"]["VDD_GPU_SOC"] == 5.07 and t["power"]["total_w"] == pytest.approx(9.61, abs=0.01)
    assert t["memory"]["total_mb"] == 30807 and t["memory"]["swap_used_mb"] == 755
    assert t["cpu"]["load"] == [0.52, 0.58, 0.59] and t["cpu"]["freq_mhz"] == [1574, 1574]
    assert t["throttling"]["thermal"] is False
    assert t["process"]["rss_mb"] > 1


def test_thermal_throttling_is_seen(tmp_path):
    root = make_jetson_root(tmp_path / "root", hot=True)
    hw = Hardware(HardwareConfig(thermal_limit_c=85), root=root, env={"PATH": ""})
    t = hw.telemetry()
    assert t["throttling"]["thermal"] is True and t["throttling"]["hot"] == {"CPU-therm": 91.5}


def test_performance_from_the_tools(jetson):
    hw, clocks, _ = jetson
    assert hw.last_performance is None  # nothing read yet, and reading it runs no tool
    perf = hw.performance()
    assert perf["clocks_locked"] is False and hw.last_performance == perf
    assert perf["jetson_clocks"]["source"] == "jetson_clocks --show"
    assert perf["nvpmodel"] == {"name": "MAXN", "id": 0, "source": "nvpmodel -q"}
    clocks.write_text(LOCKED)  # as after `sudo jetson_clocks`
    assert hw.performance()["clocks_locked"] is True


def test_performance_falls_back_to_sysfs_without_root(tmp_path):
    root = make_jetson_root(tmp_path / "root", gpu_locked=True)
    bindir = make_tools(tmp_path / "bin", tmp_path / "none", nvpmodel=False, clocks_need_root=True)
    hw = Hardware(HardwareConfig(), root=root, env={"PATH": str(bindir)})
    perf = hw.performance()
    jc = perf["jetson_clocks"]
    assert jc["source"] == "sysfs" and "must be run as root" in jc["note"]
    assert perf["clocks_locked"] is True and jc["gpu_locked"] is True and jc["cpus_locked"] is True
    assert perf["nvpmodel"]["id"] == 2 and perf["nvpmodel"]["source"] == "/var/lib/nvpmodel/status"
    assert "not found on PATH" in perf["nvpmodel"]["note"]
    assert not (bindir / "sudo-was-called").exists()


def test_cpu_only_box_without_nvml(tmp_path, monkeypatch):
    (tmp_path / "root").mkdir()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as when nvidia-ml-py is not installed
    hw = Hardware(HardwareConfig(), root=tmp_path / "root", env={"PATH": ""})
    info = hw.detect()
    assert info["kind"] == "cpu" and info["device"] == "cpu" and "not installed" in info["nvml"]
    t = hw.telemetry()
    assert t["gpu"] == [] and t["source"] == "psutil"
    assert t["memory"]["total_mb"] > 0 and len(t["cpu"]["load"]) == 3  # psutil / os fallbacks
    assert hw.performance()["clocks_locked"] is None


def test_nvml_library_that_cannot_start(tmp_path, monkeypatch):
    """nvidia-ml-py installed but no driver (NVMLError_LibraryNotFound and the like)."""
    fake = types.ModuleType("pynvml")

    def init():
        raise OSError("NVML Shared Library Not Found")

    fake.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    (tmp_path / "root").mkdir()
    info = Hardware(HardwareConfig(), root=tmp_path / "root", env={}).detect()
    assert info["kind"] == "cpu" and "NVML unavailable" in info["nvml"]


def test_nvml_discrete_gpu(tmp_path, monkeypatch):
    """A stand-in for pynvml (no NVIDIA GPU on this machine) with the real API's names."""
    fake = types.ModuleType("pynvml")
    fake.NVML_CLOCK_SM, fake.NVML_TEMPERATURE_GPU = 1, 0
    calls = []
    fake.nvmlInit = lambda: calls.append("init")
    fake.nvmlShutdown = lambda: calls.append("shutdown")
    fake.nvmlDeviceGetCount = lambda: 1
    fake.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"
    fake.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    fake.nvmlSystemGetDriverVersion = lambda: "560.35.03"
    fake.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=40)
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=2**30, total=80 * 2**30)
    fake.nvmlDeviceGetClockInfo = lambda h, c: 1410
    fake.nvmlDeviceGetMaxClockInfo = lambda h, c: 1980
    fake.nvmlDeviceGetTemperature = lambda h, s: 88
    fake.nvmlDeviceGetPowerUsage = lambda h: 350123
    fake.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700000

    def not_supported(h):
        raise RuntimeError("NVMLError_FunctionNotFound")  # an older driver: fall back to the old name

    fake.nvmlDeviceGetCurrentClocksEventReasons = not_supported
    fake.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x20 | 0x4
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    (tmp_path / "root").mkdir()
    hw = Hardware(HardwareConfig(), root=tmp_path / "root", env={})
    info = hw.detect()
    assert info["kind"] == "nvidia" and info["model"] == "NVIDIA H100 80GB HBM3" and info["driver"] == "560.35.03"
    g = hw.telemetry()["gpu"][0]
    assert g["load_percent"] == 87 and g["freq_mhz"] == 1410 and g["power_w"] == 350.1 and g["mem_used_mb"] == 1024
    assert g["throttle"] == ["sw_power_cap", "sw_thermal_slowdown"]
    assert hw.last["throttling"]["thermal"] is True and hw.last["source"] == "nvml"
    hw.close()
    assert calls == ["init", "shutdown"]


def test_daemon_on_a_fake_jetson(tmp_path):
    root = make_jetson_root(tmp_path / "root")
    clocks = tmp_path / "clocks.txt"
    clocks.write_text(UNLOCKED)
    bindir = make_tools(tmp_path / "bin", clocks)
    config = """
[engine]
default = "espeak"

[hardware]
telemetry_interval_s = 0.2
performance_refresh_s = 0
expect_nvpmodel = "MAXN"
"""
    env = {"ISHOWTTS_SYSROOT": str(root), "PATH": f"{bindir}:{os.environ['PATH']}"}
    with DaemonProcess(tmp_path, config, env=env) as d:
        d.wait_for(lambda: d.request("status")["hardware"]["telemetry"] is not None, what="telemetry")
        hw = d.request("status")["hardware"]
        assert hw["platform"]["kind"] == "jetson" and hw["platform"]["l4t"] == "35.4.1"
        assert hw["performance"]["clocks_locked"] is False and hw["telemetry"]["gpu"][0]["load_percent"] == 25.3
        out = d.ctl("status").stdout
        assert "hardware jetson: NVIDIA Jetson AGX Orin" in out and "clocks NOT locked" in out and "nvpmodel MAXN" in out
        r = d.ctl("--json", "health", check=False)
        checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
        assert r.returncode == 1 and checks["hardware:clocks"]["level"] == "warn"
        assert "ishowtts-performance" in checks["hardware:clocks"]["fix"]
        assert checks["hardware:nvpmodel"]["level"] == "ok"
        clocks.write_text(LOCKED)  # the performance unit ran
        r = d.ctl("health", check=False)
        assert r.returncode == 0, r.stdout
        # `watch` streams telemetry events
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(d.socket))
            s.sendall(b'{"id": 1, "method": "events.watch", "params": {}}\n')
            with s.makefile("rb") as f:
                json.loads(f.readline())
                while True:
                    ev = json.loads(f.readline())
                    if ev["event"] == "telemetry":
                        break
        assert ev["kind"] == "jetson" and ev["gpu"][0]["freq_mhz"] == 612.0 and ev["power"]["total_w"] > 0
        m = d.ctl("metrics").stdout
        assert "ishowtts_clocks_locked 1" in m and 'ishowtts_temperature_celsius{zone="CPU-therm"} 48.5' in m
    assert not (bindir / "sudo-was-called").exists()
