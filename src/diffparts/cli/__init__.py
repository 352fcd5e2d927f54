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

#: Commands that run a Prefect flow: Prefect's console log only with --verbose, and the
#: configured server (PREFECT_API_URL) asked first (``flows.runtime``).
FLOW_COMMANDS = ("run", "extract", "segment", "parts", "embed", "occlude", "serve")

#: Errors that mean the input is wrong (a refused corpus, a bad setting, another store's config,
#: a file where the store should be): one line naming the problem, exit status 2; the traceback
#: only with --debug.
BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError, IsADirectoryError)


class DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help only where the help does not say its default
    already and there is one to say (not None, not an off switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return super()._get_help_string(action)


def _defaults_once(parser: argparse.ArgumentParser) -> None:
    """Every command's (and sub-command's) help with :class:`DefaultsOnce`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if sub.formatter_class is argparse.ArgumentDefaultsHelpFormatter:
                    sub.formatter_class = DefaultsOnce
                _defaults_once(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffparts",
        description="Unsupervised part discovery and correspondence from diffusion attention.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="print tracebacks (also in Prefect's log) for errors caused by bad input")
    parser.add_argument("--verbose", action="store_true",
                        help="also print Prefect's own log (task states, the temporary server); it always "
                             "goes to the dashboard")
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
    _defaults_once(parser)
    # --debug and --verbose also after the command (`diffparts run ... --verbose`)
    for sub in subparsers.choices.values():
        for flag, text in (("--debug", "print the traceback of an error caused by bad input"),
                           ("--verbose", "also print Prefect's own log (it always goes to the dashboard)")):
            if flag not in sub._option_string_actions:
                sub.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=text)
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
    import contextlib

    from diffparts.logs import quiet_third_party
    from flows.runtime import ServerUnreachable, check_api, prefect_console  # the Prefect layer, imported lazily

    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet_third_party()
    factory = logging.getLogRecordFactory()
    if not args.debug and not getattr(factory, "diffparts_quiet", False):
        logging.setLogRecordFactory(_without_bad_input_tracebacks(factory))
    try:
        with contextlib.ExitStack() as stack:
            if args.command in FLOW_COMMANDS and not getattr(args, "list", False):
                # `diffparts serve` runs until stopped: its log (runs starting, schedules firing) is its output
                stack.enter_context(prefect_console(args.verbose or args.command == "serve"))
                check_api()
            result = args.handler(args)
    except (*BAD_INPUT, ServerUnreachable) as err:
        if args.debug:
            traceback.print_exc()
        print(f"diffparts {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        logging.setLogRecordFactory(factory)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
