"""`ishowttsd`: parse the command line, set up logging, and run the daemon until a signal."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import anyio

from ishowttsd import __version__
from ishowttsd.config import ConfigError, default_socket_path, load_config
from ishowttsd.daemon import Daemon
from ishowttsd.engines.base import EngineError
from ishowttsd.logs import setup_logging
from ishowttsd.sdnotify import Notifier

log = logging.getLogger("ishowttsd")

EX_CONFIG = 78  # sysexits.h: systemd will not restart-loop on a bad config (RestartPreventExitStatus=78)


def print_summary(summary: dict[str, Any], out=sys.stdout) -> None:
    print("\nishowttsd summary", file=out)
    for key in ("received", "filtered", "queued", "spoken", "dropped", "expired", "cut", "failed"):
        print(f"  {key:<9} {summary.get(key, 0)}", file=out)
    for reason, n in sorted(summary.get("reasons", {}).items()):
        print(f"    {reason:<24} {n}", file=out)
    rtf = summary.get("rtf_median")
    if rtf is not None:
        print(f"  median RTF {rtf:.4f} (min {summary['rtf_min']:.4f}, max {summary['rtf_max']:.4f}) on {summary['engine']}", file=out)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ishowttsd", description="Speak live chat aloud.")
    ap.add_argument("--config", "-c", help="TOML config file (default: built-in defaults)")
    ap.add_argument("--socket", help="control socket path (overrides [daemon] socket)")
    ap.add_argument("--exit-when-done", action="store_true", help="exit once finite sources are replayed and all speech is done")
    ap.add_argument("--summary", action="store_true", help="print a summary of what happened on exit")
    ap.add_argument("--summary-json", help="also write the summary as JSON to this file")
    ap.add_argument("--check-config", action="store_true", help="validate the config and plugins, then exit")
    ap.add_argument("--version", action="version", version=f"ishowttsd {__version__}")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"ishowttsd: config error:\n{e}", file=sys.stderr)
        return EX_CONFIG
    setup_logging(cfg.daemon.log_level)
    sock = Path(args.socket) if args.socket else cfg.resolve(cfg.daemon.socket) if cfg.daemon.socket else default_socket_path()
    try:
        daemon = Daemon(cfg, sock, exit_when_done=args.exit_when_done, notifier=Notifier.from_environment())
        if args.check_config:
            daemon.build()
            print(f"{args.config or 'defaults'}: OK")
            return 0
        anyio.run(daemon.run)
    except ConfigError as e:
        print(f"ishowttsd: config error:\n{e}", file=sys.stderr)
        return EX_CONFIG
    except (EngineError, RuntimeError, OSError) as e:
        log.error("cannot run: %s", e)
        return 1
    except KeyboardInterrupt:
        pass
    summary = daemon.api.summary()
    if args.summary:
        print_summary(summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
