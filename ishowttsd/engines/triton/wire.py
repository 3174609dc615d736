"""What goes over the wire to a Triton model and what must come back (KServe v2 over gRPC).

Two layouts: ours (`voice_id` names a reference the server prepared once) and upstream F5-TTS's
`f5_tts` (the reference goes with every request). Responses are checked before a sample
reaches a sink, and every server error becomes one sentence that says what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ishowttsd.engines.base import EngineUnavailable

OURS, UPSTREAM = "ishowtts", "upstream"
_UPSTREAM_INPUTS = {"reference_wav", "reference_wav_len", "reference_text", "target_text"}
# a vocoder may overshoot 1.0 a little; past this the model sends something else (int16-scaled audio)
MAX_PEAK = 4.0


@dataclass
class Reference:
    """A voice's reference as the server's model wants it: mono float32 at its rate."""

    key: str  # the voice_id our model keeps it under: the voice id and a hash of the content
    samples: np.ndarray
    text: str
    rate: int


@dataclass
class ModelInfo:
    """What the server's model is, from its metadata and config."""

    layout: str  # OURS or UPSTREAM
    streaming: bool  # decoupled: answers with several responses per request
    batched: bool  # max_batch_size > 0: every tensor has a leading batch dimension of 1
    reference_rate: int | None  # the `reference_audio_sample_rate` parameter, when the model has one


class UnknownVoice(Exception):
    """Our model does not know the voice_id (it restarted): send the reference again."""


def model_info(metadata: dict[str, Any], config: dict[str, Any], model: str) -> ModelInfo:
    """Recognise the layout from the model's inputs (as_json metadata and config)."""
    inputs = {i["name"] for i in metadata.get("inputs", [])}
    outputs = {o["name"]: o for o in metadata.get("outputs", [])}
    if "waveform" not in outputs:
        raise ValueError(f"model {model!r} has no 'waveform' output (outputs: {sorted(outputs)}); it is not an F5-TTS model")
    if outputs["waveform"].get("datatype") != "FP32":
        raise ValueError(f"model {model!r} returns waveform as {outputs['waveform'].get('datatype')}, expected FP32")
    if "voice_id" in inputs and "target_text" in inputs:
        layout = OURS
    elif _UPSTREAM_INPUTS <= inputs:
        layout = UPSTREAM
    else:
        raise ValueError(
            f"model {model!r} has inputs {sorted(inputs)}: neither ours (voice_id, target_text, reference_*) nor "
            f"upstream F5-TTS's f5_tts ({', '.join(sorted(_UPSTREAM_INPUTS))}); check [engine.triton] model"
        )
    cfg = config.get("config", config)
    rate = cfg.get("parameters", {}).get("reference_audio_sample_rate", {}).get("string_value")
    return ModelInfo(
        layout=layout,
        streaming=bool(cfg.get("model_transaction_policy", {}).get("decoupled", False)),
        batched=int(cfg.get("max_batch_size", 0) or 0) > 0,
        reference_rate=int(rate) if rate and rate.isdigit() else None,
    )


def inputs(grpc, info: ModelInfo, text: str, ref: Reference, with_reference: bool) -> list:
    """The request's input tensors for the model's layout (`grpc` is tritonclient.grpc)."""
    lead = [1] if info.batched else []

    def strings(name: str, value: str):
        t = grpc.InferInput(name, [*lead, 1], "BYTES")
        t.set_data_from_numpy(np.array([value.encode("utf-8")], dtype=object).reshape([*lead, 1]))
        return t

    out = [strings("target_text", text)]
    if info.layout == OURS:
        out.append(strings("voice_id", ref.key))
    if info.layout == UPSTREAM or with_reference:
        wav = np.ascontiguousarray(ref.samples, dtype=np.float32).reshape([*lead, -1])
        t = grpc.InferInput("reference_wav", list(wav.shape), "FP32")
        t.set_data_from_numpy(wav)
        n = np.array([len(ref.samples)], dtype=np.int32).reshape([*lead, 1])
        t_len = grpc.InferInput("reference_wav_len", list(n.shape), "INT32")
        t_len.set_data_from_numpy(n)
        out += [t, t_len, strings("reference_text", ref.text)]
    return out


