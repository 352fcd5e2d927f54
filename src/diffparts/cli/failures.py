"""``diffparts failures``: every image a stage could not use, with the reason (issue 12, item 7).

The other commands print the first ``SHOWN`` failures of their stage after a run with
:func:`report_failures`, then a count and this command for the rest.
"""

from __future__ import annotations

import json
import sys

#: Failures a stage command prints after its run; the rest are counted.
SHOWN = 20


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "failures",
        help="list every image a stage could not use, and why",
        description=(
            "Print the failures recorded in a store (failures/<stage>: an unreadable or refused image, "
            "a segmentation that raised, ...), one line each: stage, image name, image id, reason. "
            "A re-run of the stage retries them."
        ),
    )
    parser.add_argument("--store", required=True, metavar="PATH", help="the Zarr store")
    parser.add_argument("--stage", default=None, metavar="S",
                        help="only this stage (attention, features, segments, parts, ...); default: all")
    parser.add_argument("--json", action="store_true", help="print the failures as a JSON list")
    parser.set_defaults(handler=run_failures)


def read_failures(store: str, stage: str | None = None) -> list[dict]:
    """``[{"image_id", "name", "index", "stage", "reason"}]`` of the store's current version."""
    from diffparts.store import failures, open_store

    return failures(open_store(store), stage)


def format_failure(row: dict) -> str:
    return f"{row['stage']}: {row['name']} (image {row['image_id']}): {row['reason']}"


def report_failures(store: str, stages: tuple[str, ...], file=None, shown: int = SHOWN) -> int:
    """Print the failures of ``stages`` (the first ``shown``, then a count); returns how many."""
    file = file or sys.stderr
    rows = [row for stage in stages for row in read_failures(store, stage)]
    for row in rows[:shown]:
        print(f"failed {format_failure(row)}", file=file)
    if len(rows) > shown:
        stage_arg = f" --stage {stages[0]}" if len(stages) == 1 else ""
        print(f"... and {len(rows) - shown} more: diffparts failures --store {store}{stage_arg}", file=file)
    return len(rows)


def run_failures(args) -> int:
    rows = read_failures(args.store, args.stage)
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(format_failure(row))
    print(f"{len(rows)} failures" + (f" in stage {args.stage}" if args.stage else ""), file=sys.stderr)
    return 0
