"""One GPU slot per GPU task, across every run and deployment (prefect.yaml's global limit).

``diffparts serve`` creates the global concurrency limit ``diffparts-gpu`` with one slot per
GPU (``prefect gcl create diffparts-gpu --limit N`` on the work-pool route). A task on a CUDA
device holds a slot while it runs, so two runs scheduled at once queue on the GPUs instead of
oversubscribing them. CPU tasks take no slot. Where the limit does not exist (a plain
``diffparts run`` without a server set up), the task runs unlimited (Prefect's non-strict mode).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

#: The name declared in prefect.yaml under ``definitions: concurrency: gpu: name``.
GPU_LIMIT = "diffparts-gpu"


@contextlib.contextmanager
def gpu_slot(device: str) -> Iterator[None]:
    """Hold one slot of ``GPU_LIMIT`` for the block when ``device`` is a CUDA device."""
    if not str(device).startswith("cuda"):
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(GPU_LIMIT, occupy=1, strict=False, raise_on_lease_renewal_failure=False):
        yield
