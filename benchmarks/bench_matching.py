"""Keypoint transfer by feature matching at SD 1.5's sizes: the subsampled grid vs the full one.

One pair of random SD-1.5-shaped features (1280 x 32 x 32, DIFT's up_blocks[1] at 512 px),
512 x 512 part maps, 15 keypoints, ``transfer_by_features`` with ``within`` image, box and
part. ``subsampled``: the library as it is (maps above ``MATCH_GRID_MAX`` a side are
subsampled to it). ``full_grid``: the same call with the limit lifted to 512 (matching on the
full part-map grid, as before). Each in a fresh subprocess, so its peak RSS is its own; prints
one JSON object: seconds per pair, peak MB, and the largest error in pixels against the known
answer (the target is the source moved by whole feature cells).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_matching.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
import diffparts.parts.matching as m
m.MATCH_GRID_MAX = int(sys.argv[1])
rng = np.random.default_rng(0)
src = rng.normal(size=(1280, 32, 32)).astype(np.float32)
tgt = np.roll(src, (2, 3), axis=(1, 2))     # the target: the source moved 3 cells right, 2 down

maps = np.zeros((512, 512), np.int64); maps[100:400, 100:400] = 1
pts = rng.uniform(120, 380, size=(15, 2))
box = (50, 50, 400, 400)
start = time.perf_counter()
out = [m.transfer_by_features(src, tgt, pts, maps, maps, box, box, (512, 512), (512, 512), within=w)[0].tolist()
       for w in ("image", "box", "part")]
seconds = (time.perf_counter() - start) / 3
truth = pts + [3 * 16, 2 * 16]               # 16 image pixels per feature cell
error = max(float(np.abs(np.asarray(o) - truth).max()) for o in out)
print(json.dumps({"seconds_per_pair": round(seconds, 3),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "max_error_px": round(error, 1)}))
"""


def run(limit: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(limit)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from diffparts.parts.matching import MATCH_GRID_MAX

    sub, full = run(MATCH_GRID_MAX), run(512)
    print(json.dumps({"features": [1280, 32, 32], "maps": [512, 512], "keypoints": 15,
                      "subsampled": {"grid": MATCH_GRID_MAX, **sub}, "full_grid": {"grid": 512, **full},
                      "speedup": round(full["seconds_per_pair"] / max(sub["seconds_per_pair"], 1e-9), 1)}))


if __name__ == "__main__":
    main()
