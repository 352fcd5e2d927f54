"""What every stage shows on the Prefect dashboard (issue 13 item 3): thin helpers over
``prefect.artifacts``, shared by the stage flows and the pipeline.

Each stage flow publishes a progress artifact ``<stage>-progress`` (advanced as its tasks
finish), table artifacts of its measures, and a markdown artifact with its pictures embedded as
PNG ``data:`` URIs (the dashboard cannot read this machine's files, so ``file://`` links show
nothing there). Each also returns ``"report"``: ``stage_report(measures, tables, pictures)``,
from which the pipeline writes the run's HTML report (``diffparts.report.write_report``) and
publishes its summary (``publish_run_summary``). Sizes stay under Prefect's limits: see
``diffparts.report.images``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from uuid import UUID

from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)

from diffparts.report import ARTIFACT_MAX_BYTES, PICTURE_MAX_BYTES, png_data_uri

#: Prefect's rule for artifact keys.
KEY = re.compile(r"^[a-z0-9-]+$")
#: A picture smaller than this in the markdown is left out (with a note) rather than shown as mush.
MIN_PICTURE_BYTES = 4_000


def check_key(key: str) -> str:
    if not KEY.match(key):
        raise ValueError(f"artifact key must be lowercase letters, digits and dashes, got {key!r}")
    return key


def plain(value):
    """A JSON value for artifacts and the run record: numpy scalars to Python, NaN/inf to None,
    tuples to lists, anything else unknown to its ``str``."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    return str(value)


# --- progress ---------------------------------------------------------------------------------

#: Artifact id -> the label of its progress bar on the terminal (the key less "-progress").
_LABELS: dict = {}


def publish_progress(key: str, description: str, done: int = 0, total: int = 1) -> UUID:
    """A progress artifact at ``done / total``; returns its id for :func:`advance_progress`.
    On a terminal, the same progress is drawn as a bar (``diffparts.logs.terminal_progress``)."""
    from diffparts.logs import terminal_progress

    artifact_id = create_progress_artifact(progress=_percent(done, total), key=check_key(key), description=description)
    _LABELS[artifact_id] = key.removesuffix("-progress")
    if done < total:
        terminal_progress(_LABELS[artifact_id], done, total)
    return artifact_id


def advance_progress(artifact_id: UUID, done: int, total: int) -> None:
    from diffparts.logs import terminal_progress

    update_progress_artifact(artifact_id, progress=_percent(done, total))
    if artifact_id in _LABELS:
        terminal_progress(_LABELS[artifact_id], done, total)


def _percent(done: int, total: int) -> float:
    return 100.0 if total <= 0 else round(100.0 * min(max(done, 0), total) / total, 2)


# --- tables -----------------------------------------------------------------------------------

def measure_rows(measures: dict) -> list[dict]:
    """``{"name": value}`` -> ``[{"measure": name, "value": value}]``; lists joined (floats to 4
    significant digits), dicts left out."""
    rows = []
    for name, value in measures.items():
        value = plain(value)
        if isinstance(value, dict):
            continue
        if isinstance(value, list):
            value = " ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
        rows.append({"measure": str(name), "value": value})
    return rows


def publish_table(key: str, rows: list[dict], description: str) -> UUID:
    """A table artifact of row dicts (JSON-plain; an empty table gets one row saying so)."""
    rows = [plain(r) for r in rows] or [{"note": "no rows"}]
    return create_table_artifact(rows, key=check_key(key), description=description)


def stage_report(measures: dict | list | None = None, tables: dict[str, list[dict]] | None = None,
                 pictures: list[dict] | None = None) -> dict:
    """The ``"report"`` entry of a stage's summary: ``{"measures": [{"measure", "value"}],
    "tables": {title: [row]}, "pictures": [{"title", "path"}]}``, JSON-plain."""
    if isinstance(measures, dict):
        measures = measure_rows(measures)
    return {"measures": plain(list(measures or [])),
            "tables": {str(t): plain(list(rows)) for t, rows in (tables or {}).items()},
            "pictures": [{"title": str(p["title"]), "path": str(p["path"])} for p in (pictures or []) if p.get("path")]}


# --- markdown ---------------------------------------------------------------------------------

def cell_text(value, digits: int = 4) -> str:
    """A number or word for markdown: floats to ``digits`` significant digits, None/NaN as "–",
    ``|`` escaped (a cell break), and text with an ``@`` as code (the dashboard would make
    ``pck@0.1`` an e-mail link)."""
    value = plain(value)
    if isinstance(value, float):
        value = f"{value:.{digits}g}"
    elif value is None:
        value = "–"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return f"`{text.replace('`', '')}`" if "@" in text else text


