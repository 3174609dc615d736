"""Triton Inference Server: the `triton` engine (the client, `engine.py`), what goes over the
wire (`wire.py`), and our own server-side model (`model.py`, loaded by `contrib/triton/`)."""

from ishowttsd.engines.triton.engine import TritonEngine, TritonSettings

__all__ = ["TritonEngine", "TritonSettings"]
