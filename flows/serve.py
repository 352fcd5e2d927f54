"""Serve every deployment of ``prefect.yaml`` from this process, with its schedules.

``diffparts serve`` uses ``prefect.serve``: one long-running process registers the deployments
with the API it is configured for (``PREFECT_API_URL``), fires their schedules and runs each
flow run in a subprocess of its own. There is no work pool and no worker to start, which is
what a single machine (or a GPU box driving a Dask cluster) wants; the work-pool route
(``prefect deploy --all`` + ``prefect worker start``) is for runs started on other machines.
prefect.yaml stays the one description of the deployments both routes use.

Before serving, the global concurrency limit named in ``prefect.yaml`` (``definitions:
concurrency``) is created or set to the number of GPUs, so that no more GPU tasks run at once,
across every run and deployment, than there are GPUs (``tasks/gpu.py`` takes a slot around
each GPU task).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from diffparts import REPO_ROOT

PREFECT_YAML = REPO_ROOT / "prefect.yaml"


def read_spec(path: str | Path = PREFECT_YAML) -> dict:
    """prefect.yaml as a dict; FileNotFoundError / ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no deployment file {path}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("deployments"), list):
        raise ValueError(f"{path} has no 'deployments:' list")
    return spec


def gpu_limit_spec(spec: dict) -> dict:
    """{"name", "limit"} of the GPU concurrency limit declared in ``definitions: concurrency: gpu``."""
    gpu = ((spec.get("definitions") or {}).get("concurrency") or {}).get("gpu")
    if not isinstance(gpu, dict) or not gpu.get("name"):
        raise ValueError("prefect.yaml declares no GPU concurrency limit (definitions: concurrency: gpu: name)")
    return {"name": str(gpu["name"]), "limit": int(gpu.get("limit", 1))}


def load_flow(entrypoint: str):
    """The flow object of ``path/to/file.py:name``, restricted to this repository's flows/ package."""
    path, _, name = entrypoint.partition(":")
    if not (path.startswith("flows/") and path.endswith(".py") and name.isidentifier()):
        raise ValueError(f"entrypoint {entrypoint!r} is not a flow of this repository (flows/<file>.py:<flow>)")
    module = importlib.import_module(path[:-3].replace("/", "."))
    return getattr(module, name)


def _schedules(entry: dict) -> list:
    from prefect.schedules import Cron, Interval

    out = []
    for item in entry.get("schedules") or []:
        active = bool(item.get("active", True))
        if "cron" in item:
            out.append(Cron(item["cron"], timezone=item.get("timezone"), active=active))
        elif "interval" in item:
            out.append(Interval(float(item["interval"]), timezone=item.get("timezone"), active=active))
        else:
            raise ValueError(f"deployment {entry.get('name')!r}: schedule {item} has neither cron nor interval")
    return out


def build_deployments(spec: dict, only: list[str] | None = None) -> list:
    """A ``RunnerDeployment`` per entry of ``spec`` (or per name in ``only``), with its
    parameters, schedules, tags and description; the work-pool settings are the worker route's."""
    entries = spec["deployments"]
    names = [e.get("name") for e in entries]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"no deployment named {', '.join(unknown)} in prefect.yaml (there are {', '.join(names)})")
    out = []
    for entry in entries:
        if only and entry["name"] not in only:
            continue
        flow = load_flow(entry["entrypoint"])
        limit = entry.get("concurrency_limit")
        if isinstance(limit, dict):
            from prefect.client.schemas.objects import ConcurrencyLimitConfig

            limit = ConcurrencyLimitConfig(**limit)
        out.append(flow.to_deployment(
            name=entry["name"], parameters=dict(entry.get("parameters") or {}), schedules=_schedules(entry),
            description=entry.get("description"), tags=list(entry.get("tags") or []), concurrency_limit=limit))
    return out


def ensure_gpu_limit(name: str, limit: int) -> dict:
    """Create the global concurrency limit ``name`` with ``limit`` slots, or set it to that."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            current = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=int(limit)))
            return {"name": name, "limit": int(limit), "created": True}
        if current.limit != int(limit):
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=int(limit)))
        return {"name": name, "limit": int(limit), "created": False}


def serve(path: str | Path = PREFECT_YAML, only: list[str] | None = None, gpus: int | None = None,
          limit: int | None = None) -> None:
    """Serve the deployments of ``path`` until interrupted (Ctrl-C pauses their schedules)."""
    import prefect

    spec = read_spec(path)
    gpu = gpu_limit_spec(spec)
    ensure_gpu_limit(gpu["name"], gpus if gpus is not None else gpu["limit"])
    deployments = build_deployments(spec, only)
    prefect.serve(*deployments, limit=limit)
