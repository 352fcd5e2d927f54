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


def test_no_flow_parameter_names_code_to_import():
    """Issue 12: a deployment or API call must not be able to import and call a function."""
    import re

    import flows.extract
    import flows.parts
    import flows.pipeline
    import flows.segment

    code_like = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    for module in (flows.extract, flows.segment, flows.parts, flows.pipeline):
        for flow in [v for v in vars(module).values() if isinstance(v, Flow)]:
            for name, param in inspect.signature(flow.fn).parameters.items():
                assert name not in ("extractor", "hook", "callback"), (flow.name, name)
                default = param.default
                assert not (isinstance(default, str) and code_like.match(default)), (flow.name, name, default)
    source = (REPO_ROOT / "tasks" / "extract.py").read_text()
    assert "import_module" not in source
