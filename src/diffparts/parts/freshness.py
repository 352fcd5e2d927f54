"""Whether the parts stage of a store is up to date, so a re-run can skip it.

The parts stage is dataset-wide: its categories come from every segmented image at once, so
it is either redone whole or not at all. It is up to date when the same images (by index and
content hash) were clustered with the same settings and every one of them has its labels;
then the summary its last run recorded is returned instead of clustering again. A corpus that
grew, a re-segmented image (its parts marker is cleared with its segments) or other settings
make it stale, and the stages that read the categories see new centres and redo themselves.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import numpy as np
import zarr

from diffparts.store.markers import read_image_vector

#: Attribute of ``parts/`` holding the identity of the run that made it.
IDENTITY_ATTR = "run_identity"
#: Attribute of ``parts/`` holding that run's summary (JSON).
SUMMARY_ATTR = "run_summary"


def parts_identity(root: zarr.Group, indices: Sequence[int], settings: dict) -> dict:
    """What the categories depend on: the images used (index and sha256) and the settings."""
    from diffparts.store.layout import image_hashes

    shas = image_hashes(root) if "images/sha256" in root else None
    images = [[int(i), "" if shas is None else str(shas[int(i)])] for i in sorted(indices)]
    digest = hashlib.sha256(json.dumps(images).encode()).hexdigest()[:16]
    return {"images": len(images), "images_sha": digest, "settings": json.loads(json.dumps(settings))}


def stored_summary(root: zarr.Group, identity: dict, indices: Sequence[int]) -> dict | None:
    """The recorded summary if the parts stage was made with ``identity`` and every image of
    ``indices`` has its labels; None when it must be (re)done."""
    if "parts" not in root or "parts/done" not in root or "parts/centers" not in root:
        return None
    attrs = dict(root["parts"].attrs)
    if attrs.get(IDENTITY_ATTR) != identity or SUMMARY_ATTR not in attrs:
        return None
    done = np.asarray(read_image_vector(root["parts/done"]), bool)
    if any(int(i) >= len(done) or not done[int(i)] for i in indices):
        return None
    return json.loads(attrs[SUMMARY_ATTR])


def record_summary(root: zarr.Group, identity: dict, summary: dict) -> None:
    """Record the finished run's identity and summary on ``parts/`` (after its labels)."""
    root["parts"].attrs.update({IDENTITY_ATTR: identity, SUMMARY_ATTR: json.dumps(summary, default=str)})
