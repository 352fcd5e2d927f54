"""Two detectors on the same occlusion cases: the ROC AUC difference per row, with its paired
bootstrap interval; prints JSON (and ``--markdown`` a table on stderr).

``benchmarks/eval_occlusion.py`` writes each (how, fill) run of a ``--work`` folder into
``<work>/<how>-<fill>/store.zarr``. Given two such folders made from the same source with the
same ``--cases`` and seed (so the same cases: checked, refused by name otherwise), this reads the
stored scores (``occlusion/scores``) and truths and prints, for every part row both have, the two
AUCs and ``B - A`` with a 95 % interval from resampling the cases (the same resampled cases for
both: ``metrics.occlusion.roc_auc_difference``). A 32-case row's own interval is about 0.2 wide;
the paired one is much narrower, so this is how to tell whether a setting changed anything.
Background rows (no positives) report both detectors' false-alarm rates instead. Nothing runs
again; the folders are only read.

    .venv/bin/python benchmarks/compare_detection.py runs/occ-v128-64-cal runs/occ-v128-c32 --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def case_table(store: Path) -> tuple[list, "np.ndarray", "np.ndarray", dict]:
    """(case records, (case, category) scores, (case, category) hidden, the stage's summary)
    of one eval_occlusion run's store."""
    import numpy as np
    import zarr

    from diffparts.occlusion.stage import summarize_occlusion

    root = zarr.open_group(str(store), mode="r")
    g = root["occlusion"]
    done = np.flatnonzero(np.asarray(g["done"][:], bool))
    results = [json.loads(str(g["results"][int(i)])) for i in done]
    records = [str(g["records"][int(i)]) for i in done]
    scores = np.stack([np.asarray(g["scores"][int(i)]) for i in done])
    hidden = np.array([[k in set(r["truth"]) for k in range(scores.shape[1])] for r in results], bool)
    return records, scores, hidden, summarize_occlusion(root)


def compare(a: Path, b: Path) -> list[dict]:
    from diffparts.metrics.occlusion import roc_auc, roc_auc_difference

    rows = []
    names = sorted(p.name for p in a.iterdir() if (p / "store.zarr").is_dir() and (b / p.name / "store.zarr").is_dir())
    if not names:
        raise SystemExit(f"no <how>-<fill>/store.zarr run in both {a} and {b}")
    for name in names:
        ra, sa, ya, suma = case_table(a / name / "store.zarr")
        rb, sb, yb, sumb = case_table(b / name / "store.zarr")
        if ra != rb or (ya != yb).any():
            raise SystemExit(f"{name}: {a} and {b} hold different cases (another --cases, seed or source); "
                             "a paired comparison needs the same ones")
        row = {"run": name, "cases": len(ra), "hidden": int(ya[:, 1:].any(1).sum()),
               "false_alarms_a": suma["detection"].get("false_alarm_rate"),
               "false_alarms_b": sumb["detection"].get("false_alarm_rate")}
        if ya[:, 1:].any():
            diff, lo, hi = roc_auc_difference(sa[:, 1:], sb[:, 1:], ya[:, 1:])
            row.update(auc_a=roc_auc(sa[:, 1:], ya[:, 1:]), auc_b=roc_auc(sb[:, 1:], yb[:, 1:]),
                       difference=diff, interval=[lo, hi])
        rows.append(row)
    return rows


def markdown(rows: list[dict], a: str, b: str) -> str:
    def num(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    lines = [f"A = `{a}`, B = `{b}`", "",
             "| run | cases (hiding a category) | ROC AUC A | ROC AUC B | B - A (95 % paired interval) | false alarms A | B |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        d = "-" if "difference" not in r else \
            f"{r['difference']:+.3f} ({r['interval'][0]:+.3f} to {r['interval'][1]:+.3f})"
        lines.append(f"| {r['run']} | {r['cases']} ({r['hidden']}) | {num(r.get('auc_a'))} | {num(r.get('auc_b'))} | "
                     f"{d} | {num(r['false_alarms_a'])} | {num(r['false_alarms_b'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="eval_occlusion.py --work folder of detector A")
    ap.add_argument("b", type=Path, help="... of detector B (the same cases)")
    ap.add_argument("--markdown", action="store_true", help="also the table as markdown (stderr)")
    args = ap.parse_args(argv)
    for p in (args.a, args.b):
        if not p.is_dir():
            raise SystemExit(f"{p}: no such folder (an eval_occlusion.py --work folder)")
    rows = compare(args.a, args.b)
    print(json.dumps({"a": str(args.a), "b": str(args.b), "rows": rows}, indent=1, default=float))
    if args.markdown:
        print(markdown(rows, str(args.a), str(args.b)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
