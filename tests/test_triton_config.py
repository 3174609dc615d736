"""config/example-triton.toml documents real keys: the daemon's own checks accept it."""

from pathlib import Path

from ishowttsd.config import load_config
from ishowttsd.engines.espeak import EspeakEngine
from ishowttsd.engines.host import EngineHost
from ishowttsd.engines.triton import TritonEngine, TritonSettings
from ishowttsd.events import EventBus


def test_example_config_is_valid():
    cfg = load_config(Path(__file__).resolve().parent.parent / "config" / "example-triton.toml")
    EngineHost(cfg, {"triton": TritonEngine, "espeak": EspeakEngine}, EventBus())  # validates [engine.triton]
    s = TritonSettings(**cfg.engine.engine_tables()["triton"])
    assert s.tls and s.token_file and cfg.voices[0].engine == "triton"
