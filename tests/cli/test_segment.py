"""`diffparts segment` argument handling (the flow itself is tested in tests/flows)."""

import sys
import types

import pytest

from diffparts.cli import build_parser


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--tau", "0.2"], {"tau": 0.2, "tau_mode": "constant"}),  # a tau on its own means constant
        (["--tau", "0.2", "--tau-mode", "auto"], {"tau": 0.2, "tau_mode": "auto"}),
        ([], {}),  # nothing given: the NCut defaults (automatic tau)
    ],
)
def test_tau_implies_constant_mode_unless_told(monkeypatch, extra, expected):
    seen = {}

    def fake_segment_dataset(store, **kwargs):
        seen.update(kwargs["ncut"])
        return {"failed": 0}

    monkeypatch.setitem(sys.modules, "flows.segment", types.SimpleNamespace(segment_dataset=fake_segment_dataset))
    args = build_parser().parse_args(["segment", "--store", "x.zarr", "--method", "ncut", *extra])
    assert args.handler(args) == 0
    assert seen == expected
