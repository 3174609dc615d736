"""The `triton` engine: speech from a Triton Inference Server that many daemons share.

It speaks gRPC (the KServe v2 protocol) through `tritonclient` to an F5-TTS model: ours from
`contrib/triton/` (`ishowttsd.engines.triton.model`: voices prepared once on the server, ODE
steps batched across every daemon's requests) or upstream F5-TTS's own `f5_tts` deployment.
The layout, streaming (a decoupled model answers sentence by sentence) and the reference's
sample rate are read from the model itself. A server that is down, slow, refuses the token
or certificate, or answers with something that is not audio raises `EngineUnavailable`: the
engine host lets the fallback engine speak and probes the server until it is back.

tritonclient is imported in `load()`: the daemon starts without it unless this engine is used.
"""

from __future__ import annotations

import hashlib
import queue
import statistics
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
from pydantic import Field

from ishowttsd.config import ConfigError, read_secret
from ishowttsd.engines.base import Engine, EngineError, EngineSettings, EngineUnavailable, Progress, Voice
import ishowttsd.engines.triton.wire as wire
from ishowttsd.messages import AudioChunk


class TritonSettings(EngineSettings):
    url: str = Field(default="127.0.0.1:8001", description="the server's gRPC address, host:port")
    model: str = Field(default="f5_tts", description="the model's name in the server's repository")
    model_version: str = ""
    layout: Literal["auto", "ishowtts", "upstream"] = Field(
        default="auto", description="auto: ours when the model has a voice_id input, else upstream F5-TTS's f5_tts"
    )
    streaming: Literal["auto", "on", "off"] = Field(default="auto", description="auto: on for a decoupled model")
    reference_sample_rate: int | Literal["auto"] = Field(
        default="auto",
        description="Hz of the reference the model expects; auto: its reference_audio_sample_rate parameter, "
        "else 24000 for ours and 16000 for upstream's (its older model repositories)",
    )
    sample_rate: int = Field(default=24_000, description="Hz of the waveform the model returns")
    timeout_s: float = Field(default=30.0, gt=0, description="longest wait for the next audio of an utterance")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="for loading, probes and health")
    retry_s: float = Field(default=2.0, gt=0, description="first pause between probes while the server is down")
    tls: bool = False
    root_certificates: str | None = Field(default=None, description="PEM file of the CA that signed the server's certificate")
    certificate_chain: str | None = Field(default=None, description="PEM client certificate (mutual TLS)")
    private_key: str | None = Field(default=None, description="PEM key of the client certificate (mutual TLS)")
    tls_server_name: str | None = Field(default=None, description="the name in the server's certificate, if not url's host")
    auth_header: str = Field(default="authorization", description="header that carries the token")
    auth_scheme: str = Field(default="Bearer", description='put before the token ("" for none)')
    token_file: str | None = Field(default=None, description="file holding the token (never logged)")
    token_env: str | None = Field(default=None, description="environment variable holding the token (never logged)")
    max_audio_s: float = Field(default=120.0, gt=0, description="longer responses are refused")
    max_reference_s: float = Field(default=12.0, gt=0.5, description="the reference is cut to this length")


