"""Benchmarks: scripts that print a table and write JSON, one per engine.

    python -m ishowttsd.bench --engine f5|indextts|triton [options] --out FILE

Each engine's benchmark has its own options (`--engine X --help`); this picks one.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--engine", default="f5", choices=["f5", "indextts", "triton"])
    engine = pick.parse_known_args(argv)[0].engine
    if engine == "indextts":
        from ishowttsd.engines.indextts.bench import main as run
    elif engine == "triton":
        from ishowttsd.bench.triton import main as run
    else:
        from ishowttsd.bench.f5 import main as run
    return run(argv)
