"""The ``diffparts`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``; registration must stay cheap (no torch or Prefect import) so that
``--help`` is instant. Heavy imports happen inside the command's handler.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

# Commands that run a flow start Prefect's temporary server: no analytics (no network is
# assumed), and time to start on a busy 2-core machine (the default 20 s is too short there).
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}

# Command modules, in the order their commands appear in --help. A module listed here that
# does not exist yet is skipped, so stages can land one at a time.
COMMAND_MODULES = ("run", "serve", "corpus", "train", "models", "extract", "segment", "parts", "embed", "occlude", "failures")

#: Errors that mean the input is wrong (a refused corpus, a bad setting, another store's config):
#: one line naming the problem, exit status 2; the traceback only with --debug.
BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffparts",
        description="Unsupervised part discovery and correspondence from diffusion attention.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="print tracebacks (also in Prefect's log) for errors caused by bad input")
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


def _without_bad_input_tracebacks(factory):
    """A log record factory that drops the traceback of bad-input errors from Prefect's log
    (the message, naming the error, stays; the CLI then prints the one useful line)."""

    def make(name, level, fn, lno, msg, args, exc_info, func=None, sinfo=None, **kwargs):
        if exc_info and name.startswith("prefect") and isinstance(exc_info, tuple) \
                and isinstance(exc_info[1], BAD_INPUT):
            exc_info = None
        return factory(name, level, fn, lno, msg, args, exc_info, func, sinfo, **kwargs)

    make.diffparts_quiet = True
    return make


def main(argv: list[str] | None = None) -> int:
    from diffparts.logs import quiet_third_party

    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet_third_party()
    factory = logging.getLogRecordFactory()
    if not args.debug and not getattr(factory, "diffparts_quiet", False):
        logging.setLogRecordFactory(_without_bad_input_tracebacks(factory))
    try:
        result = args.handler(args)
    except BAD_INPUT as err:
        if args.debug:
            traceback.print_exc()
        print(f"diffparts {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        logging.setLogRecordFactory(factory)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
