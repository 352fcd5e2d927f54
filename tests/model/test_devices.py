"""Each worker of a local GPU cluster takes its own GPU (issue 12, item 13), tested without one."""

from __future__ import annotations

import logging
import time

import pytest

from diffparts.model.devices import dask_worker_index, pinned_device, worker_device


def test_worker_device_maps_a_bare_cuda_by_worker_number():
    assert [worker_device("cuda", i, 2) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_device("cuda:3", 1, 4) == "cuda:3"  # an explicit index stays
    assert worker_device("cpu", 1, 4) == "cpu"
    assert worker_device("cuda", None, 2) == "cuda" and worker_device("cuda", 1, 0) == "cuda"
    assert pinned_device("cuda", device_count=2) == "cuda"  # not inside a Dask worker


def _report(_):
    """What an extract batch task would use on this worker, with two (pretend) GPUs."""
    time.sleep(0.05)
    return dask_worker_index(), pinned_device("cuda", device_count=2)


@pytest.mark.parametrize("processes", [False, True])
def test_two_local_gpu_workers_use_their_own_gpu(processes):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, resources={"GPU": 1},
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        futures = [client.submit(_report, k, resources={"GPU": 1}, pure=False) for k in range(8)]
        seen = client.gather(futures)
    assert {worker for worker, _ in seen} == {0, 1}  # both workers took tasks
    assert all(device == f"cuda:{worker}" for worker, device in seen)


def test_flow_asks_for_pinning_only_on_its_own_local_cluster(monkeypatch):
    """The flow passes pin_gpu to the batch tasks for a bare cuda on --dask-workers only."""
    import flows.extract as flow

    calls = []

    class Stop(Exception):
        pass

    def fake_fan_out(*args, **kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(flow, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(flow, "describe_images", lambda corpus, limits, store=None: [{"image_id": 1, "name": "a", "sha256": ""}])
    monkeypatch.setattr(flow, "identify_run", lambda *a: {})
    monkeypatch.setattr(flow, "prepare_store", lambda *a: {"version": 1, "pending": [0], "added": [], "changed": [],
                                                            "images": [{"index": 0}]})
    monkeypatch.setattr(flow, "stored_bytes", lambda *a: 0)
    monkeypatch.setattr(flow, "create_attention_arrays", lambda *a: {"form": "kept"})
    monkeypatch.setattr(flow.extract_batches, "with_options", lambda **kw: fake_fan_out)
    for kwargs, pinned in (({"device": "cuda", "dask_workers": 2}, True),
                           ({"device": "cuda:1", "dask_workers": 2}, False),
                           ({"device": "cuda", "dask_address": "tcp://x:8786"}, False),
                           ({"device": "cuda"}, False)):
        with pytest.raises(Stop):
            flow.extract_attention.fn("corpus", "model", "s.zarr", **kwargs)
        assert calls[-1]["pin_gpu"] is pinned
        assert calls[-1]["gpu_annotate"] is ("dask_workers" in kwargs or "dask_address" in kwargs)
