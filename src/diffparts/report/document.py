"""One self-contained HTML report per pipeline run (issue 13 item 5).

``write_report(path, run)`` writes a single file: inline CSS, the tables as HTML tables, every
picture as a PNG ``data:`` URI, no script and no external resource, so it opens from disk with
no server and can be mailed or archived as it is. ``run`` is a JSON-serialisable record:

    {"title", "flow_run_id", "dashboard_url", "corpus", "store", "model", "started", "seconds",
     "wall_seconds",
     "stages": [{"name", "status", "seconds", "message", "summary",
                 "report": {"measures": [{"measure", "value"}], "tables": {title: [row]},
                            "pictures": [{"title", "path"}]}}]}

``seconds`` is the sum of the stages' seconds (what the terminal's summary table adds up);
``wall_seconds`` the flow's own time, from its start to the report (both as the terminal says). A table longer than
:data:`FOLD_ROWS` rows is summarised and folded; each measure shows once. Every string from
the record is escaped; a missing key shows as a dash, and a picture whose
file is missing or unreadable shows as a note, never an error.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from diffparts.report.images import png_data_uri

#: Pictures in the report may be larger than on the dashboard (no Prefect limit here).
REPORT_PICTURE_MAX_SIDE = 1600
REPORT_PICTURE_MAX_BYTES = 1_500_000
#: Rows shown per table (a huge corpus's per-image table is cut, and says so).
MAX_ROWS = 200
#: A table longer than this (a per-image table) is folded away under a one-line summary of
#: its numeric columns (mean, min, max), so it does not fill the page.
FOLD_ROWS = 12

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; } caption { text-align: left; font-weight: 600; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; } .note { color: #a33; }
.status-done { color: #176317; } .status-failed { color: #a31515; font-weight: 600; }
.status-skipped, .status-not-run { color: #777; }
summary { cursor: pointer; } .pictures { display: flex; flex-wrap: wrap; gap: 1em; }
.pictures figure { flex: 0 1 auto; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: 12px; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def format_value(value) -> str:
    """A table cell's text: floats to 4 significant digits, None/NaN as a dash, lists joined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _cell(value) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{_e(format_value(value))}</td>' if numeric else f"<td>{_e(format_value(value))}</td>"


def html_table(rows: list[dict], caption: str | None = None, max_rows: int = MAX_ROWS) -> str:
    """Rows of dicts as a table; columns in first-seen order over all rows."""
    rows = [r if isinstance(r, dict) else {"value": r} for r in (rows or [])]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{_e(caption)}</caption>")
    if not rows:
        return "".join(parts) + "<tr><td>(no rows)</td></tr></table>"
    parts.append("<tr>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>")
    for row in rows[:max_rows]:
        parts.append("<tr>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>")
    parts.append("</table>")
    if len(rows) > max_rows:
        parts.append(f'<p class="note">first {max_rows} of {len(rows)} rows</p>')
    return "".join(parts)


