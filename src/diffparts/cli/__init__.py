"""The ``diffparts`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``; registration must stay cheap (no torch or Prefect import) so that
``--help`` is instant. Heavy imports happen inside the command's handler.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Commands that run a flow start Prefect's temporary server: no analytics (no network is
# assumed), and time to start on a busy 2-core machine (the default 20 s is too short there).
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}

# Command modules, in the order their commands appear in --help. A module listed here that
# does not exist yet is skipped, so stages can land one at a time.
COMMAND_MODULES = ("corpus", "train", "extract", "segment", "parts", "embed", "occlude")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffparts",
        description="Unsupervised part discovery and correspondence from diffusion attention.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"diffparts.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"diffparts.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        result = args.handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"diffparts {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
