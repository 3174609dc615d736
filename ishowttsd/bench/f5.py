"""Benchmark: our F5-TTS engine against upstream `f5_tts.api.F5TTS.infer()`, side by side.

    python -m ishowttsd.bench --engine f5 --compare-upstream --out bench.json

One process, one run: the same weights (a configured checkpoint, or full-size F5TTS_v1_Base
with every parameter random, saved to a temporary checkpoint that both sides load through
their own loaders), the same reference, the same danmaku, the same steps and device. Upstream
runs through its own `load_model`/`load_vocoder` and `F5TTS.infer()`; only the lookup of the
model's config file by name is bypassed, so that any architecture (also the tests' tiny one)
can be compared. Warm-up first, then timed runs; medians. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ishowttsd.bench.cli import run_main

# a fixed set of danmaku: Chinese and English, short and long (all >= 10 UTF-8 bytes)
DANMAKU = [
    "主播今天状态真好！",
    "Nice play, that was insane!",
    "这波操作太秀了，再来一把。",
    "Can you say hi to my friend Tom?",
    "谢谢老板的火箭，老板大气，祝老板天天开心。",
    "What game are you playing next after this one?",
    "晚上好，刚下班就来看直播了。",
    "Thanks for the stream, see you tomorrow!",
]
THREE_SENTENCES = "大家晚上好，欢迎来到直播间。今天我们继续挑战最高难度！Remember to follow if you like the stream."
# The default reference is the first phrase of f5-tts's own example voice (basic_ref_en.wav,
# "Some call me nature, others call me mother nature."), cut in the pause after the comma at
# 2.5 s: a short reference keeps the default run within 15 minutes on a 2-core CPU.
DEFAULT_REF_TEXT = "Some call me nature."
DEFAULT_REF_CUT_S = 2.5


def _default_reference(work: Path) -> Path:
    from importlib.resources import files

    import soundfile as sf

    src = Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))
    wav, sr = sf.read(str(src), dtype="float32")
    out = work / "reference.wav"
    sf.write(str(out), wav[: int(DEFAULT_REF_CUT_S * sr)], sr)
    return out


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _r(x: float | None, n: int = 4) -> float | None:
    return None if x is None else round(x, n)


class _Ctx:
    """Just enough of Config for an engine built outside the daemon."""

    def __init__(self, base: Path | None) -> None:
        self.base = base

    def resolve(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() or self.base is None else self.base / q


def build_engine(table: dict[str, Any], state_dir: Path, base: Path | None):
    from ishowttsd.engines.base import EngineContext
    from ishowttsd.engines.f5 import F5Engine, F5Settings

    return F5Engine(F5Settings(**table), EngineContext(config=_Ctx(base), state_dir=state_dir))


def save_random_checkpoint(table: dict[str, Any], folder: Path, log) -> dict[str, Any]:
    """Full-size random weights in the release formats (EMA safetensors + Vocos folder)."""
    import shutil

    from safetensors.torch import save_file

    from ishowttsd.engines.f5 import (
        ARCHS, build_model, default_vocab_path, load_vocab, randomize, release_state_dict, save_random_vocos,
    )  # fmt: skip

    arch = {**ARCHS.get(table.get("model", "F5TTS_v1_Base"), {}), **table.get("arch", {})}
    log(f"building {table.get('model', 'F5TTS_v1_Base')} with random weights")
    model = build_model(arch, load_vocab(default_vocab_path()))
    randomize(model, seed=0)
    save_file(release_state_dict(model), str(folder / "model.safetensors"))
    shutil.copyfile(default_vocab_path(), folder / "vocab.txt")
    voc_dir = save_random_vocos(folder / "vocos", seed=1, std=0.02)
    del model
    return {**table, "checkpoint": str(folder / "model.safetensors"), "vocab": str(folder / "vocab.txt"),
            "vocoder": str(voc_dir), "random_weights": False}  # fmt: skip


def build_upstream(table: dict[str, Any], device: str):
    """An `f5_tts.api.F5TTS` built with upstream's own loaders from the same files."""
    import warnings

    with warnings.catch_warnings():  # pydub, jieba and torchaudio warn at import time
        warnings.simplefilter("ignore")
        import f5_tts.api as api
        from f5_tts.infer.utils_infer import load_model, load_vocoder
        from f5_tts.model import DiT

    from ishowttsd.engines.f5 import ARCHS

    arch = {**ARCHS.get(table.get("model", "F5TTS_v1_Base"), {}), **table.get("arch", {})}
    up = api.F5TTS.__new__(api.F5TTS)
    up.mel_spec_type, up.target_sample_rate = "vocos", 24_000
    up.ode_method, up.use_ema, up.device = "euler", table.get("use_ema", True), device
    up.vocoder = load_vocoder("vocos", True, table["vocoder"], device)
    up.ema_model = load_model(DiT, arch, table["checkpoint"], "vocos", table["vocab"], "euler", up.use_ema, device)
    return up


