"""What every benchmark script does around its run: parse, run, report a known failure as one
line, print the table and write the JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable


def emit(result: dict[str, Any], render: Callable[[dict[str, Any]], str], out: str | None) -> None:
    """Print a benchmark's table and write its JSON to `out` (and drop a `.partial` left by a run)."""
    print(render(result))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        Path(out + ".partial").unlink(missing_ok=True)
        print(f"\nwrote {out}")


def run_main(args: argparse.Namespace, run: Callable[[argparse.Namespace], dict[str, Any]],
             render: Callable[[dict[str, Any]], str], expected: tuple[type[BaseException], ...] = ()) -> int:  # fmt: skip
    """Run one benchmark; an EngineError (or one of `expected`) is a line of advice and exit 1."""
    from ishowttsd.engines.base import EngineError

    try:
        result = run(args)
    except (EngineError, *expected) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    emit(result, render, args.out)
    return 0
