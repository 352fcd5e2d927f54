"""Which GPU a Dask worker of a local cluster uses (issue 12, item 13).

A local cluster started for ``--device cuda`` (``flows/extract.py: make_task_runner``) gives
every worker the resource ``GPU=1``, so each runs one batch at a time; without more, every
worker would then load its model on ``cuda`` = device 0. ``LocalCluster`` names its workers
0, 1, ..., n-1, so worker ``i`` takes ``cuda:<i mod device_count>``: with two GPUs and two
workers each GPU gets one worker. ``CUDA_VISIBLE_DEVICES`` still applies (``cuda:1`` is the
second visible GPU). Only a bare ``cuda`` is mapped: ``cuda:2`` stays as asked, and workers of
another cluster (``--dask-address``; e.g. dask-cuda's, which set ``CUDA_VISIBLE_DEVICES`` per
worker themselves) are not mapped at all, because the flow asks for the mapping only for its
own local cluster.
"""

from __future__ import annotations


def worker_device(device: str, worker_index: int | None, device_count: int) -> str:
    """``cuda:<worker_index mod device_count>`` for a bare ``cuda``; anything else unchanged.

    ``worker_index`` None (not a numbered worker) or ``device_count`` < 1 leave ``device`` as is.
    """
    if device != "cuda" or worker_index is None or device_count < 1:
        return device
    return f"cuda:{int(worker_index) % int(device_count)}"


def dask_worker_index() -> int | None:
    """The number of the Dask worker running this code (LocalCluster: 0..n-1), else None."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not inside a Dask worker
        return None
    try:
        return int(name)
    except (TypeError, ValueError):  # a named worker of another cluster
        return None


def cuda_device_count() -> int:
    """GPUs torch can see (0 without CUDA)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def pinned_device(device: str, device_count: int | None = None) -> str:
    """The device this Dask worker of a local cluster uses for ``device`` (``worker_device``).

    ``device_count``: GPUs to spread over (default: what torch sees). Outside a Dask worker,
    ``device`` unchanged.
    """
    if device != "cuda":
        return device
    index = dask_worker_index()
    if index is None:
        return device
    return worker_device(device, index, cuda_device_count() if device_count is None else device_count)