def column_summary(rows: list[dict]) -> list[dict]:
    """One row per numeric column of ``rows``: its mean, min and max over the rows that have it."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = []
    for column in columns:
        values = [float(r[column]) for r in rows if isinstance(r.get(column), (int, float))
                  and not isinstance(r.get(column), bool) and math.isfinite(float(r[column]))]
        if values:
            out.append({"column": column, "rows": len(values), "mean": sum(values) / len(values),
                        "min": min(values), "max": max(values)})
    return out


def folded_table(rows: list[dict], caption: str, fold_rows: int = FOLD_ROWS) -> str:
    """A table; one longer than ``fold_rows`` as the summary of its numeric columns, with the
    rows themselves folded under a ``<details>`` (closed)."""
    rows = [r if isinstance(r, dict) else {"value": r} for r in (rows or [])]
    if len(rows) <= fold_rows:
        return html_table(rows, caption)
    summary = column_summary(rows)
    head = html_table(summary, f"{caption}: {len(rows)} rows, summarised") if summary else ""
    return (f"{head}<details><summary>{_e(caption)}: all {len(rows)} rows</summary>"
            f"{html_table(rows)}</details>")


def html_picture(title: str, path, max_side: int = REPORT_PICTURE_MAX_SIDE,
                 max_bytes: int = REPORT_PICTURE_MAX_BYTES) -> str:
    """A ``<figure>`` with the picture inline, or a note saying why it is not there."""
    if not path:
        return f'<p class="note">{_e(title)}: no picture file given</p>'
    file = Path(path)
    if not file.is_file():
        return f'<p class="note">{_e(title)}: picture not found ({_e(file)})</p>'
    try:
        uri = png_data_uri(file, max_side=max_side, max_bytes=max_bytes)
    except (OSError, ValueError) as err:
        return f'<p class="note">{_e(title)}: picture could not be read ({_e(file)}: {_e(err)})</p>'
    return (f'<figure><img src="{uri}" alt="{_e(title)}"><figcaption>{_e(title)} '
            f"<code>{_e(file.name)}</code></figcaption></figure>")


#: Measure names that are the same quantity under another name (the stage's own name -> the
#: headline's): the report shows each quantity once, under the headline's name.
SAME_MEASURE = {"k": "K", "roc_auc": "detection AUC", "detection_auc": "detection AUC",
                "detection roc_auc": "detection AUC", "bytes_written": "MB added", "done": "images"}


def unique_measures(measures: list[dict]) -> list[dict]:
    """``measures`` with each quantity once: the first of the rows whose names are equal
    ignoring case, or are the same quantity (:data:`SAME_MEASURE`) with the same value."""
    seen: dict[str, object] = {}
    out = []
    for row in measures or []:
        name = str(row.get("measure", ""))
        key = SAME_MEASURE.get(name, name).lower()
        if key in seen and (key == name.lower() or _same_value(seen[key], row.get("value"), name)):
            continue
        seen.setdefault(key, row.get("value"))
        out.append(row)
    return out


def _same_value(a, b, name: str) -> bool:
    if name == "bytes_written":      # MB added is bytes_written / 1e6 with one decimal
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    except (TypeError, ValueError):
        return a == b


def _stage_section(stage: dict) -> str:
    name = str(stage.get("name", "stage"))
    status = str(stage.get("status", "not run"))
    report = stage.get("report") or {}
    out = [f'<h2 id="stage-{_e(name)}">{_e(name)} '
           f'<small class="status-{_e(status.replace(" ", "-"))}">({_e(status)})</small></h2>']
    if stage.get("message"):
        out.append(f"<p>{_e(stage['message'])}</p>")
    if report.get("measures"):
        out.append(html_table(unique_measures(report["measures"]), "measures"))
    for title, rows in (report.get("tables") or {}).items():
        out.append(folded_table(rows, title))
    pictures = [html_picture(str(p.get("title", "picture")), p.get("path")) for p in report.get("pictures") or []]
    if pictures:
        out.append('<div class="pictures">' + "\n".join(pictures) + "</div>")
    if stage.get("summary"):
        text = json.dumps(stage["summary"], indent=1, default=str)
        out.append(f"<details><summary>full summary</summary><pre>{_e(text)}</pre></details>")
    return "\n".join(out)


def render_report(run: dict) -> str:
    """The report's HTML text (see the module docstring for ``run``)."""
    title = str(run.get("title") or "diffparts run")
    url = run.get("dashboard_url")
    link = (f'<a href="{_e(url)}">{_e(url)}</a>' if isinstance(url, str) and url.startswith(("http://", "https://"))
            else _e(format_value(url)))
    meta = [("flow run", _e(format_value(run.get("flow_run_id")))), ("dashboard", link)]
    meta += [(k, _e(format_value(run.get(k)))) for k in ("corpus", "store", "model", "started")]
    for key, label in (("seconds", "seconds in stages"), ("wall_seconds", "seconds in the flow")):
        seconds = run.get(key)
        if key == "seconds" or seconds is not None:
            seconds = round(float(seconds), 1) if isinstance(seconds, (int, float)) else seconds
            meta.append((label, _e(format_value(seconds))))
    stages = run.get("stages") or []
    overview = [{"stage": s.get("name"), "status": s.get("status"),
                 "seconds": round(float(s["seconds"]), 1) if isinstance(s.get("seconds"), (int, float)) else None,
                 "message": s.get("message") or ""} for s in stages]
    body = [f"<h1>{_e(title)}</h1>",
            "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in meta) + "</table>",
            html_table(overview, "stages")]
    body += [_stage_section(s) for s in stages]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(path: str | Path, run: dict) -> Path:
    """Write the run's self-contained HTML report to ``path`` (parents made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(run), encoding="utf-8")
    return path