def _quiet(*_a, **_k) -> None:
    pass


def _upstream_call(fn, *a, **k):
    """Upstream's stdout chatter and its dependencies' deprecation warnings kept out of the way."""
    import contextlib
    import io
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def run(args) -> dict[str, Any]:
    import torch

    log = (lambda m: print(f"[bench {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True))
    table, base = f5_table(args.config)
    table["steps"] = args.steps
    table.setdefault("seed", 0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    table["device"] = device
    texts = DANMAKU[: args.utterances]
    tmp = tempfile.TemporaryDirectory(prefix="ishowtts-bench-")
    work = Path(tmp.name)
    if args.reference and not args.reference_text:
        raise SystemExit("bench: --reference needs --reference-text (its transcript)")
    ref = Path(args.reference) if args.reference else _default_reference(work)
    ref_text = args.reference_text or DEFAULT_REF_TEXT
    load_before = os.getloadavg()
    weights = "checkpoint"
    if not table.get("checkpoint"):
        weights = "random"
        table = save_random_checkpoint(table, work, log)
    state = work / "state"

    from ishowttsd.engines.base import Voice

    voice = Voice(id="bench", engine="f5", reference_audio=str(ref), reference_text=ref_text)
    log(f"loading our engine ({device}, fp32)")
    t0 = time.perf_counter()
    ours = build_engine({**table, "fast": False, "compile": False}, state, base)
    ours.load(lambda *_: None)
    ours.add_voice(voice)
    load_s = time.perf_counter() - t0
    half_device = device.startswith("cuda")
    fp32_dtype = "fp32"
    if half_device:  # the fp32 side on GPU is our engine in fp32, the fast side fp16 (+ compile if asked)
        ours = build_engine({**table, "dtype": "fp32"}, state, base)
        ours.load(lambda *_: None)
        ours.add_voice(voice)

    def ours_once(text: str) -> tuple[float, float, int]:
        cancel = threading.Event()
        t = time.perf_counter()
        first = None
        n = 0
        for chunk in ours.synthesize(text, voice, cancel):
            if first is None:
                first = time.perf_counter() - t
            n += len(chunk.samples)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t, first or 0.0, n

    up = None
    if args.compare_upstream:
        log("loading upstream f5_tts.api.F5TTS (its own load_model / load_vocoder)")
        up = _upstream_call(build_upstream, table, device)

    def up_once(text: str) -> tuple[float, int]:
        t = time.perf_counter()
        wav, sr, _ = _upstream_call(up.infer, str(ref), ref_text, text, show_info=_quiet, progress=None,
                                    nfe_step=args.steps, seed=0, cfg_strength=table.get("cfg_strength", 2.0),
                                    sway_sampling_coef=table.get("sway_sampling_coef", -1.0))  # fmt: skip
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t, len(wav)

    log("warm-up")
    ours.warmup(lambda *_: None)
    if up is not None:  # loads jieba, caches the preprocessed reference, touches every kernel
        _upstream_call(up.infer, str(ref), ref_text, texts[0], show_info=_quiet, progress=None, nfe_step=2, seed=0)

    rows = []
    fp32_mels: dict[str, Any] = {}
    for i, text in enumerate(texts):
        o_times, u_times = [], []
        for _ in range(args.runs):
            if up is not None:
                ut, un = up_once(text)
                u_times.append(ut)
            ot, ottfa, on = ours_once(text)
            o_times.append(ot)
        fp32_mels[text] = torch.cat([m.float().cpu() for m in ours.last_mel], dim=0)
        row = {"text": text, "ours_s": _median(o_times), "ours_audio_s": on / 24000, "ours_ttfa_s": ottfa}
        if up is not None:
            row.update({"upstream_s": _median(u_times), "upstream_audio_s": un / 24000,
                        "speedup": _median(u_times) / _median(o_times)})  # fmt: skip
        row["ours_rtf"] = row["ours_s"] / row["ours_audio_s"]
        if up is not None:
            row["upstream_rtf"] = row["upstream_s"] / row["upstream_audio_s"]
        rows.append(row)
        log(f"{i + 1}/{len(texts)} ours {row['ours_s']:.2f} s" + (f", upstream {row['upstream_s']:.2f} s" if up else ""))

    log(f"batch of {len(texts)} queued utterances")
    voices = [voice] * len(texts)
    t = time.perf_counter()
    ours.synthesize_batch(texts, voices)
    batch_s = time.perf_counter() - t
    pass_batch = ours._pass_batch()
    forced_s = None
    if pass_batch < len(texts):  # CPU: the engine runs one per pass; show what one padded pass would cost
        log(f"the same {len(texts)} forced into length-grouped passes of up to 8 (the CUDA policy), for comparison")
        configured = ours.settings.max_batch
        ours.settings.max_batch = 8
        try:
            t = time.perf_counter()
            ours.synthesize_batch(texts, voices)
            forced_s = time.perf_counter() - t
        finally:
            ours.settings.max_batch = configured
    solo_sum = sum(r["ours_s"] for r in rows)
    up_sum = sum(r["upstream_s"] for r in rows) if up is not None else None

    log("three-sentence text: time to first audio")
    tt, ttfa, tn = ours_once(THREE_SENTENCES)

    fast: dict[str, Any] = {}
    modes: dict[str, Any] = {}
    if not args.no_fast:
        from ishowttsd.engines.f5 import rel_error

        log("fast mode" + (" (GPU half precision)" if half_device else " (CPU: bf16 and int8)"))
        variants = [{"dtype": args.gpu_dtype, "compile": args.compile}] if half_device else [
            {"fast": True},  # what `fast = true` picks on this CPU
            {"fast": True, "fast_mode": "int8"},
            {"fast": True, "fast_mode": "bf16"},
        ]  # fmt: skip
        engines = []
        for v in variants:
            fe = build_engine({**table, **v}, state, base)
            fe.load(lambda *_: None)
            if any(x.dtype_name == fe.dtype_name for _, x in engines):
                continue  # the explicit mode equals the automatic one
            fe.add_voice(voice)
            fe.warmup(lambda *_: None)
            engines.append((v, fe))
        results = {fe.dtype_name: {"times_s": [], "fp32_s": [], "ratios": [], "errs": []} for _, fe in engines}
        for text in texts[: args.fast_utterances]:
            # back to back with our fp32 run of the same text, so that load changes hit both
            fp32_s, _, _ = ours_once(text)
            for _, fe in engines:
                t = time.perf_counter()
                list(fe.synthesize(text, voice, threading.Event()))
                ft = time.perf_counter() - t
                fast_mel = torch.cat([m.float().cpu() for m in fe.last_mel], dim=0)
                r = results[fe.dtype_name]
                r["times_s"].append(ft)
                r["fp32_s"].append(fp32_s)
                r["ratios"].append(fp32_s / ft)
                r["errs"].append(rel_error(fast_mel, fp32_mels[text]))  # same text, same seed
        for name, r in results.items():
            modes[name] = {"speedup": _median(r["ratios"]), "rel_error": _median(r["errs"]), "rel_error_max": max(r["errs"]),
                           "times_s": r["times_s"], "fp32_s": r["fp32_s"]}  # fmt: skip
        auto = engines[0][1]
        fast = {"mode": auto.dtype_name, "kernels": auto.kernel_kind, **modes[auto.dtype_name],
                "utterances": args.fast_utterances}  # fmt: skip
        del engines, fe

    import f5_tts  # noqa: F401
    from importlib.metadata import version

    from ishowttsd import __version__
    from ishowttsd.hardware import cpu_has_amx, cpu_has_bf16, cpu_has_vnni, cpu_info

    summary = {
        "speedup_vs_upstream": _r(_median([r["speedup"] for r in rows])) if up is not None else None,
        "throughput_ratio": _r(up_sum / batch_s) if up is not None else None,
        "ttfa_fraction": _r(ttfa / tt),
        "fast_mode_speedup": _r(fast.get("speedup")),
        "fast_mode_rel_error": _r(fast.get("rel_error"), 6),
        "fast_mode": fast.get("mode"),
        "batch_vs_ours_solo": _r(solo_sum / batch_s),
        "batch_per_pass": pass_batch,  # the engine's policy: max_batch auto is 8 on CUDA, 1 on CPU
        "throughput_ratio_forced_passes_of_8": _r(up_sum / forced_s) if up is not None and forced_s else None,
        "rtf_ours_median": _r(_median([r["ours_rtf"] for r in rows])),
        "rtf_upstream_median": _r(_median([r["upstream_rtf"] for r in rows])) if up is not None else None,
        "device": device,
        "cpu": cpu_info().model or platform.processor() or platform.machine(),
        "cpu_bf16": cpu_has_bf16(torch),
        "cpu_amx": cpu_has_amx(),
        "cpu_avx512_vnni": cpu_has_vnni(),
        "cpu_flags": sorted(cpu_info().flags),
        "threads": torch.get_num_threads(),
        "dtype": fp32_dtype,
        "kernels": ours.kernel_kind,
        "steps": args.steps,
        "model": table.get("model", "F5TTS_v1_Base"),
        "weights": weights,
        "reference_s": round(ours._refs["bench"].seconds, 3),
        "runs": args.runs,
        "utterances": len(texts),
        "versions": {"torch": torch.__version__, "f5_tts": version("f5-tts"), "ishowttsd": __version__,
                     "python": platform.python_version()},  # fmt: skip
        "load_s": round(load_s, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "reference": "f5-tts basic_ref_en.wav, first 2.5 s" if not args.reference else str(ref),
    }
    if device.startswith("cuda"):
        summary["gpu"] = torch.cuda.get_device_name()
    tmp.cleanup()
    return {
        "summary": summary,
        "utterances": [{k: _r(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
        "batch": {"ours_batched_s": _r(batch_s), "ours_solo_sum_s": _r(solo_sum), "upstream_sum_s": _r(up_sum),
                  "per_pass": pass_batch, "ours_forced_passes_of_8_s": _r(forced_s)},
        "ttfa": {"text": THREE_SENTENCES, "ttfa_s": _r(ttfa), "total_s": _r(tt), "audio_s": _r(tn / 24000),
                 "chunks": ours.plan(THREE_SENTENCES)},  # fmt: skip
        "fast": {k: _r(v, 6) if isinstance(v, float) else v for k, v in fast.items()},
        "fast_modes": {m: {k: _r(v, 6) if isinstance(v, float) else v for k, v in d.items()} for m, d in modes.items()},
        "command": "python -m ishowttsd.bench " + " ".join(sys.argv[1:]),
    }


def render(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        f"F5-TTS benchmark: {s['model']} ({s['weights']} weights), {s['device']} {s['cpu']}, {s['threads']} threads, "
        f"{s['steps']} steps, reference {s['reference_s']} s, torch {s['versions']['torch']}, f5-tts {s['versions']['f5_tts']}",
        f"CPU features: bf16 {_yes(s.get('cpu_bf16'))}, AMX {_yes(s.get('cpu_amx'))}, "
        f"AVX512-VNNI {_yes(s.get('cpu_avx512_vnni'))} ({len(s.get('cpu_flags') or [])} flags in the JSON)",
        "",
        f"{'utterance':<48} {'audio s':>8} {'upstream s':>10} {'ours s':>8} {'speedup':>8} {'RTF ours':>9}",
    ]
    for r in result["utterances"]:
        up = r.get("upstream_s")
        lines.append(
            f"{r['text'][:46]:<48} {r['ours_audio_s']:>8.2f} {up if up is not None else '-':>10} {r['ours_s']:>8.2f} "
            f"{r.get('speedup') or '-':>8} {r['ours_rtf']:>9.3f}"
        )
    b = result["batch"]
    lines += [
        "",
        f"speedup_vs_upstream  {s['speedup_vs_upstream']}   (median of upstream/ours, both fp32)",
        f"throughput_ratio     {s['throughput_ratio']}   ({s['utterances']} queued: upstream one by one {b['upstream_sum_s']} s, "
        f"ours batched {b['ours_batched_s']} s at {b.get('per_pass')} per pass; ours one by one {b['ours_solo_sum_s']} s)"
        + (f"; forced passes of up to 8: {b['ours_forced_passes_of_8_s']} s, ratio {s.get('throughput_ratio_forced_passes_of_8')}"
           if b.get("ours_forced_passes_of_8_s") else ""),
        f"ttfa_fraction        {s['ttfa_fraction']}   (first audio {result['ttfa']['ttfa_s']} s of {result['ttfa']['total_s']} s, "
        f"{len(result['ttfa']['chunks'])} chunks)",
        f"fast_mode_speedup    {s['fast_mode_speedup']}   ({s['fast_mode']}, relative error {s['fast_mode_rel_error']} vs fp32 mel)",
        *(f"  fast mode {m:<13} speedup {d['speedup']}, relative error {d['rel_error']}"
          for m, d in result.get("fast_modes", {}).items()),
        f"RTF median           ours {s['rtf_ours_median']}, upstream {s['rtf_upstream_median']}",
    ]
    return "\n".join(lines)


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else "yes" if flag else "no"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ishowttsd.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="f5", choices=["f5", "indextts", "triton"],
                    help="engine to measure (indextts and triton have their own options: --engine X --help)")
    ap.add_argument("--config", help="TOML config whose [engine.f5] table names the checkpoint (else random full-size weights)")
    ap.add_argument("--compare-upstream", action="store_true", help="also run upstream f5_tts.api.F5TTS.infer()")
    ap.add_argument("--out", help="write the JSON result here")
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1, help="timed runs per utterance (median)")
    ap.add_argument("--utterances", type=int, default=len(DANMAKU), help=f"how many of the {len(DANMAKU)} danmaku")
    ap.add_argument("--fast-utterances", type=int, default=3)
    ap.add_argument("--no-fast", action="store_true", help="skip the fast-mode measurement")
    ap.add_argument("--reference", help="reference WAV (default: the first phrase of f5-tts's basic_ref_en.wav)")
    ap.add_argument("--reference-text", help="its transcript")
    ap.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    ap.add_argument("--gpu-dtype", default="fp16", choices=["fp16", "bf16"])
    ap.add_argument("--compile", action="store_true", help="GPU fast side: torch.compile with length buckets")
    ap.add_argument("--threads", type=int)
    return ap


def f5_table(config: str | None) -> tuple[dict[str, Any], Path | None]:
    """A config's [engine.f5] table with its files as absolute paths, and the config's folder
    (({}, None) without a config: random weights)."""
    if not config:
        return {}, None
    from ishowttsd.config import load_config

    cfg = load_config(config)
    table = dict(cfg.engine.engine_tables().get("f5", {}))
    for key in ("checkpoint", "vocab", "vocoder"):
        if table.get(key):
            table[key] = str(cfg.resolve(table[key]))
    return table, Path(config).resolve().parent


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser().parse_args(sys.argv[1:] if argv is None else argv), run, render)


if __name__ == "__main__":
    sys.exit(main())
