"""Real sizes (issue 13, item 10): the five stages on an SD-1.5-shaped pipeline, 2 images.

Opt-in (``make test-slow``): 8-14 minutes and 7 GB of memory on 2 CPU cores. It runs
``benchmarks/real_sizes.py``'s :func:`run_all` (random weights in SD 1.5's shapes, 512 px,
77-token prompts, self-attention at 64 x 64 = 4096 queries), each stage a ``diffparts``
subprocess, then checks what the stages left in the store.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    """``benchmarks/real_sizes.py`` as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("real_sizes", ROOT / "benchmarks" / "real_sizes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_all_five_stages_run_at_stable_diffusion_1_5_sizes(tmp_path):
    import torch

    from diffparts.model.load import load_pipeline
    from diffparts.store import done_mask, open_store, read_self_attention

    script = load_script()
    work = tmp_path / "work"
    report = script.run_all(work, n=2, k=4)
    print(json.dumps(report, default=str))
    assert report["build_model"]["rc"] == 0, report["build_model"].get("log_tail")
    failed = {stage: r.get("log_tail") for stage, r in report["stages"].items() if r["rc"]}
    assert not failed, failed
    assert list(report["stages"]) == list(script.STAGES)
    for stage, result in report["stages"].items():
        assert result["seconds"] > 0 and result["peak_rss_mb"] > 0, stage

    store = work / "store.zarr"
    root = open_store(store)
    # 1. Every per-image stage finished both images, with no recorded failure.
    for stage in ("attention", "features", "segments", "parts"):
        assert done_mask(root, stage).tolist() == [True, True], stage
        assert list(root[f"failures/{stage}"][:]) == ["", ""], stage

    # 2. SD 1.5's attention: 64 x 64 self-attention (4096 queries and keys) from the layers at
    #    64, 32, 16 and 8; cross-attention over the 77 prompt positions.
    assert report["attention_layers"]["self"] == {"64": 5, "32": 5, "16": 5, "8": 1}
    attn = root["attention"]
    assert attn.attrs["resolution"] == 64 and attn.attrs["image_size"] == 512
    assert root["attention/self"].shape == (2, 64, 64, 64, 64)
    assert root["attention/cross"].shape == (2, 77, 64, 64)
    assert len(attn.attrs["tokens"]) == 77
    key_maps = read_self_attention(root, 1).reshape(4096, 4096)  # q k
    np.testing.assert_allclose(key_maps.sum(1), 1.0, rtol=1e-3)
    cross = np.asarray(root["attention/cross"][1], np.float32)  # token qy qx
    np.testing.assert_allclose(cross.sum(0), 1.0, atol=1e-2)
    assert root["features/up_1"].shape == (2, 1280, 32, 32)  # DIFT's block: half the latent side

    # 3. Segments and part labels at the image size; several segments, K + 1 labels at most.
    assert root["segments/labels"].shape[0] == 2 and root["segments/labels"].shape[-2:] == (512, 512)
    assert (root["segments/n_segments"][:, 0] > 1).all()
    labels = root["parts/labels"][:]
    assert labels.shape == (2, 512, 512)
    assert labels.min() >= 0 and labels.max() <= 4

    # 4. The learned token: diffusers' load_textual_inversion takes the file, and the row it adds
    #    after CLIP's 49,408 tokens is the vector the store recorded.
    category = report["settings"]["category"]
    token = f"<part-{category}>"
    assert bool(root["embeddings/noise/done"][category])
    pipe = load_pipeline(work / "model", dtype=torch.float16)
    assert len(pipe.tokenizer) == 49408
    pipe.load_textual_inversion(str(Path(f"{store}.embeddings") / "noise" / f"part-{category}.safetensors"),
                                token=token)
    token_id = pipe.tokenizer.convert_tokens_to_ids(token)
    assert token_id == 49408
    row = pipe.text_encoder.get_input_embeddings().weight[token_id].detach().float().numpy()
    np.testing.assert_allclose(row, root["embeddings/noise/vectors"][category][0], rtol=1e-2, atol=1e-3)

    # 5. The occlusion case finished: all 7 variants inpainted or kept, assigned at 512 px.
    assert root["occlusion/done"][:].tolist() == [True]
    assert list(root["occlusion/failures"][:]) == [""]
    variants = report["stages"]["occlude"]["output"]["variants"]
    assert root["occlusion/images"].shape == (1, len(variants), 512, 512, 3)
    assert root["occlusion/labels"].shape == (1, len(variants), 512, 512)

    # 6. The report's sizes and the derived GPU figures are there for docs/real-sizes.md.
    assert report["sizes"]["self_attention_tokens"] == 4096
    assert report["sizes"]["store_bytes_per_image_total"] > 0
    assert report["gpu_estimate"]["gpu_s"]["extract_per_image"] > 0
