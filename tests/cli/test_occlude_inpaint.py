"""``diffparts occlude --inpaint-model``: which checkpoint completes, and bad ones refused in one line."""

from __future__ import annotations

import pytest

from diffparts.model.load import DEFAULT_MODEL
from diffparts.occlusion.complete import TOY_INPAINT_MODEL, check_inpaint_model, resolve_inpaint_model


def test_default_is_the_toy_inpainting_checkpoint_for_the_embedded_model_only(tmp_path):
    assert resolve_inpaint_model("default", None) == str(TOY_INPAINT_MODEL)
    assert resolve_inpaint_model("default", str(DEFAULT_MODEL)) == str(TOY_INPAINT_MODEL)
    assert resolve_inpaint_model("default", str(tmp_path / "another-model")) is None   # blending
    assert resolve_inpaint_model("blend", None) is None and resolve_inpaint_model(None, None) is None
    assert resolve_inpaint_model("org/sd-inpainting", None) == "org/sd-inpainting"


def test_check_accepts_inpainting_folders_and_names_what_is_not_one(tmp_path):
    check_inpaint_model(str(TOY_INPAINT_MODEL))                   # 9 input channels
    check_inpaint_model("default")
    check_inpaint_model("org/sd-inpainting")                      # a hub id: checked when loaded
    with pytest.raises(ValueError, match="not an inpainting pipeline: its UNet takes 4 input channels"):
        check_inpaint_model(str(DEFAULT_MODEL))
    with pytest.raises(ValueError, match="does not exist"):
        check_inpaint_model(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no unet/config.json"):
        check_inpaint_model(str(tmp_path))


def test_cli_refuses_a_text_to_image_model_in_one_line(tmp_path, capsys):
    from diffparts.cli import main

    code = main(["occlude", "--store", str(tmp_path / "s.zarr"), "--inpaint-model", str(DEFAULT_MODEL)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(DEFAULT_MODEL) in err[0] and "not an inpainting pipeline" in err[0]
