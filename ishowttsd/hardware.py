"""What the daemon runs on, and how that hardware is doing right now.

Three kinds of box:

- a Jetson (``/etc/nv_tegra_release``, ``/proc/device-tree/model``): telemetry from jtop
  (`jetson-stats`, an optional extra: AGPL, imported only when installed, and it needs
  jtop.service) or else straight from sysfs (devfreq for the GPU, thermal zones, the INA3221
  power monitors); the performance state from ``jetson_clocks --show`` and ``nvpmodel -q``,
  with sysfs and ``/var/lib/nvpmodel/status`` as the fallback when they need root;
- another NVIDIA GPU: NVML (`nvidia-ml-py`, optional): load, clocks, temperature, power and
  the throttle reasons;
- no GPU: psutil and /proc only.

Every path is taken relative to a root (``[hardware] sysroot``, or $ISHOWTTS_SYSROOT) so tests
can run the Jetson paths against a fake /sys, /proc and /etc. This module only reads: applying
a performance mode needs root and belongs to ``ishowtts-performance.service``; the daemon
never calls sudo.

All methods here block (files, subprocesses, NVML): the daemon calls them in a worker thread.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import psutil

log = logging.getLogger("ishowttsd.hardware")

SYSROOT_ENV = "ISHOWTTS_SYSROOT"

# NVML clock event ("throttle") reason bits, from nvml.h; stable across driver versions
NVML_THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
THERMAL_REASONS = {"sw_thermal_slowdown", "hw_thermal_slowdown"}
POWER_REASONS = {"sw_power_cap", "hw_power_brake_slowdown", "hw_slowdown"}

_GPU_DEVFREQ = re.compile(r"(gpu|ga10b|gv11b|gp10b|gm20b|gb10b)", re.I)


class Hardware:
    """Detects the platform once, then reads telemetry and the performance state on demand."""

    def __init__(self, cfg: Any = None, root: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.cfg = cfg
        self.env = env
        root = root or getattr(cfg, "sysroot", None) or env.get(SYSROOT_ENV) or "/"
        self.root = Path(root)
        self.use_jtop = getattr(cfg, "use_jtop", True)
        self.use_nvml = getattr(cfg, "use_nvml", True)
        self.thermal_limit_c = float(getattr(cfg, "thermal_limit_c", 85.0))
        self.command_timeout_s = float(getattr(cfg, "command_timeout_s", 5.0))
        self.perf_max_age_s = float(getattr(cfg, "performance_refresh_s", 60.0))
        self.info: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None  # the latest telemetry
        self._perf: tuple[float, dict[str, Any]] | None = None
        self._nvml: Any = None
        self._nvml_error: str | None = None
        self._jtop: Any = None
        self._jtop_error: str | None = None
        self._proc = psutil.Process()
        self._cpu_prev: tuple[float, float, float] | None = None  # (mono, system busy s, own cpu s)
        self._procs_prev: dict[int, tuple[str, float]] = {}
        self._contention_last: dict[str, Any] | None = None
        self._clocks_tool_error: str | None = None
        self._lock = threading.RLock()  # the telemetry task and a health request may sample at once

    # -- paths and helpers -------------------------------------------------------------------

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def _read(self, p: str | Path) -> str | None:
        path = p if isinstance(p, Path) else self.path(p)
        try:
            return path.read_text(encoding="utf-8", errors="replace").replace("\0", "").strip()
        except OSError:
            return None

    def _read_int(self, p: str | Path) -> int | None:
        s = self._read(p)
        try:
            return int(s) if s is not None else None
        except ValueError:
            return None

    def run_tool(self, name: str, *args: str) -> tuple[int | None, str, str]:
        """Run a read-only tool found on PATH (never through sudo). (rc, stdout, error)."""
        exe = shutil.which(name, path=self.env.get("PATH", os.defpath))
        if exe is None:
            return None, "", f"{name} not found on PATH"
        env = {k: v for k, v in self.env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        try:
            cp = subprocess.run(
                [exe, *args], capture_output=True, text=True, timeout=self.command_timeout_s, env=env, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return None, "", f"{name} {' '.join(args)} took longer than {self.command_timeout_s} s"
        except OSError as e:
            return None, "", f"{name}: {e}"
        err = (cp.stderr or "").strip().splitlines()
        return cp.returncode, cp.stdout, err[-1] if err else ""

    # -- detection -----------------------------------------------------------------------------

    def detect(self) -> dict[str, Any]:
        """Which kind of box this is: jetson, nvidia (discrete GPU) or cpu."""
        model = self._read("/proc/device-tree/model")
        tegra = self._read("/etc/nv_tegra_release")
        cpu = {"count": psutil.cpu_count() or os.cpu_count() or 1, "model": self._cpu_model()}
        if tegra is not None or (model and re.search(r"jetson|nvidia", model, re.I)):
            info = {"kind": "jetson", "model": model or "NVIDIA Jetson", "l4t": parse_l4t(tegra), "device": "cuda", "cpu": cpu}
        else:
            gpus = self._nvml_gpus()
            if gpus:
                info = {"kind": "nvidia", "model": gpus[0]["name"], "gpus": gpus, "device": "cuda", "cpu": cpu}
                info["driver"] = self._nvml_call("nvmlSystemGetDriverVersion")
            else:
                info = {"kind": "cpu", "model": cpu["model"], "device": "cpu", "cpu": cpu}
                if self._nvml_error:
                    info["nvml"] = self._nvml_error
        self.info = info
        return info

    def _cpu_model(self) -> str:
        return cpu_info(str(self.root)).model

    @property
    def kind(self) -> str:
        return (self.info or self.detect())["kind"]

    # -- NVML -------------------------------------------------------------------------------------

    def _nvml_lib(self):
        if self._nvml is not None or self._nvml_error is not None or not self.use_nvml:
            return self._nvml
        try:
            import pynvml  # nvidia-ml-py: the optional `nvidia` extra
        except ImportError:
            self._nvml_error = "nvidia-ml-py is not installed (pip install nvidia-ml-py, or the [nvidia] extra from the checkout)"
            return None
        try:
            pynvml.nvmlInit()
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self._nvml_error = f"NVML unavailable: {e}"
            return None
        self._nvml = pynvml
        return pynvml

    def _nvml_call(self, fn: str, *args):
        nv = self._nvml_lib()
        if nv is None:
            return None
        try:
            v = getattr(nv, fn)(*args)
        except Exception:  # NotSupported on this GPU, or a function this driver lacks
            return None
        return v.decode() if isinstance(v, bytes) else v

    def _nvml_gpus(self) -> list[dict[str, Any]]:
        nv = self._nvml_lib()
        if nv is None:
            return []
        n = self._nvml_call("nvmlDeviceGetCount") or 0
        out = []
        for i in range(n):
            h = self._nvml_call("nvmlDeviceGetHandleByIndex", i)
            if h is not None:
                out.append({"index": i, "name": self._nvml_call("nvmlDeviceGetName", h) or f"GPU {i}"})
        return out

    def _nvml_telemetry(self) -> list[dict[str, Any]]:
        nv = self._nvml_lib()
        if nv is None:
            return []
        gpus = []
        for g in self._nvml_gpus():
            h = self._nvml_call("nvmlDeviceGetHandleByIndex", g["index"])
            util = self._nvml_call("nvmlDeviceGetUtilizationRates", h)
            mem = self._nvml_call("nvmlDeviceGetMemoryInfo", h)
            power = self._nvml_call("nvmlDeviceGetPowerUsage", h)
            limit = self._nvml_call("nvmlDeviceGetEnforcedPowerLimit", h)
            reasons = self._nvml_call("nvmlDeviceGetCurrentClocksEventReasons", h)
            if reasons is None:
                reasons = self._nvml_call("nvmlDeviceGetCurrentClocksThrottleReasons", h)
            gpus.append({
                "name": g["name"],
                "index": g["index"],
                "load_percent": None if util is None else util.gpu,
                "freq_mhz": self._nvml_call("nvmlDeviceGetClockInfo", h, nv.NVML_CLOCK_SM),
                "max_freq_mhz": self._nvml_call("nvmlDeviceGetMaxClockInfo", h, nv.NVML_CLOCK_SM),
                "temp_c": self._nvml_call("nvmlDeviceGetTemperature", h, nv.NVML_TEMPERATURE_GPU),
                "power_w": None if power is None else round(power / 1000, 1),
                "power_limit_w": None if limit is None else round(limit / 1000, 1),
                "mem_used_mb": None if mem is None else round(mem.used / 2**20),
                "mem_total_mb": None if mem is None else round(mem.total / 2**20),
                "throttle": throttle_reasons(reasons),
            })  # fmt: skip
        return gpus

    # -- jtop -------------------------------------------------------------------------------------

    def _jtop_stats(self) -> dict[str, Any] | None:
        """jtop's stats dict, or None when jetson-stats or jtop.service is not there."""
        if not self.use_jtop or self._jtop_error is not None or self.root != Path("/"):
            return None
        if self._jtop is None:
            try:
                from jtop import jtop  # jetson-stats (AGPL): only when the user installed it
            except ImportError:
                self._jtop_error = "jetson-stats is not installed"
                return None
            try:
                j = jtop()
                j.start()  # connects to jtop.service's socket
            except Exception as e:
                self._jtop_error = f"jtop.service unreachable: {e}"
                log.info("jtop not used (%s); reading sysfs instead", self._jtop_error)
                return None
            self._jtop = j
        try:
            if not self._jtop.ok(spin=True):
                raise RuntimeError("jtop stopped")
            return dict(self._jtop.stats)
        except Exception as e:
            self._jtop_error = f"jtop failed: {e}"
            log.warning("jtop failed (%s); reading sysfs from now on", e)
            self.close()
            return None

    # -- telemetry --------------------------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        """One sample of everything: CPU, memory, temperatures, GPU, power, this process."""
        with self._lock:
            return self._telemetry()

    def _telemetry(self) -> dict[str, Any]:
        info = self.info or self.detect()
        t: dict[str, Any] = {"ts": round(time.time(), 3), "kind": info["kind"], "source": "psutil"}
        t["cpu"] = self._cpu()
        t["memory"] = self._memory()
        t["temperatures"] = self.temperatures()
        t["process"] = self._process()
        if info["kind"] == "jetson":
            stats = self._jtop_stats()
            gpu = self.jetson_gpu()
            t["gpu"] = [gpu] if gpu else []
            t["power"] = self.jetson_power()
            t["source"] = "sysfs"
            if stats is not None:
                t["source"] = "jtop"
                _merge_jtop(t, stats)
        elif info["kind"] == "nvidia":
            t["gpu"] = self._nvml_telemetry()
            t["source"] = "nvml"
        else:
            t["gpu"] = []
        hot = {k: v for k, v in t["temperatures"].items() if v is not None and v >= self.thermal_limit_c}
        throttled = sorted({r for g in t["gpu"] for r in g.get("throttle") or [] if r in THERMAL_REASONS | POWER_REASONS})
        t["throttling"] = {"hot": hot, "gpu_reasons": throttled, "thermal": bool(hot) or bool(THERMAL_REASONS & set(throttled))}
        self.last = t
        return t

    def _cpu(self) -> dict[str, Any]:
        load = self._read("/proc/loadavg")
        try:
            load_avg = [float(x) for x in (load or "").split()[:3]]
        except ValueError:
            load_avg = []
        if len(load_avg) != 3:
            load_avg = [round(x, 2) for x in os.getloadavg()]
        freqs = []
        for d in sorted(self.path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
            cur = self._read_int(d / "scaling_cur_freq")
            if cur is not None:
                freqs.append(round(cur / 1000))
        out = {
            "count": psutil.cpu_count() or 1,
            "percent": psutil.cpu_percent(None),
            "load": load_avg,
            "freq_mhz": freqs,
            "governor": self._read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        }
        out.update(self._cpu_contention())
        return out

    def cpu_contention(self) -> dict[str, Any]:
        """How many cores other processes used since the last call (and who used most)."""
        with self._lock:
            return self._cpu_contention()

    def _cpu_contention(self) -> dict[str, Any]:
        now = time.monotonic()
        # measure over windows of at least a second: a call right after another (telemetry
        # tick, then a health request) would otherwise see a few ms of noise or nothing at all
        if self._cpu_prev is not None and now - self._cpu_prev[0] < 1.0 and self._contention_last is not None:
            return self._contention_last
        ct = psutil.cpu_times()
        busy = sum(getattr(ct, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
        own_t = self._proc.cpu_times()
        own = own_t.user + own_t.system + own_t.children_user + own_t.children_system
        prev, self._cpu_prev = self._cpu_prev, (now, busy, own)
        procs = self._sample_procs()
        prev_procs, self._procs_prev = self._procs_prev, procs
        if prev is None or now - prev[0] < 0.05:
            return {"others_cores": None, "own_cores": None, "top_others": []}
        dt = now - prev[0]
        own_cores = max(0.0, (own - prev[2]) / dt)
        others = max(0.0, (busy - prev[1]) / dt - own_cores)
        tops = []
        for pid, (name, cpu) in procs.items():
            if pid in prev_procs and pid != os.getpid():
                used = (cpu - prev_procs[pid][1]) / dt
                if used >= 0.05:
                    tops.append({"pid": pid, "name": name, "cores": round(used, 2)})
        tops.sort(key=lambda p: -p["cores"])
        self._contention_last = {"others_cores": round(others, 2), "own_cores": round(own_cores, 2), "top_others": tops[:3]}
        return self._contention_last

    def _sample_procs(self) -> dict[int, tuple[str, float]]:
        out = {}
        for p in psutil.process_iter(["name", "cpu_times"]):
            try:
                t = p.info["cpu_times"]
                if t is not None:
                    out[p.pid] = (p.info["name"] or "?", t.user + t.system)
            except (psutil.Error, KeyError):
                continue
        return out

    def _memory(self) -> dict[str, Any]:
        fields: dict[str, int] = {}
        for line in (self._read("/proc/meminfo") or "").splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[key] = int(parts[0])  # kB
        if "MemTotal" not in fields:
            vm = psutil.virtual_memory()
            fields = {"MemTotal": vm.total // 1024, "MemAvailable": vm.available // 1024}
        total = fields["MemTotal"]
        avail = fields.get("MemAvailable", fields.get("MemFree", 0))
        out = {
            "total_mb": round(total / 1024),
            "available_mb": round(avail / 1024),
            "available_bytes": avail * 1024,  # exact, for metrics
            "used_percent": round(100 * (total - avail) / total, 1) if total else None,
        }
        if "SwapTotal" in fields:
            out["swap_used_mb"] = round((fields["SwapTotal"] - fields.get("SwapFree", 0)) / 1024)
        return out

    def _process(self) -> dict[str, Any]:
        with self._proc.oneshot():
            mi = self._proc.memory_info()
            return {"pid": self._proc.pid, "rss_mb": round(mi.rss / 2**20, 1), "rss_bytes": mi.rss, "threads": self._proc.num_threads()}

    def rss_bytes(self) -> int:
        return self._proc.memory_info().rss

    def temperatures(self) -> dict[str, float]:
        """Thermal zones by type, in °C (the kernel reports millidegrees)."""
        out: dict[str, float] = {}
        for zone in sorted(self.path("/sys/class/thermal").glob("thermal_zone*")):
            name = self._read(zone / "type") or zone.name
            milli = self._read_int(zone / "temp")
            if milli is None or milli <= -40000:  # -256 °C etc.: a zone that is off
                continue
            out[name] = round(milli / 1000, 1)
        return out

    def jetson_gpu(self) -> dict[str, Any] | None:
        """The integrated GPU from devfreq: load (the kernel gives per-mille) and frequencies."""
        for d in sorted(self.path("/sys/class/devfreq").glob("*")):
            of_name = self._read(d / "device" / "of_node" / "name") or ""
            if not (_GPU_DEVFREQ.search(d.name) or of_name == "gpu"):
                continue
            load = self._read_int(d / "device" / "load")
            if load is None:
                load = self._read_int("/sys/devices/gpu.0/load")
            cur, lo, hi = (self._read_int(d / f) for f in ("cur_freq", "min_freq", "max_freq"))
            return {
                "name": d.name,
                "load_percent": None if load is None else round(load / 10, 1),
                "freq_mhz": _mhz(cur),
                "min_freq_mhz": _mhz(lo),
                "max_freq_mhz": _mhz(hi),
                "governor": self._read(d / "governor"),
                "throttle": [],
            }
        return None

    def jetson_power(self) -> dict[str, Any]:
        """Power rails from the INA3221 monitors (mV × mA), with their total when labelled."""
        rails: dict[str, float] = {}
        for hw in sorted(self.path("/sys/class/hwmon").glob("hwmon*")) + sorted(
            self.path("/sys/bus/i2c/drivers/ina3221").glob("*/hwmon/hwmon*")
        ):
            if (self._read(hw / "name") or "") != "ina3221":
                continue
            for label_file in sorted(hw.glob("in*_label")):
                n = label_file.name[2:].split("_")[0]
                mv, ma = self._read_int(hw / f"in{n}_input"), self._read_int(hw / f"curr{n}_input")
                label = self._read(label_file)
                if label and mv is not None and ma is not None:
                    rails[label] = round(mv * ma / 1e6, 2)
        total = rails.get("VDD_IN") or rails.get("POM_5V_IN")
        if total is None and rails:
            total = round(sum(rails.values()), 2)
        return {"total_w": total, "rails": rails}

    # -- performance state -------------------------------------------------------------------------

    def performance(self, refresh: bool = False) -> dict[str, Any]:
        """jetson_clocks and nvpmodel state (cached for a minute: they run subprocesses)."""
        with self._lock:
            return self._performance(refresh)

    def _performance(self, refresh: bool) -> dict[str, Any]:
        now = time.monotonic()
        if not refresh and self._perf is not None and now - self._perf[0] < self.perf_max_age_s:
            return self._perf[1]
        info = self.info or self.detect()
        if info["kind"] == "jetson":
            perf = {"jetson_clocks": self.jetson_clocks_state(), "nvpmodel": self.nvpmodel_state()}
            perf["clocks_locked"] = perf["jetson_clocks"]["locked"]
        else:
            perf = {"clocks_locked": None, "governor": self._read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")}
        self._perf = (now, perf)
        return perf

    @property
    def last_performance(self) -> dict[str, Any] | None:
        """The performance state as last read (None before the first read), without reading again."""
        perf = self._perf
        return perf[1] if perf else None

    def jetson_clocks_state(self) -> dict[str, Any]:
        # it needs root on most JetPack releases; once refused, stop asking every minute
        if self._clocks_tool_error is None:
            rc, out, err = self.run_tool("jetson_clocks", "--show")
            if rc == 0 and out.strip():
                st = parse_jetson_clocks(out)
                st["source"] = "jetson_clocks --show"
                return st
            self._clocks_tool_error = err or f"exit {rc}"
        st = self._clocks_from_sysfs()
        st["source"] = "sysfs"
        st["note"] = f"jetson_clocks --show unavailable ({self._clocks_tool_error}); read sysfs instead"
        return st

    def _clocks_from_sysfs(self) -> dict[str, Any]:
        gpu = self.jetson_gpu()
        cpus = []
        for d in sorted(self.path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
            lo, hi = self._read_int(d / "scaling_min_freq"), self._read_int(d / "scaling_max_freq")
            if lo is not None and hi is not None:
                cpus.append({"cpu": d.parent.name, "min_khz": lo, "max_khz": hi, "locked": lo == hi})
        gpu_locked = None if gpu is None or gpu["min_freq_mhz"] is None else gpu["min_freq_mhz"] == gpu["max_freq_mhz"]
        parts = [x for x in [gpu_locked, *(c["locked"] for c in cpus)] if x is not None]
        return {"locked": all(parts) if parts else None, "gpu_locked": gpu_locked, "cpus_locked": all(c["locked"] for c in cpus) if cpus else None}

    def nvpmodel_state(self) -> dict[str, Any]:
        rc, out, err = self.run_tool("nvpmodel", "-q")
        if rc == 0:
            st = parse_nvpmodel(out)
            if st["name"] is not None or st["id"] is not None:
                st["source"] = "nvpmodel -q"
                return st
        status = self._read("/var/lib/nvpmodel/status") or ""
        m = re.search(r"pmode:(\d+)", status)
        return {
            "name": None,
            "id": int(m.group(1)) if m else None,
            "source": "/var/lib/nvpmodel/status",
            "note": f"nvpmodel -q unavailable ({err or f'exit {rc}'})",
        }

    # -- reports -----------------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        """One telemetry sample (detecting the platform first if needed), performance refreshed
        when due. Blocking: call it from a worker thread."""
        if self.info is None:
            self.detect()
        self.performance()
        return self.telemetry()

    def sample_for_health(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """A fresh (telemetry, performance) pair for judging health: CPU use by other processes
        is measured over half a second. Blocking: call it from a worker thread."""
        self.cpu_contention()
        time.sleep(0.5)
        perf = self.performance()
        return self.telemetry(), perf

    def snapshot(self) -> dict[str, Any]:
        """What `status` shows: the platform, the last telemetry and the cached performance state."""
        return {
            "platform": self.info,
            "root": str(self.root),
            "performance": self.last_performance,
            "telemetry": self.last,
            "jtop": None if self._jtop is not None else self._jtop_error,
            "nvml": None if self._nvml is not None else self._nvml_error,
        }

    def close(self) -> None:
        if self._jtop is not None:
            try:
                self._jtop.close()
            except Exception:
                pass
            self._jtop = None
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None


# -- the CPU's model and feature flags --------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and feature flags (x86 `flags`, Arm `Features`), from /proc/cpuinfo."""

    model: str
    flags: frozenset[str]


def parse_cpuinfo(text: str) -> CpuInfo:
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if not model and key in ("model name", "Model", "Hardware", "cpu model"):
            model = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return CpuInfo(model, frozenset(flags))


@functools.cache
def cpu_info(root: str = "/") -> CpuInfo:
    """The CPU under `root` (empty where there is no /proc/cpuinfo), read once."""
    try:
        text = (Path(root) / "proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)


def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags, read once."""
    return cpu_info().flags


def cpu_has_bf16(torch=None) -> bool:
    """True when the CPU does bf16 matmuls natively (AVX512-BF16 or AMX); with `torch` given,
    also when its kernels report that capability (where /proc/cpuinfo says nothing)."""
    if cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return True
    if torch is not None:
        try:
            return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")
        except Exception:
            return False
    return False


def cpu_has_amx() -> bool:
    """True when the CPU has AMX tiles for bf16 (Sapphire Rapids and later)."""
    return "amx_bf16" in cpu_flags()


def cpu_has_vnni() -> bool:
    """AVX512-VNNI, the kernels fbgemm's dynamic linear has for u8 x s8 with int32 sums (AVX-VNNI
    alone is not assumed: fbgemm may run its AVX2 path there)."""
    return "avx512_vnni" in cpu_flags()


def parse_l4t(text: str | None) -> str | None:
    """'# R35 (release), REVISION: 4.1, GCID: ...' -> '35.4.1'."""
    if not text:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def parse_jetson_clocks(text: str) -> dict[str, Any]:
    """`jetson_clocks --show`: locked when the GPU's and every online CPU's min == max."""
    gpu = None
    cpus = []
    mode = None
    for line in text.splitlines():
        line = line.strip()
        kv = dict(re.findall(r"(\w+)=(\S+)", line))
        if re.match(r"cpu\d+:", line) and kv.get("Online", "1") == "1" and "MinFreq" in kv:
            cpus.append({"cpu": line.split(":")[0], "min_khz": int(kv["MinFreq"]), "max_khz": int(kv["MaxFreq"]),
                         "cur_khz": int(kv.get("CurrentFreq", 0)), "governor": kv.get("Governor")})  # fmt: skip
        elif line.startswith("GPU ") and "MinFreq" in kv:
            gpu = {"min_hz": int(kv["MinFreq"]), "max_hz": int(kv["MaxFreq"]), "cur_hz": int(kv.get("CurrentFreq", 0))}
        elif line.startswith("NV Power Mode:"):
            mode = line.split(":", 1)[1].strip()
    gpu_locked = None if gpu is None else gpu["min_hz"] == gpu["max_hz"]
    cpus_locked = all(c["min_khz"] == c["max_khz"] for c in cpus) if cpus else None
    parts = [x for x in (gpu_locked, cpus_locked) if x is not None]
    return {
        "locked": all(parts) if parts else None,
        "gpu_locked": gpu_locked,
        "cpus_locked": cpus_locked,
        "gpu": gpu,
        "cpus": len(cpus),
        "power_mode": mode,
    }


def parse_nvpmodel(text: str) -> dict[str, Any]:
    """`nvpmodel -q`: 'NV Power Mode: MAXN' followed by the mode id on its own line."""
    name = mode_id = None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            name = line.split(":", 1)[1].strip() or None
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                mode_id = int(lines[i + 1])
    return {"name": name, "id": mode_id}


def thermal_detail(throttling: dict[str, Any]) -> str:
    """What is hot, in words, from telemetry's `throttling`: the zones over the limit, else the
    GPU's thermal throttle reasons."""
    hot = ", ".join(f"{k} {v} °C" for k, v in (throttling.get("hot") or {}).items())
    return hot or ", ".join(throttling.get("gpu_reasons") or [])


def throttle_reasons(mask: int | None) -> list[str] | None:
    if mask is None:
        return None
    return [name for bit, name in NVML_THROTTLE_REASONS.items() if mask & bit]


def _mhz(hz: int | None) -> float | None:
    return None if hz is None else round(hz / 1e6, 1)


def _merge_jtop(t: dict[str, Any], stats: dict[str, Any]) -> None:
    """Lay jtop's numbers over the sysfs ones (jtop knows the board's rails and zone names)."""
    if isinstance(stats.get("GPU"), (int, float)) and t["gpu"]:
        t["gpu"][0]["load_percent"] = float(stats["GPU"])
    temps = {k[5:]: float(v) for k, v in stats.items() if k.startswith("Temp ") and isinstance(v, (int, float))}
    if temps:
        t["temperatures"] = {**t["temperatures"], **temps}
    tot = stats.get("Power TOT")
    if isinstance(tot, (int, float)):
        t["power"]["total_w"] = round(tot / 1000, 2)  # jtop gives mW
    if "jetson_clocks" in stats:
        t["jetson_clocks"] = stats["jetson_clocks"]
    if "nvp model" in stats:
        t["nvpmodel"] = stats["nvp model"]
