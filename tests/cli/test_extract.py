"""``diffparts extract`` argument parsing (the flow itself is tested in tests/flows)."""

from __future__ import annotations

import pytest

from diffparts.cli import build_parser
from diffparts.cli.extract import run_extract


def test_parse_defaults_and_options():
    args = build_parser().parse_args(["extract", "--corpus", "c", "--store", "s.zarr", "--dask-workers", "2"])
    assert args.handler is run_extract
    assert (args.batch_size, args.timestep, args.prompt, args.precision) == (4, 300, "", "float16")
    assert (args.dask_workers, args.dask_address, args.new_version, args.model) == (2, None, False, None)


def test_dask_options_exclusive_and_precision_checked(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["extract", "--corpus", "c", "--store", "s", "--dask-workers", "2", "--dask-address", "tcp://x:1"]
        )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["extract", "--corpus", "c", "--store", "s", "--precision", "int4"])


def test_help_mentions_new_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["extract", "--help"])
    assert exit_info.value.code == 0
    assert "--new-version" in capsys.readouterr().out


def test_features_are_on_by_default_and_can_be_turned_off():
    from diffparts.cli.extract import feature_settings

    base = ["extract", "--corpus", "c", "--store", "s"]
    assert feature_settings(build_parser().parse_args(base)) == {"noise_samples": 0}
    assert feature_settings(build_parser().parse_args(base + ["--no-features"])) is None
    dift = build_parser().parse_args(base + ["--feature-blocks", "1", "--feature-timestep", "261",
                                             "--feature-noise-samples", "8", "--feature-prompt", "a photo of a bird"])
    assert feature_settings(dift) == {"noise_samples": 8, "blocks": [1], "timestep": 261, "prompt": "a photo of a bird"}
