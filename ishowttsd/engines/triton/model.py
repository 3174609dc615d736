"""Our Triton model: F5-TTS on our engine's own hot path, behind Triton's dynamic batcher.

`contrib/triton/model_repository/*/1/model.py` import `TritonPythonModel` from here, so the
server runs the F5 engine's code (`ishowttsd.engines.f5`), not a copy of it. Triton's Python
backend calls `initialize` once and `execute` with each batch the dynamic batcher gathered
from every connected daemon.

I/O, a superset of upstream F5-TTS's `f5_tts` model (`src/f5_tts/runtime/triton_trtllm`), so
its clients work unchanged:

- `target_text` BYTES [1]: what to say.
- `voice_id` BYTES [1], optional: a voice prepared by an earlier request that carried its
  reference; then the reference inputs may be left out.
- `reference_wav` FP32 [-1], `reference_wav_len` INT32 [1], `reference_text` BYTES [1]: the
  reference voice, mono at the model parameter `reference_audio_sample_rate`, its valid length
  (the rest is padding) and its transcript. Prepared once (RMS, trim, mel: the F5 engine's
  reference preparation) and kept under its `voice_id`, or under a hash of its content when a
  client (upstream's) sends no id: a reference sent with every request is not prepared again.
- `waveform` FP32 [-1]: 24 kHz audio. A decoupled model (`model_transaction_policy {
  decoupled: true }`) streams it: the first sentence chunk of every request in the batch
  first, batched as the engine batches utterances (all together on a GPU, `queue_batch`) and
  sent as each pass ends, then the rest of each request.

The other model parameters are `[engine.f5]` settings (checkpoint, vocab, vocoder, model,
arch, steps, device, dtype, max_batch, ...), each a string (JSON for numbers, booleans and
tables); relative paths are relative to the model's folder.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ishowttsd.engines.base import EngineContext, EngineError, Voice
from ishowttsd.engines.f5 import SAMPLE_RATE, F5Engine, F5Settings, crossfade

_OWN = {"reference_audio_sample_rate", "state_dir", "max_reference_s", "max_text_chars"}
_PATHS = {"checkpoint", "vocab", "vocoder"}


class RequestError(Exception):
    """One request is malformed: it gets an error response; the rest of the batch goes on."""


class TritonPythonModel:
    """The Python-backend model (see the module docstring)."""

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.name = config.get("name", "f5_tts")
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"])
        self.rate = int(params.get("reference_audio_sample_rate") or SAMPLE_RATE)
        self.max_reference_s = float(params.get("max_reference_s") or 30)
        self.max_text_chars = int(params.get("max_text_chars") or 2000)
        state = Path(params.get("state_dir") or Path(tempfile.gettempdir()) / f"ishowtts-triton-{self.name}")
        self.references = state / "references"
        self.references.mkdir(parents=True, exist_ok=True)
        settings = engine_settings(params, folder)
        if args.get("model_instance_kind") == "GPU" and settings.device == "auto":
            settings.device = f"cuda:{args.get('model_instance_device_id', 0)}"
        self.engine = F5Engine(settings, EngineContext(config=None, state_dir=state))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        self.engine.load(lambda stage, fraction: None)
        self.engine.warmup(lambda stage, fraction: None)
        self.xf = int(settings.crossfade_ms * SAMPLE_RATE / 1000)
        self.voices: OrderedDict[str, Voice] = OrderedDict()
        self.prepared = 0
        self._lock = threading.Lock()
        info = self.engine.info()
        self.log(f"loaded in {time.perf_counter() - t0:.1f} s on {info['device']} ({info['dtype']}), "
                 f"{'streaming' if self.decoupled else 'whole'} responses, references at {self.rate} Hz")  # fmt: skip

    def log(self, message: str) -> None:
        self.pb.Logger.log_info(f"{self.name}: {message}")

    # -- requests --------------------------------------------------------------------------------

    def _parse(self, request) -> tuple[str, Voice]:
        text = _text(self.pb, request, "target_text")
        if not text or not text.strip():
            raise RequestError("target_text is empty; send the text to say")
        if len(text) > self.max_text_chars:
            raise RequestError(f"target_text has {len(text)} characters, over this model's max_text_chars ({self.max_text_chars})")
        if not self.engine.plan(text):
            raise RequestError("target_text has nothing to say")
        voice_id = _text(self.pb, request, "voice_id") or ""
        wav_t = self.pb.get_input_tensor_by_name(request, "reference_wav")
        if wav_t is None:
            if not voice_id:
                raise RequestError("no reference_wav and no voice_id: send the reference voice (reference_wav, "
                                   "reference_wav_len, reference_text) or the voice_id of one sent before")  # fmt: skip
            with self._lock:
                voice = self.voices.get(voice_id)
                if voice is None:
                    raise RequestError(f"unknown voice_id {voice_id!r} (this server restarted or never saw it): send "
                                       "its reference_wav, reference_wav_len and reference_text with it once")  # fmt: skip
                self.voices.move_to_end(voice_id)
            return text, voice
        wav = wav_t.as_numpy()
        if wav.dtype != np.float32:
            raise RequestError(f"reference_wav is {wav.dtype}, expected FP32")
        wav = wav.reshape(-1)
        len_t = self.pb.get_input_tensor_by_name(request, "reference_wav_len")
        if len_t is not None:
            n = int(len_t.as_numpy().reshape(-1)[0])
            if not 0 < n <= wav.shape[0]:
                raise RequestError(f"reference_wav_len {n} is not within the {wav.shape[0]} samples of reference_wav")
            wav = wav[:n]
        if wav.shape[0] > self.max_reference_s * self.rate:
            raise RequestError(f"reference_wav is {wav.shape[0] / self.rate:.1f} s, over max_reference_s ({self.max_reference_s:g} s)")
        if not np.isfinite(wav).all():
            raise RequestError("reference_wav has NaN or infinite samples")
        ref_text = _text(self.pb, request, "reference_text") or ""
        if not ref_text.strip():
            raise RequestError("reference_text is empty; send the transcript of reference_wav")
        key = voice_id or "sha-" + _digest(wav, ref_text, self.rate)
        with self._lock:
            voice = self.voices.get(key)
        if voice is None:
            voice = self._prepare(key, wav, ref_text)
        return text, voice

    def _prepare(self, key: str, wav: np.ndarray, ref_text: str) -> Voice:
        """Prepare a reference once: written as a WAV, then the F5 engine's own preparation."""
        import soundfile as sf

        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:120]
        path = self.references / f"{safe}.wav"
        tmp = path.with_suffix(".tmp.wav")
        sf.write(str(tmp), wav, self.rate, subtype="FLOAT")
        tmp.replace(path)
        try:
            voice = self.engine.add_voice(Voice(id=key, engine="f5", reference_audio=str(path), reference_text=ref_text))
        except EngineError as e:
            raise RequestError(str(e)) from None
        with self._lock:
            self.voices[key] = voice
            self.prepared += 1
        self.log(f"prepared voice {key!r} ({wav.shape[0] / self.rate:.1f} s of reference)")
        return voice

    def execute(self, requests: list) -> list | None:
        t0 = time.perf_counter()
        parsed: list[tuple[int, str, Voice]] = []
        errors: dict[int, str] = {}
        for i, r in enumerate(requests):
            try:
                text, voice = self._parse(r)
                parsed.append((i, text, voice))
            except RequestError as e:
                errors[i] = str(e)
        if self.decoupled:
            audio_s = self._stream(requests, parsed, errors)
            responses = None
        else:
            responses, audio_s = self._whole(requests, parsed, errors, _Cancelled([requests[i] for i, _, _ in parsed]))
        self.log(f"batch of {len(requests)}: {len(parsed)} spoken, {len(errors)} refused, "
                 f"{audio_s:.2f} s of audio in {time.perf_counter() - t0:.2f} s")  # fmt: skip
        return responses

    def _whole(self, requests, parsed, errors, cancel) -> tuple[list, float]:
        waves: dict[int, np.ndarray] = {}
        if parsed:
            try:
                out = self.engine.synthesize_batch([t for _, t, _ in parsed], [v for _, _, v in parsed], cancel)
                waves = {i: w for (i, _, _), w in zip(parsed, out)}
            except Exception as e:  # the batch failed as a whole (memory, a bug): every member says why
                errors.update({i: f"synthesis failed: {type(e).__name__}: {e}" for i, _, _ in parsed})
        responses = []
        for i in range(len(requests)):
            if i in waves:
                responses.append(self.pb.InferenceResponse(output_tensors=[self._tensor(waves[i])]))
            else:
                responses.append(self.pb.InferenceResponse(error=self.pb.TritonError(errors.get(i, "cancelled"))))
        return responses, sum(len(w) for w in waves.values()) / SAMPLE_RATE

    def _stream(self, requests, parsed, errors) -> float:
        """The first sentence chunk of every request first, each sent as soon as it is done; then the rest."""
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        senders = [r.get_response_sender() for r in requests]
        finished: set[int] = set()

        def send(i: int, wave: np.ndarray | None = None, error: str | None = None, last: bool = True) -> None:
            if error is not None:
                response = self.pb.InferenceResponse(error=self.pb.TritonError(error))
            else:
                response = self.pb.InferenceResponse(output_tensors=[self._tensor(wave)])
            senders[i].send(response, flags=final if last else 0)
            if last:
                finished.add(i)

        for i, message in errors.items():
            send(i, error=message)
        plans = [(i, self.engine.plan(t), v) for i, t, v in parsed]
        tails: dict[int, np.ndarray] = {}
        rest: list[tuple[int, str, Voice]] = []
        audio = 0
        try:
            # first chunks in groups the engine synthesizes together (all of them on a GPU, one
            # at a time on a CPU), each group sent as soon as it is done
            for group in self._groups(plans):
                waves = self.engine.synthesize_batch([p[0] for _, p, _ in group], [v for _, _, v in group],
                                                     _Cancelled([requests[i] for i, _, _ in group]))  # fmt: skip
                for (i, p, v), w in zip(group, waves):
                    audio += len(w)
                    if len(p) > 1 and self.xf and len(w) > self.xf:  # hold back the crossfade's part
                        w, tails[i] = w[: -self.xf], w[-self.xf :]
                    send(i, w, last=len(p) == 1)
                    if len(p) > 1:
                        rest.append((i, " ".join(p[1:]), v))
            for group in self._groups(rest):
                waves = self.engine.synthesize_batch([t for _, t, _ in group], [v for _, _, v in group],
                                                     _Cancelled([requests[i] for i, _, _ in group]))  # fmt: skip
                for (i, _, _), w in zip(group, waves):
                    audio += len(w)
                    send(i, crossfade(tails[i], w, self.xf) if i in tails else w)
        except Exception as e:  # the batch failed as a whole (memory, a bug): every member says why
            for i, _, _ in plans:
                if i not in finished:
                    send(i, error=f"synthesis failed: {type(e).__name__}: {e}")
        for i in range(len(requests)):  # cancelled by their clients: close their streams
            if i not in finished:
                try:
                    senders[i].send(flags=final)
                except Exception:  # the client is gone
                    pass
        return audio / SAMPLE_RATE

    def _groups(self, items: list) -> list[list]:
        """`items` in groups of as many utterances as the engine synthesizes in one pass."""
        n = max(1, self.engine.max_batch)
        return [items[k : k + n] for k in range(0, len(items), n)]

    def _tensor(self, wave: np.ndarray):
        return self.pb.Tensor("waveform", np.ascontiguousarray(wave, dtype=np.float32)[None])

    def finalize(self) -> None:
        self.log(f"stopping; {self.prepared} voices were prepared")


