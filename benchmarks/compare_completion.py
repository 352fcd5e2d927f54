"""Completion variants read by the part judge, with paired intervals; prints JSON (and
``--markdown`` a table on stderr).

``benchmarks/eval_occlusion.py`` (without ``--detect-only``) writes each (how, fill) run of a
``--work`` folder into ``<work>/<how>-<fill>/store.zarr``, one result per case with each
variant's measures (``judge_iou``, ``judge_hidden_accuracy``, ``psnr``, ...). This reads them
and prints, per run and pooled over the runs ("all": each case's mean over the runs, where
every run holds the same cases, i.e. the same held-out birds hiding the same parts under each
fill; the cases, not the runs, are the sample, since a completion never sees the hidden pixels
and most variants paint the same image whatever the fill):

- given one folder, each variant's mean and its paired difference from ``--against`` (default
  ``occluded``, the floor: is the hidden part's type painted back more often than the occluded
  input shows it?) with a 95 % bootstrap interval over the cases
  (``metrics.occlusion.mean_difference``);
- given two folders of the same cases (the same source, ``--cases`` and seed; checked, refused
  by name otherwise), e.g. one completed with the inpainting checkpoint and one by latent
  blending, each variant's ``B - A`` with its paired interval;
- with ``--gain-over VARIANT`` as well, each variant's gain over VARIANT in B against its gain in
  A, per case ``(B[v] - B[VARIANT]) - (A[v] - A[VARIANT])``: e.g. whether a part token's lead
  over the class prompt is larger when the hidden region has the part's own outline;
- ``--by-fill`` pairs the runs of the two folders by fill instead of by name, so the same birds
  and parts hidden two ways (``part-grey`` against ``cover-grey``: the same plan) pair up; the
  cases are still checked.

An interval that excludes 0 is a difference those cases support. Nothing runs again; the
folders are only read.

    .venv/bin/python benchmarks/compare_completion.py runs/occ-comp-inpaint --markdown
    .venv/bin/python benchmarks/compare_completion.py runs/occ-comp-blend runs/occ-comp-inpaint --markdown
    .venv/bin/python benchmarks/compare_completion.py runs/occ-cover96-noise runs/occ-comp96-noise --by-fill --gain-over class --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MEASURES = ("judge_iou", "judge_hidden_accuracy", "psnr", "ssim")


def runs_of(folder: Path) -> dict[str, Path]:
    """{run name: store} of an eval_occlusion ``--work`` folder: its ``<how>-<fill>/store.zarr``
    runs, or the folder's own ``store.zarr`` (a single run: named ``<how>-<fill>`` too, from its
    occlusion settings, so it pairs with the same run of another folder; after the folder where
    it has none)."""
    if (folder / "store.zarr").is_dir():
        return {_single_run_name(folder): folder / "store.zarr"}
    found = {p.name: p / "store.zarr" for p in sorted(folder.iterdir()) if (p / "store.zarr").is_dir()}
    if not found:
        raise SystemExit(f"{folder}: no store.zarr and no <how>-<fill>/store.zarr run in it")
    return found


def _single_run_name(folder: Path) -> str:
    """``<how>-<fill>`` of the run in ``folder/store.zarr`` (as eval_occlusion.py names the runs of
    a folder with several), or the folder's name where its settings do not say."""
    import zarr

    try:
        config = dict(zarr.open_group(str(folder / "store.zarr"), mode="r")["occlusion"].attrs["config"])
        return f"{config['how']}-{config['fill']}"
    except (KeyError, TypeError, FileNotFoundError, ValueError):
        return folder.name


def case_measures(store: Path, judge=None) -> tuple[list[str], dict[str, dict[str, list]]]:
    """(the finished cases' identities, {variant: {measure: per-case values}}) of one run's
    store; a case's identity is its held-out image and what it hid (the same under every fill).
    ``judge``: a ``diffparts.judge.PartJudge`` that reads the stored images again for the judge's
    two measures (:func:`rejudge`), instead of the ones the run stored."""
    import numpy as np
    import zarr

    root = zarr.open_group(str(store), mode="r")
    g = root["occlusion"]
    done = np.flatnonzero(np.asarray(g["done"][:], bool))
    results = [json.loads(str(g["results"][int(i)])) for i in done]
    records = [json.dumps([r["image"], r.get("target")]) for r in results]
    variants = list(g.attrs["variants"])
    table = {v: {m: [r["measures"].get(v, {}).get(m) for r in results] for m in MEASURES} for v in variants}
    if judge is not None:
        rejudge(root, done, results, table, judge)
    return records, table


