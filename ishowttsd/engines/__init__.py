"""TTS engines. The built-in ones are registered by this internal plugin module."""

from __future__ import annotations

from ishowttsd.hookspecs import hookimpl


@hookimpl
def ishowtts_register_engines(register):
    from ishowttsd.engines.espeak import EspeakEngine
    from ishowttsd.engines.f5 import F5Engine  # light: torch and f5-tts load in F5Engine.load()
    from ishowttsd.engines.indextts import IndexTTSEngine  # light: torch and indextts load in load()
    from ishowttsd.engines.triton import TritonEngine  # light: tritonclient loads in TritonEngine.load()

    register(EspeakEngine)
    register(F5Engine)
    register(IndexTTSEngine)
    register(TritonEngine)