def engine_settings(params: dict[str, str], folder: Path) -> F5Settings:
    """`[engine.f5]` settings from the model's parameters: JSON values where they parse
    (numbers, booleans, tables), strings otherwise; relative paths from the model's folder."""
    values: dict[str, Any] = {}
    for key, raw in params.items():
        if key in _OWN or key not in F5Settings.model_fields or raw == "":
            continue
        if key in _PATHS:
            values[key] = str(folder / raw) if not Path(raw).is_absolute() else raw
            continue
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return F5Settings.model_validate(values)


def _text(pb, request, name: str) -> str | None:
    t = pb.get_input_tensor_by_name(request, name)
    if t is None:
        return None
    arr = t.as_numpy().reshape(-1)
    if arr.size == 0:
        return None
    v = arr[0]
    try:
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)
    except UnicodeDecodeError:
        raise RequestError(f"{name} is not UTF-8") from None


def _digest(wav: np.ndarray, text: str, rate: int) -> str:
    h = hashlib.sha256(f"{rate}\0{text}\0".encode())
    h.update(np.ascontiguousarray(wav, dtype="<f4").tobytes())
    return h.hexdigest()[:24]


class _Cancelled:
    """A pass's cancel flag: set once every request in it was cancelled by its client. Only
    requests still open may be asked: asking one whose final response went out crashes the
    server (tritonserver 2.51)."""

    def __init__(self, requests: list) -> None:
        self._requests = requests

    def is_set(self) -> bool:
        try:
            return bool(self._requests) and all(r.is_cancelled() for r in self._requests)
        except AttributeError:  # a Python backend without request cancellation
            return False