def waveform(result, max_samples: int) -> np.ndarray:
    """The `waveform` of one response, checked: FP32, [N] or [1, N], not empty, not longer
    than `max_samples`, finite, and audio-like in scale. Raises EngineUnavailable saying what
    was wrong: a server that sends such a thing cannot be spoken through."""
    response = result.get_response()
    out = next((o for o in response.outputs if o.name == "waveform"), None)
    if out is None:
        raise EngineUnavailable(f"triton: the model's response has no 'waveform' output (got {[o.name for o in response.outputs]})")
    if out.datatype != "FP32":
        raise EngineUnavailable(f"triton: the model sent a waveform of {out.datatype}, expected FP32")
    shape = [int(d) for d in out.shape]
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != 1):
        raise EngineUnavailable(f"triton: the model sent a waveform of shape {shape}, expected [N] or [1, N] (one mono utterance)")
    n = int(np.prod(shape))
    if n == 0:
        raise EngineUnavailable("triton: the model sent an empty waveform")
    if n > max_samples:
        raise EngineUnavailable(f"triton: the model sent {n} samples, more than [engine.triton] max_audio_s allows ({max_samples})")
    try:
        wave = result.as_numpy("waveform")
    except ValueError as e:  # raw contents that do not fit the declared shape
        raise EngineUnavailable(f"triton: the model sent a malformed waveform ({e})") from None
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if not np.isfinite(wave).all():
        raise EngineUnavailable(f"triton: the model sent a waveform with {int((~np.isfinite(wave)).sum())} NaN or infinite samples")
    peak = float(np.abs(wave).max())
    if peak > MAX_PEAK:
        raise EngineUnavailable(f"triton: the model sent samples up to {peak:.4g}; audio is expected within [-1, 1]")
    return wave


def is_final(result) -> bool:
    p = result.get_response().parameters.get("triton_final_response")
    return bool(p is not None and p.bool_param)


def has_waveform(result) -> bool:
    return any(o.name == "waveform" for o in result.get_response().outputs)


def explain(error: Exception, url: str, model: str, settings) -> Exception:
    """A tritonclient/gRPC error as an EngineUnavailable whose message says what to do (never
    the auth token: the server's messages name the header only), or UnknownVoice."""
    status = str(error.status() if hasattr(error, "status") and callable(error.status) else "") or ""
    message = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
    message = (message or str(error)).strip()
    low = message.lower()
    if "unknown voice_id" in low:
        return UnknownVoice(message)
    if "deadline" in status.lower() or "deadline exceeded" in low:
        return EngineUnavailable(f"triton: the server at {url} did not answer within [engine.triton] timeout_s "
                                 f"({settings.timeout_s:g} s); it is overloaded or stuck")  # fmt: skip
    if "restricted" in low or "expecting header" in low:
        source = (f"token_file {settings.token_file}" if settings.token_file else f"token_env {settings.token_env}"
                  if settings.token_env else "no token configured")  # fmt: skip
        wanted = re.search(r"expecting header '([^']+)'", message)
        hint = ""
        if wanted and wanted.group(1).lower() != settings.auth_header.lower():
            hint = f"; it expects the header {wanted.group(1)!r}: set [engine.triton] auth_header to it"
        return EngineUnavailable(f"triton: the server at {url} refused the request: the {settings.auth_header!r} header is "
                                 f"missing or wrong ({source}){hint}; check [engine.triton] token_file or token_env")  # fmt: skip
    if any(k in low for k in ("ssl", "handshake", "certificate", "tls")):
        ca = settings.root_certificates or "the system's CA certificates"
        return EngineUnavailable(f"triton: the TLS handshake with {url} failed ({_short(message)}); its certificate must be "
                                 f"signed by {ca} and name the host (or [engine.triton] tls_server_name); "
                                 f"tls = {str(settings.tls).lower()} must match the server")  # fmt: skip
    if "larger than max" in low or "resource_exhausted" in status.lower():
        return EngineUnavailable(f"triton: the server sent more than [engine.triton] max_audio_s ({settings.max_audio_s:g} s) "
                                 f"of audio in one response ({_short(message)})")  # fmt: skip
    if "unknown model" in low or "not ready" in low or "not found" in low or "unavailable model" in low:
        return EngineUnavailable(f"triton: model {model!r} is not ready on the server at {url} ({_short(message)}); "
                                 f"load it or fix [engine.triton] model")  # fmt: skip
    if "unavailable" in status.lower() or "connect" in low or "socket closed" in low or "connection" in low:
        return EngineUnavailable(f"triton: cannot reach the server at {url} ({_short(message)}); is it running and is "
                                 f"[engine.triton] url right?")  # fmt: skip
    return EngineUnavailable(f"triton: the server at {url} failed the request: {_short(message)}")


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