class TritonEngine(Engine):
    """A client of a Triton Inference Server's F5-TTS model (see the module docstring)."""

    name = "triton"
    Settings = TritonSettings

    def __init__(self, settings: TritonSettings, ctx) -> None:
        super().__init__(settings, ctx)
        self.retry_s = settings.retry_s
        self.sample_rate = settings.sample_rate
        self.info_: wire.ModelInfo | None = None
        self.reference_rate = 0
        self._grpc = None
        self._client = None  # the worker thread's (streams are not thread-safe)
        self._probe_client = None  # probes and health, from other threads (unary calls are)
        self._lock = threading.Lock()
        self._headers: dict[str, str] = {}
        self._voices: dict[str, Voice] = {}
        self._refs: dict[str, wire.Reference] = {}
        self._sent: set[str] = set()  # voice keys the server has: their reference is not sent again
        self.references_sent = 0
        self.requests = 0
        self.latencies: deque[float] = deque(maxlen=50)  # seconds to the first audio
        self.rtfs: deque[float] = deque(maxlen=50)
        self.server: dict[str, Any] = {"ok": None, "error": None, "at": None}

    # -- connection ------------------------------------------------------------------------------

    def _path(self, value: str | None) -> Path | None:
        if not value:
            return None
        return Path(self.ctx.config.resolve(value)) if self.ctx.config is not None else Path(value)

    def _token(self) -> str | None:
        try:
            return read_secret(self.settings.token_file, self.settings.token_env, "[engine.triton] token", self.ctx.config)
        except ConfigError as e:
            raise EngineError(f"triton: {e}") from None

    def _make_client(self):
        s = self.settings
        limit = int(s.max_audio_s * s.sample_rate * 4 * 1.25) + (1 << 20)
        args = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 64 << 20)]
        if s.tls_server_name:
            args.append(("grpc.ssl_target_name_override", s.tls_server_name))
        files = {}
        for key in ("root_certificates", "certificate_chain", "private_key"):
            path = self._path(getattr(s, key))
            if path is not None and not path.is_file():
                raise EngineError(f"triton: [engine.triton] {key} {path} does not exist")
            files[key] = str(path) if path else None
        try:
            return self._grpc.InferenceServerClient(s.url, ssl=s.tls, channel_args=args, **files)
        except Exception as e:  # a malformed url, unreadable PEM
            raise EngineError(f"triton: cannot set up a client for [engine.triton] url {s.url!r}: {e}") from None

    def load(self, progress: Progress) -> None:
        s = self.settings
        progress("connecting to the Triton server", None)
        try:
            import tritonclient.grpc as grpc
        except ImportError:
            raise EngineError("triton: tritonclient is not installed; install the extra from the checkout: pip install -c constraints.txt '.[triton]'") from None
        self._grpc = grpc
        token = self._token()
        self._headers = {s.auth_header: f"{s.auth_scheme} {token}".strip()} if token else {}
        self._client = self._make_client()
        self._check(self._client)
        try:
            meta = self._client.get_model_metadata(s.model, s.model_version, headers=self._headers, as_json=True,
                                                   client_timeout=s.connect_timeout_s)  # fmt: skip
            config = self._client.get_model_config(s.model, s.model_version, headers=self._headers, as_json=True,
                                                   client_timeout=s.connect_timeout_s)  # fmt: skip
        except Exception as e:
            raise self._error(e) from None
        try:
            info = wire.model_info(meta, config, s.model)
        except ValueError as e:
            raise EngineError(f"triton: {e}") from None
        if s.layout != "auto" and s.layout != info.layout:
            raise EngineError(f"triton: [engine.triton] layout = {s.layout!r} but model {s.model!r} has the {info.layout} layout")
        if s.streaming != "auto":
            if s.streaming == "on" and not info.streaming:
                raise EngineError(f"triton: [engine.triton] streaming = \"on\" but model {s.model!r} is not decoupled; "
                                  "use streaming = \"auto\" or a decoupled model (f5_tts_stream)")  # fmt: skip
            info.streaming = s.streaming == "on"
        self.info_ = info
        rate = s.reference_sample_rate
        if rate == "auto":  # without the parameter: what our model assumes, or upstream's older 16 kHz
            rate = info.reference_rate or (24_000 if info.layout == wire.OURS else 16_000)
        elif info.reference_rate and info.reference_rate != rate:
            self.log.warning("[engine.triton] reference_sample_rate = %d but model %s says %d; sending %d Hz as configured",
                             rate, s.model, info.reference_rate, rate)  # fmt: skip
        self.reference_rate = int(rate)
        self.loaded = True
        progress("triton ready", 1.0)

    def warmup(self, progress: Progress) -> None:
        """Nothing to warm here: the server warmed its model when it loaded it."""
        self.warm = True

    def _check(self, client) -> None:
        """Live and the model ready (the server's readiness covers every model, not just ours);
        raises EngineUnavailable saying which is not."""
        s = self.settings
        kw = {"headers": self._headers, "client_timeout": s.connect_timeout_s}
        try:
            if not client.is_server_live(**kw):
                raise EngineUnavailable(f"triton: the server at {s.url} is not live")
            if not client.is_model_ready(s.model, s.model_version, **kw):
                loading = "" if client.is_server_ready(**kw) else "; the server is still loading models"
                raise EngineUnavailable(f"triton: model {s.model!r} is not ready on the server at {s.url}{loading}; load it "
                                        "or fix [engine.triton] model")  # fmt: skip
        except EngineUnavailable as e:
            self._note(error=str(e))
            raise
        except Exception as e:
            err = self._error(e)
            self._note(error=str(err))
            raise err from None
        self._note()

    def probe(self) -> None:
        """Is the server back (live, ready, model ready)? Its own client: this runs in the host's thread."""
        if self._grpc is None:
            try:
                import tritonclient.grpc as grpc
            except ImportError:
                raise EngineUnavailable("triton: tritonclient is not installed") from None
            self._grpc = grpc
            token = self._token()
            self._headers = {self.settings.auth_header: f"{self.settings.auth_scheme} {token}".strip()} if token else {}
        with self._lock:
            if self._probe_client is None:
                self._probe_client = self._make_client()
        self._check(self._probe_client)

    def _error(self, e: Exception) -> Exception:
        return wire.explain(e, self.settings.url, self.settings.model, self.settings)

    def _note(self, error: str | None = None) -> None:
        self.server = {"ok": error is None, "error": error, "at": time.time()}

    # -- voices ----------------------------------------------------------------------------------

    def voices(self) -> list[Voice]:
        return list(self._voices.values())

    def add_voice(self, voice: Voice) -> Voice:
        """Read the reference once, as the server's model wants it: mono, at its rate."""
        if not voice.reference_audio or not (voice.reference_text or "").strip():
            raise EngineError(f"voice {voice.id!r}: a triton voice needs reference_audio (a WAV) and reference_text (its transcript)")
        import soundfile as sf
        import soxr

        path = Path(voice.reference_audio)
        try:
            wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:
            raise EngineError(f"voice {voice.id!r}: reference_audio {path} is not readable audio ({str(e)[:160]}); "
                              "expected a WAV/FLAC/OGG file") from None  # fmt: skip
        mono = wav.mean(axis=1)
        if len(mono) < sr // 2:
            raise EngineError(f"voice {voice.id!r}: reference_audio {path} is under 0.5 s; record 3-10 s of clear speech")
        if not np.isfinite(mono).all() or float(np.abs(mono).max()) == 0.0:
            raise EngineError(f"voice {voice.id!r}: reference_audio {path} is silent or damaged; record 3-10 s of clear speech")
        rate = self.reference_rate or sr
        samples = soxr.resample(mono, sr, rate) if sr != rate else mono
        samples = np.ascontiguousarray(samples[: int(self.settings.max_reference_s * rate)], dtype=np.float32)
        text = voice.reference_text.strip()
        h = hashlib.sha256(f"{rate}\0{text}\0".encode())
        h.update(samples.tobytes())
        ref = wire.Reference(key=f"{voice.id}-{h.hexdigest()[:16]}", samples=samples, text=text, rate=rate)
        voice.description = voice.description or f"cloned on {self.settings.url} from {path.name} ({len(samples) / rate:.1f} s)"
        self._refs[voice.id] = ref
        self._voices[voice.id] = voice
        return voice

    # -- synthesis -------------------------------------------------------------------------------

    def synthesize(self, text: str, voice: Voice, cancel: threading.Event) -> Iterator[AudioChunk]:
        if not self.loaded or self.info_ is None:
            raise EngineUnavailable("triton: not connected to the server yet")
        ref = self._refs.get(voice.id) or self._refs[self.add_voice(voice).id]
        t0 = time.perf_counter()
        first = None
        audio = 0
        for attempt in (0, 1):
            with_ref = ref.key not in self._sent
            try:
                for wave in self._request(text, ref, with_ref, cancel):
                    if first is None:
                        first = time.perf_counter() - t0
                        if with_ref or self.info_.layout == wire.UPSTREAM:  # upstream's model takes it every time
                            self._sent.add(ref.key)
                            self.references_sent += 1
                    audio += len(wave)
                    yield AudioChunk(wave, self.sample_rate)
                break
            except wire.UnknownVoice:
                # the server restarted and forgot the voice: send its reference, once
                self._sent.discard(ref.key)
                if attempt or with_ref:
                    raise EngineUnavailable(f"triton: the server does not keep voice {voice.id!r} even when sent its reference") from None
        if first is not None and not cancel.is_set():
            self.requests += 1
            self.latencies.append(first)
            if audio:
                self.rtfs.append((time.perf_counter() - t0) / (audio / self.sample_rate))
            self._note()

    def _request(self, text: str, ref: wire.Reference, with_ref: bool, cancel: threading.Event) -> Iterator[np.ndarray]:
        """One inference: waveforms as they come (several from a decoupled model), checked."""
        s = self.settings
        grpc = self._grpc
        tensors = wire.inputs(grpc, self.info_, text, ref, with_ref)
        outputs = [grpc.InferRequestedOutput("waveform")]
        max_samples = int(s.max_audio_s * self.sample_rate)
        answers: queue.Queue = queue.Queue()
        rid = uuid.uuid4().hex[:16]
        client = self._client
        streaming = self.info_.streaming
        call = None
        done = False
        try:
            if streaming:
                client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=self._headers)
                client.async_stream_infer(s.model, tensors, model_version=s.model_version, outputs=outputs,
                                          request_id=rid, enable_empty_final_response=True)  # fmt: skip
            else:
                call = client.async_infer(s.model, tensors, lambda result, error: answers.put((result, error)),
                                          model_version=s.model_version, outputs=outputs, request_id=rid,
                                          client_timeout=s.timeout_s, headers=self._headers)  # fmt: skip
            while not done:
                deadline = time.monotonic() + s.timeout_s
                while True:
                    if cancel.is_set():
                        return
                    try:
                        result, error = answers.get(timeout=0.05)
                        break
                    except queue.Empty:
                        if time.monotonic() > deadline:
                            raise EngineUnavailable(f"triton: no audio from the server at {s.url} within [engine.triton] "
                                                    f"timeout_s ({s.timeout_s:g} s); it is overloaded or stuck") from None  # fmt: skip
                if error is not None:
                    raise self._error(error)
                done = not streaming or wire.is_final(result)
                if wire.has_waveform(result):
                    yield wire.waveform(result, max_samples)
                elif not (streaming and done):  # only a stream's closing response may be empty
                    raise EngineUnavailable("triton: the model sent a response without a waveform")
        except (EngineUnavailable, wire.UnknownVoice) as e:
            self._note(error=str(e))
            raise
        except Exception as e:  # tritonclient raises its own exception type from the calls above
            err = self._error(e)
            self._note(error=str(err))
            raise err from None
        finally:
            if streaming:
                client.stop_stream(cancel_requests=not done)
            elif call is not None and not done:
                call.cancel()

    # -- reports ---------------------------------------------------------------------------------

    def health_checks(self) -> list[dict[str, Any]]:
        s = self.settings
        where = f"{s.url} model {s.model}"
        srv = self.server
        if srv["at"] is None:
            server = {"check": "triton:server", "level": "warn", "reason": f"{where}: not contacted yet", "fix": ""}
        else:
            age = f"{time.time() - srv['at']:.0f} s ago"
            if srv["ok"]:
                kind = f"{self.info_.layout} layout, {'streaming' if self.info_.streaming else 'whole'}" if self.info_ else ""
                server = {"check": "triton:server", "level": "ok",
                          "reason": f"{where}: live and ready ({kind}; as of {age})", "fix": ""}  # fmt: skip
            else:
                server = {"check": "triton:server", "level": "fail", "reason": f"{where}: {srv['error']} (as of {age})",
                          "fix": "start or fix the Triton server; the fallback engine speaks meanwhile"}  # fmt: skip
        out = [server]
        if self.latencies:
            lat = statistics.median(self.latencies)
            rtf = statistics.median(self.rtfs) if self.rtfs else None
            data = {"latency_median_s": round(lat, 4), "rtf_median": None if rtf is None else round(rtf, 4),
                    "requests": self.requests, "references_sent": self.references_sent}  # fmt: skip
            reason = f"median latency to first audio {lat:.3f} s, median RTF {rtf:.3f} over the last {len(self.latencies)}"
            slow = rtf is not None and rtf >= 1.0
            out.append({"check": "triton:speed", "level": "warn" if slow else "ok", "reason": reason,
                        "fix": "the server is slower than real time: more GPU, fewer steps, or fewer daemons per server" if slow else "",
                        "data": data})  # fmt: skip
        return out

    def info(self) -> dict[str, Any]:
        d = super().info()
        s = self.settings
        auth = f"token from file {s.token_file}" if s.token_file else f"token from ${s.token_env}" if s.token_env else None
        d.update({
            "url": s.url, "model": s.model, "tls": s.tls, "auth": auth,
            "layout": self.info_.layout if self.info_ else None,
            "streaming": self.info_.streaming if self.info_ else None,
            "reference_sample_rate": self.reference_rate or None,
            "requests": self.requests, "references_sent": self.references_sent,
            "server": dict(self.server),
        })  # fmt: skip
        return d
