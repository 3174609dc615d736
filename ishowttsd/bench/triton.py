"""Benchmark: our F5 engine in-process against the same model behind a Triton server.

    python -m ishowttsd.bench --engine triton --out docs/bench-triton-cpu.json

Starts its own server (nvidia-pytriton's tritonserver, from the server's environment that
`make triton-env` builds) with our model repository over the same weights as the local
engine: random full-size F5TTS_v1_Base by default (--model picks another architecture), or
the checkpoint of --config's [engine.f5]. Or takes a running server (--url, with the same
weights as --config). Measured side by side in one run, same weights, steps, seed and device:

1. remote overhead: each danmaku through our local engine and through Triton, one at a time
   (concurrency 1): time to the whole utterance and to its first audio, and their ratio;
2. N concurrent streams (1, 4, 8: each its own connection, as N daemons) sending a danmaku
   each at once, which the dynamic batcher gathers, against the same N requests one by one:
   aggregate throughput (seconds of audio per second), latency p50/p99, first audio p50.

Prints a table and writes JSON; the CPU (model and flags) and the load are recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ishowttsd.bench.cli import run_main
from ishowttsd.bench.f5 import (DANMAKU, DEFAULT_REF_TEXT, _default_reference, _median, _r, build_engine, f5_table,
                             save_random_checkpoint)  # fmt: skip

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib" / "triton" / "model_repository"


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _pct(xs: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of xs."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def write_repository(folder: Path, model: str, table: dict[str, Any], max_batch: str) -> None:
    """contrib's model (its config as shipped, with parameters for these weights)."""
    params = {"reference_audio_sample_rate": "24000", "model": str(table.get("model", "F5TTS_v1_Base")),
              "checkpoint": table["checkpoint"], "vocab": table["vocab"], "vocoder": table["vocoder"],
              "steps": str(table["steps"]), "seed": str(table.get("seed", 0)), "device": table["device"],
              "max_batch": max_batch, "state_dir": str(folder / "state")}  # fmt: skip
    if table.get("arch"):
        params["arch"] = json.dumps(table["arch"])
    rows = ",\n".join(f'  {{ key: "{k}", value: {{ string_value: {json.dumps(v)} }} }}' for k, v in params.items())
    config = (CONTRIB / model / "config.pbtxt").read_text()
    config = re.sub(r"^parameters \[.*?^\]\n", f"parameters [\n{rows}\n]\n", config, count=1, flags=re.S | re.M)
    (folder / model / "1").mkdir(parents=True)
    (folder / model / "config.pbtxt").write_text(config)
    (folder / model / "1" / "model.py").write_text((CONTRIB / model / "1" / "model.py").read_text())


