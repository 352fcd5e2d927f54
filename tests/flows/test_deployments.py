"""prefect.yaml: every deployment's entrypoint is a flow that accepts the parameters given."""

import importlib
import inspect
from pathlib import Path

import yaml
from prefect import Flow

from diffparts import REPO_ROOT


def deployments():
    return yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]


def test_entrypoints_are_flows_taking_the_listed_parameters():
    names = set()
    for deployment in deployments():
        path, name = deployment["entrypoint"].split(":")
        assert (REPO_ROOT / path).is_file(), deployment["entrypoint"]
        module = importlib.import_module(Path(path).with_suffix("").as_posix().replace("/", "."))
        flow = getattr(module, name)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment.get("parameters") or {}) <= accepted, deployment["name"]
        names.add(deployment["name"])
    assert {"extract", "segment", "parts", "bird-parts"} <= names
