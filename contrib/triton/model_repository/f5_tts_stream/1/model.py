"""Triton loads this file; the model is ishowttsd's own (ishowttsd/engines/triton/model.py)."""

from ishowttsd.engines.triton.model import TritonPythonModel  # noqa: F401