def rejudge(root, done, results: list[dict], table: dict, judge) -> None:
    """Replace ``table``'s ``judge_iou`` and ``judge_hidden_accuracy`` by ``judge``'s reading of
    each finished case's stored variant images (``occlusion/images``), scored as the stage scores
    them (``occlusion.cases.judge_measures`` of the hidden parts against the corpus's part mask at
    the images' size, inside the stored hidden mask); None where the image has no part mask."""
    import numpy as np

    from diffparts.corpus import load_mask
    from diffparts.occlusion.cases import judge_measures
    from diffparts.occlusion.occluders import resize_labels
    from diffparts.occlusion.stage import _records
    from diffparts.store import image_table

    g = root["occlusion"]
    records, _ = _records(root, None)
    names = [row["name"] for row in image_table(root)]
    variants = list(g.attrs["variants"])
    for n, (case, result) in enumerate(zip(done, results)):
        rec = records[names[int(result["image"])]]
        images = np.asarray(g["images"][int(case)])                          # variant y x 3
        judged = {}
        if rec.part_mask_path is not None:
            truth = resize_labels(load_mask(rec.part_mask_path), images.shape[1:3]).astype(np.int16)
            judged = judge_measures(judge, dict(zip(variants, images)), np.asarray(g["masks"][int(case)], bool),
                                    truth, result["target"])
        for v in variants:
            table[v]["judge_iou"][n] = judged.get(v, {}).get("iou")
            table[v]["judge_hidden_accuracy"][n] = judged.get(v, {}).get("hidden_accuracy")


def _reader(judge):
    """How a run's measures are read: as stored, or with ``judge`` reading the images again."""
    return case_measures if judge is None else (lambda store: case_measures(store, judge))


def _mean(values) -> float | None:
    import numpy as np

    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else None


def _case_means(columns: list[list]) -> list:
    """Per case, the mean of its values over the runs (None where it has none)."""
    import numpy as np

    v = np.asarray([[np.nan if x is None else x for x in c] for c in columns], np.float64)
    seen = np.isfinite(v)
    m = np.where(seen, v, 0.0).sum(0) / np.maximum(seen.sum(0), 1)
    return [float(x) if k else None for x, k in zip(m, seen.any(0))]


def _pooled(pooled: dict, identities: dict) -> list[dict]:
    """The "all" rows: each case's mean over the runs, where every run holds the same cases."""
    if len(identities) < 2 or len({json.dumps(i) for i in identities.values()}) != 1:
        return []
    return [{"run": "all", "variant": v, **_row(_case_means(a), _case_means(b))} for v, (a, b) in pooled.items()]


def _row(a_values, b_values) -> dict:
    from diffparts.metrics.occlusion import mean_difference

    diff, lo, hi, n = mean_difference(a_values, b_values)
    return {"a": _mean(a_values), "b": _mean(b_values), "difference": diff, "interval": [lo, hi], "cases": n}


def against_variant(folder: Path, against: str, measure: str, judge=None) -> list[dict]:
    """One folder: every variant against ``against`` on ``measure``, per run and pooled (``judge``:
    as :func:`case_measures`)."""
    rows, pooled, identities = [], {}, {}
    read = _reader(judge)
    for name, store in runs_of(folder).items():
        identities[name], table = read(store)
        if against not in table:
            raise SystemExit(f"{store}: no variant {against!r} (its variants: {', '.join(table)})")
        for v in table:
            if v == against:
                continue
            rows.append({"run": name, "variant": v, **_row(table[against][measure], table[v][measure])})
            a, b = pooled.setdefault(v, ([], []))
            a.append(table[against][measure])
            b.append(table[v][measure])
    return rows + _pooled(pooled, identities)


def _gain(table: dict, variant: str, over: str | None, measure: str) -> list:
    """Per case, ``variant``'s ``measure``, less ``over``'s where given (None where either is None)."""
    if over is None:
        return table[variant][measure]
    return [None if x is None or y is None else x - y for x, y in zip(table[variant][measure], table[over][measure])]


def _paired_runs(runs_a: dict, runs_b: dict, by_fill: bool) -> list[tuple[str, str, str]]:
    """(row name, run of A, run of B): the runs both folders hold, or with ``by_fill`` the runs
    of the same fill (``<how>-<fill>``), whatever they hid it with."""
    if not by_fill:
        return [(n, n, n) for n in runs_a if n in runs_b]
    fill = lambda name: name.split("-", 1)[-1]  # noqa: E731
    return [(na if na == nb else f"{na} / {nb}", na, nb) for na in runs_a for nb in runs_b if fill(na) == fill(nb)]