class Server:
    """tritonserver in its own session on a free loopback port, killed with its group."""

    def __init__(self, python: Path, repo: Path, log: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [str(python), "-m", "ishowttsd.engines.triton.serve", f"--model-repository={repo}", "--grpc-address=127.0.0.1",
               f"--grpc-port={self.port}", "--allow-http=false", "--allow-metrics=false"]  # fmt: skip
        self.log = log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            if "Started GRPCInferenceService" in self.log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"tritonserver did not start within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._out.close()


def _timed(engine, text: str, voice) -> dict[str, float]:
    """One utterance: seconds to its first audio and to its end, and seconds of audio."""
    t0 = time.perf_counter()
    first, samples = None, 0
    for chunk in engine.synthesize(text, voice, threading.Event()):
        if first is None:
            first = time.perf_counter() - t0
        samples += len(chunk.samples)
    return {"first_s": first or 0.0, "total_s": time.perf_counter() - t0, "audio_s": samples / 24_000}


def run(args) -> dict[str, Any]:
    import torch

    from ishowttsd.engines.base import EngineContext, Voice
    from ishowttsd.engines.triton import TritonEngine, TritonSettings

    tmp = tempfile.TemporaryDirectory(prefix="ishowtts-bench-triton-")
    work = Path(tmp.name)
    table, base = f5_table(args.config)
    if not args.config:
        table["model"] = args.model
    table.update(steps=args.steps, device="cpu" if not torch.cuda.is_available() else "cuda", dtype="auto")
    table.setdefault("seed", 0)
    if args.model == "tiny":  # the tests' architecture: a quick run of the whole script
        table.update(model="tiny", arch=dict(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, text_dim=32,
                                             text_mask_padding=True, conv_layers=1))  # fmt: skip
    weights = "checkpoint" if table.get("checkpoint") else "random"
    if weights == "random":
        table = save_random_checkpoint(table, work, _log)
    ref = Path(args.reference) if args.reference else _default_reference(work)
    ref_text = args.reference_text or DEFAULT_REF_TEXT
    texts = [DANMAKU[i % len(DANMAKU)] for i in range(args.utterances)]
    load_before = os.getloadavg()

    model = "f5_tts_stream" if args.stream else "f5_tts"
    server = None
    url = args.url
    if url is None:
        python = Path(args.server_python or REPO / ".venv-triton" / "bin" / "python")
        if not python.exists():
            raise RuntimeError(f"no server environment at {python}: run `make triton-env`, or pass --url or --server-python")
        write_repository(work / "models", model, table, args.max_batch)
        _log(f"starting tritonserver with {model} ({table['model']}, {weights} weights)")
        server = Server(python, work / "models", work / "server.log")
        url = f"127.0.0.1:{server.port}"
    try:
        if server is not None:
            server.wait_ready(args.start_timeout)
        voice = Voice(id="bench", engine="triton", reference_audio=str(ref), reference_text=ref_text)

        def client() -> TritonEngine:
            e = TritonEngine(TritonSettings(url=url, model=model, timeout_s=3600), EngineContext(config=None, state_dir=work))  # type: ignore[arg-type]
            e.load(lambda *_: None)
            e.add_voice(Voice(**{**voice.to_dict(), "engine": "triton"}))
            return e

        _log(f"loading our local engine ({table['device']})")
        local = build_engine({k: v for k, v in table.items() if k != "random_weights"}, work / "local", base)
        local.load(lambda *_: None)
        local_voice = local.add_voice(Voice(id="bench", engine="f5", reference_audio=str(ref), reference_text=ref_text))
        remote = client()
        # warm-up: both sides once (the server also prepares the voice here)
        _timed(local, texts[0], local_voice)
        _timed(remote, texts[0], voice)

        _log(f"remote overhead: {len(texts)} danmaku, local then remote, one at a time")
        rows = []
        for text in texts:
            lo = _timed(local, text, local_voice)
            re_ = _timed(remote, text, voice)
            rows.append({"text": text, "audio_s": _r(re_["audio_s"], 3), "local_s": _r(lo["total_s"]), "triton_s": _r(re_["total_s"]),
                         "ratio": _r(re_["total_s"] / lo["total_s"]), "local_first_s": _r(lo["first_s"]),
                         "triton_first_s": _r(re_["first_s"]), "same_audio": abs(lo["audio_s"] - re_["audio_s"]) < 1e-3})  # fmt: skip
        del local

        levels = []
        clients = [remote] + [client() for _ in range(max(args.concurrency) - 1)]
        for c in clients[1:]:
            _timed(c, "Warm.", voice)  # its voice is on the server already; this opens its connection
        for n in args.concurrency:
            batch = [texts[i % len(texts)] for i in range(n)]
            _log(f"{n} streams at once, then the same {n} one by one")
            results: list[dict[str, float] | None] = [None] * n
            barrier = threading.Barrier(n)

            def stream(i: int) -> None:
                barrier.wait()
                results[i] = _timed(clients[i], batch[i], voice)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=stream, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            t0 = time.perf_counter()
            serial = [_timed(remote, text, voice) for text in batch]
            serial_wall = time.perf_counter() - t0
            audio = sum(r["audio_s"] for r in results)
            # one by one, request k waits for the k before it: its latency counts from the start
            queued, waited = [], 0.0
            for r in serial:
                queued.append(waited + r["total_s"])
                waited += r["total_s"]
            levels.append({
                "streams": n, "audio_s": _r(audio, 3),
                "batched": {"wall_s": _r(wall), "throughput": _r(audio / wall), "latency_p50_s": _r(_pct([r["total_s"] for r in results], 50)),
                            "latency_p99_s": _r(_pct([r["total_s"] for r in results], 99)),
                            "first_audio_p50_s": _r(_pct([r["first_s"] for r in results], 50))},
                "one_by_one": {"wall_s": _r(serial_wall), "throughput": _r(audio / serial_wall), "latency_p50_s": _r(_pct(queued, 50)),
                               "latency_p99_s": _r(_pct(queued, 99)), "single_s": _r(_median([r["total_s"] for r in serial]))},
            })  # fmt: skip
        batches = _batch_stats(url, model)
    finally:
        if server is not None:
            server.stop()
    one = next((x for x in levels if x["streams"] == 1), levels[0])
    top = levels[-1]
    hw = _cpu()
    summary = {
        "remote_overhead": _r(_median([r["ratio"] for r in rows]) - 1),
        "remote_first_audio_overhead": _r(_median([r["triton_first_s"] / r["local_first_s"] for r in rows if r["local_first_s"]]) - 1),
        f"throughput_{top['streams']}_vs_1": _r(top["batched"]["throughput"] / one["batched"]["throughput"]),
        f"p99_{top['streams']}_vs_single": _r(top["batched"]["latency_p99_s"] / one["batched"]["latency_p50_s"]),
        f"batched_vs_one_by_one_{top['streams']}": _r(top["batched"]["throughput"] / top["one_by_one"]["throughput"]),
        "model": table["model"], "weights": weights, "steps": args.steps, "device": table["device"], "server_model": model,
        "max_batch": args.max_batch, "cpu": hw["model"], "cpu_flags": hw["flags"], "cores": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }  # fmt: skip
    if table["device"] == "cuda":
        summary["gpu"] = torch.cuda.get_device_name()
    tmp.cleanup()
    return {"summary": summary, "overhead": rows, "concurrency": levels, "server_batches": batches,
            "command": "python -m ishowttsd.bench " + " ".join(sys.argv[1:])}  # fmt: skip


def _batch_stats(url: str, model: str) -> dict[str, int]:
    """How many times the server ran each batch size (what the dynamic batcher gathered)."""
    import tritonclient.grpc as grpc

    stats = grpc.InferenceServerClient(url).get_inference_statistics(model, as_json=True)["model_stats"][0]
    return {b["batch_size"]: int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def _cpu() -> dict[str, Any]:
    from ishowttsd.config import Config
    from ishowttsd.hardware import cpu_flags
    from ishowttsd.hardware import Hardware

    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "fma")
    return {"model": Hardware(Config().hardware).detect().get("model", ""), "flags": sorted(set(wanted) & cpu_flags())}


def render(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [f"Triton benchmark: {s['model']} ({s['weights']} weights), {s['steps']} steps, {s['device']} "
             f"{s['cpu']} ({s['cores']} cores; {', '.join(s['cpu_flags'])}), server model {s['server_model']}, "
             f"max_batch {s['max_batch']}", "",
             f"{'danmaku':<44} {'audio s':>7} {'local s':>8} {'triton s':>9} {'ratio':>6} {'first local/triton s':>21}"]  # fmt: skip
    for r in result["overhead"]:
        lines.append(f"{r['text'][:42]:<44} {r['audio_s']:>7.2f} {r['local_s']:>8.3f} {r['triton_s']:>9.3f} {r['ratio']:>6.3f} "
                     f"{r['local_first_s']:>10.3f}/{r['triton_first_s']:<10.3f}")  # fmt: skip
    lines += ["", f"{'streams':>7} {'mode':<11} {'wall s':>8} {'audio s/s':>9} {'p50 s':>8} {'p99 s':>8} {'first p50 s':>11}"]
    for lv in result["concurrency"]:
        b, o = lv["batched"], lv["one_by_one"]
        lines.append(f"{lv['streams']:>7} {'at once':<11} {b['wall_s']:>8.3f} {b['throughput']:>9.3f} {b['latency_p50_s']:>8.3f} "
                     f"{b['latency_p99_s']:>8.3f} {b['first_audio_p50_s']:>11.3f}")  # fmt: skip
        lines.append(f"{'':>7} {'one by one':<11} {o['wall_s']:>8.3f} {o['throughput']:>9.3f} {o['latency_p50_s']:>8.3f} "
                     f"{o['latency_p99_s']:>8.3f} {'':>11}")  # fmt: skip
    top = result["concurrency"][-1]["streams"]
    lines += ["", f"remote overhead (median triton/local - 1)   {s['remote_overhead']}   (first audio: {s['remote_first_audio_overhead']})",
              f"throughput {top} streams / 1 stream          {s[f'throughput_{top}_vs_1']}",
              f"p99 latency {top} streams / single request    {s[f'p99_{top}_vs_single']}",
              f"{top} at once / the same one by one          {s[f'batched_vs_one_by_one_{top}']}",
              f"server batches (size: count)               {result['server_batches']}"]  # fmt: skip
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ishowttsd.bench --engine triton", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="triton", choices=["triton"])
    ap.add_argument("--config", help="TOML config whose [engine.f5] table names the checkpoint (else random weights)")
    ap.add_argument("--model", default="F5TTS_v1_Base", help="architecture for random weights (F5TTS_v1_Base, F5TTS_v1_Small, tiny)")
    ap.add_argument("--url", help="a running server with the same weights (default: start one)")
    ap.add_argument("--server-python", help="the server environment's python (default: .venv-triton/bin/python)")
    ap.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                    help="the decoupled model (first audio early); --no-stream: whole responses")  # fmt: skip
    ap.add_argument("--max-batch", default="auto", help="the model's F5 max_batch: requests per forward pass (auto: 8 on CUDA, 1 on CPU)")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    ap.add_argument("--utterances", type=int, default=4, help="danmaku for the overhead comparison")
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--reference", help="reference WAV (default: the first phrase of f5-tts's basic_ref_en.wav)")
    ap.add_argument("--reference-text", help="its transcript")
    ap.add_argument("--start-timeout", type=float, default=600)
    ap.add_argument("--out", help="write the JSON result here")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.reference and not args.reference_text:
        print("bench: --reference needs --reference-text (its transcript)", file=sys.stderr)
        return 2
    return run_main(args, run, render, expected=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