_cell = cell_text


def markdown_table(rows: list[dict], digits: int = 4) -> list[str]:
    """Markdown lines of a table of row dicts (columns in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    if not columns:
        return []
    lines = ["| " + " | ".join(cell_text(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell_text(row.get(c), digits) for c in columns) + " |" for row in rows]
    return lines


def markdown_with_pictures(text: str | list[str], pictures: list[dict], max_bytes: int = ARTIFACT_MAX_BYTES,
                           picture_max_bytes: int = PICTURE_MAX_BYTES) -> str:
    """``text`` followed by each picture (``{"title", "path"}``) embedded as a PNG data URI.

    The whole markdown stays under ``max_bytes``: each picture gets at most an even share of
    what the text and the pictures before it left, and at most ``picture_max_bytes``. A missing
    or unreadable file, or one that would not fit, is a line saying so instead.
    """
    lines = list(text) if isinstance(text, list) else [text]
    used = sum(len(line) + 1 for line in lines)
    for i, picture in enumerate(pictures):
        title = (str(picture.get("title", "picture")).replace("[", "(").replace("]", ")")
                 .replace("<", "&lt;").replace(">", "&gt;"))
        path = Path(str(picture.get("path")))
        caption = f"`{str(path).replace('`', '')}`"
        share = min(picture_max_bytes, (max_bytes - used - 200 * (len(pictures) - i)) // (len(pictures) - i))
        if not path.is_file():
            block = [f"_{title}: picture not found ({caption})_"]
        elif share < MIN_PICTURE_BYTES:
            block = [f"_{title}: left out to keep this artifact under {max_bytes} bytes ({caption})_"]
        else:
            try:
                block = [f"![{title}]({png_data_uri(path, max_bytes=share)})", "", caption]
            except (OSError, ValueError) as err:
                block = [f"_{title}: picture could not be read ({caption}: {err})_"]
        block = ["", f"### {title}", ""] + block
        lines += block
        used += sum(len(line) + 1 for line in block)
    return "\n".join(lines)


def publish_markdown(key: str, markdown: str, description: str) -> UUID:
    return create_markdown_artifact(markdown, key=check_key(key), description=description)


# --- the pipeline's summary -------------------------------------------------------------------

#: Measures shown per stage in the run summary (the rest are in the stage's own artifacts).
HEADLINE_MEASURES = 5


def run_summary_markdown(run: dict, report_path: str) -> str:
    """The pipeline run's summary: the run's facts (one per row), per stage its status, seconds
    and line, then the headline measures one per row (narrow tables: nothing is cut off at the
    dashboard's right edge); the report."""
    report = Path(report_path).resolve()
    lines = [f"# {run.get('title') or 'diffparts run'}", "",
             f"HTML report (self-contained, opens with no server): [{report.name}]({report.as_uri()})", "",
             f"Path: `{str(report).replace('`', '')}`", ""]
    facts = [("corpus", f"`{run.get('corpus')}`"), ("store", f"`{run.get('store')}`"), ("model", run.get("model")),
             ("started", run.get("started")), ("seconds in stages", round(float(run.get("seconds") or 0.0), 1))]
    if run.get("wall_seconds") is not None:
        facts.append(("seconds in the flow", round(float(run["wall_seconds"]), 1)))
    lines += markdown_table([{"run": k, "": v} for k, v in facts]) + [""]
    rows, measures = [], []
    for stage in run.get("stages") or []:
        rows.append({"stage": stage.get("name"), "status": stage.get("status"),
                     "seconds": round(float(stage.get("seconds") or 0.0), 1),
                     "what it did": stage.get("message") or ""})
        for m in ((stage.get("report") or {}).get("measures") or [])[:HEADLINE_MEASURES]:
            measures.append({"stage": stage.get("name"), "measure": m.get("measure"), "value": m.get("value")})
    lines += markdown_table(rows) + [""]
    if measures:
        lines += ["## Headline measures", "", *markdown_table(measures, digits=3)]
    return "\n".join(lines)


def publish_run_summary(run: dict, report_path: str, key: str = "run-summary") -> UUID:
    """The pipeline run's markdown summary artifact (links the HTML report); returns its id."""
    return publish_markdown(key, run_summary_markdown(run, report_path),
                            description=f"pipeline run summary; HTML report {Path(report_path).resolve()}")