def between_runs(folder_a: Path, folder_b: Path, measure: str, judge=None, over: str | None = None,
                 by_fill: bool = False) -> list[dict]:
    """Two folders of the same cases: each variant's B - A on ``measure``, per run and pooled
    (``judge``: as :func:`case_measures`); with ``over``, each variant's gain over ``over`` in B
    against its gain in A; ``by_fill``: as :func:`_paired_runs`."""
    runs_a, runs_b = runs_of(folder_a), runs_of(folder_b)
    read = _reader(judge)
    pairs = _paired_runs(runs_a, runs_b, by_fill)
    if not pairs:
        raise SystemExit(f"no run in both {folder_a} and {folder_b}" + (" with the same fill" if by_fill else ""))
    rows, pooled, identities = [], {}, {}
    for name, run_a, run_b in pairs:
        rec_a, ta = read(runs_a[run_a])
        rec_b, tb = read(runs_b[run_b])
        if rec_a != rec_b:
            raise SystemExit(f"{name}: {folder_a} and {folder_b} hold different cases (another --cases, seed or "
                             "source); a paired comparison needs the same ones")
        for table, store in ((ta, runs_a[run_a]), (tb, runs_b[run_b])):
            if over is not None and over not in table:
                raise SystemExit(f"{store}: no variant {over!r} (its variants: {', '.join(table)})")
        identities[name] = rec_a
        for v in [v for v in ta if v in tb and v != over]:
            a_values, b_values = _gain(ta, v, over, measure), _gain(tb, v, over, measure)
            rows.append({"run": name, "variant": v, **_row(a_values, b_values)})
            a, b = pooled.setdefault(v, ([], []))
            a.append(a_values)
            b.append(b_values)
    return rows + _pooled(pooled, identities)


def markdown(rows: list[dict], a: str, b: str, measure: str) -> str:
    def num(v):
        return "-" if v is None or v != v else f"{v:.3f}"

    lines = [f"{measure}: A = {a}, B = {b}", "",
             f"| run | variant | cases | A | B | B - A (95 % paired interval) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lo, hi = r["interval"]
        d = "-" if r["difference"] != r["difference"] else (
            f"{r['difference']:+.3f}" + ("" if lo != lo else f" ({lo:+.3f} to {hi:+.3f})"))
        lines.append(f"| {r['run']} | {r['variant']} | {r['cases']} | {num(r['a'])} | {num(r['b'])} | {d} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="eval_occlusion.py --work folder (completion, not --detect-only)")
    ap.add_argument("b", type=Path, nargs="?", help="a second folder of the same cases (another completion model)")
    ap.add_argument("--measure", default="judge_iou", choices=MEASURES, help="per-case measure (default judge_iou)")
    ap.add_argument("--against", default="occluded", help="with one folder: the variant every other is paired with")
    ap.add_argument("--gain-over", default=None, metavar="VARIANT",
                    help="with two folders: each variant's gain over VARIANT in B against its gain in A")
    ap.add_argument("--by-fill", action="store_true",
                    help="with two folders: pair their runs by fill (part-grey with cover-grey), not by name")
    ap.add_argument("--judge", default=None,
                    help="a part judge (judge.safetensors) to read the stored images again, instead of the judge "
                         "measures the runs stored (e.g. data/models/diffparts-part-judge-leaves/judge.safetensors)")
    ap.add_argument("--markdown", action="store_true", help="also the table as markdown (stderr)")
    args = ap.parse_args(argv)
    for p in [args.a] + ([args.b] if args.b else []):
        if not p.is_dir():
            raise SystemExit(f"{p}: no such folder (an eval_occlusion.py --work folder)")
    judge = None
    if args.judge is not None:
        from diffparts.judge import PartJudge

        judge = PartJudge.load(args.judge)
    if args.b is None:
        if args.gain_over or args.by_fill:
            raise SystemExit("--gain-over and --by-fill compare two folders: give a second one")
        rows = against_variant(args.a, args.against, args.measure, judge)
        a, b = f"`{args.against}`", "the variant"
    else:
        rows = between_runs(args.a, args.b, args.measure, judge, args.gain_over, args.by_fill)
        gain = f" (the variant - `{args.gain_over}`)" if args.gain_over else ""
        a, b = f"`{args.a}`{gain}", f"`{args.b}`{gain}"
    print(json.dumps({"a": str(args.a), "b": None if args.b is None else str(args.b), "measure": args.measure,
                      "judge": args.judge, "gain_over": args.gain_over, "by_fill": args.by_fill,
                      "against": args.against if args.b is None else None, "rows": rows}, indent=1, default=float))
    if args.markdown:
        print(markdown(rows, a, b, args.measure), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
