"""A store after parts and embeddings (K = 2, noise-loss tokens), with a folder corpus."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture()
def occlusion_store(tmp_path, tiny_pipeline):
    """(store path, corpus folder, model path): 8 images, segments, parts, tokens of both categories."""
    from PIL import Image

    from diffparts.inversion.stage import finish_index, setup_embeddings, train_category
    from diffparts.inversion.train import InversionConfig
    from diffparts.parts.cluster import ClusterConfig
    from diffparts.parts.dataset import build_descriptors, cluster_parts, image_infos, paint_part_labels
    from diffparts.parts.synthetic import make_part_store
    from diffparts.store import open_store

    store = tmp_path / "store.zarr"
    make_part_store(store, n_images=8, seed=3)
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(1)
    root = open_store(store, "r+")
    for row in root["images/name"][:]:
        path = corpus / str(row)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    root["segments"].attrs["settings"] = {"method": "diffseg", "level_thresholds": [0.5], "rounds": 3,
                                          "anchors_per_side": 8, "out_shape": [16, 16], "eps": 1e-10}
    build_descriptors(root, image_infos(root, None))
    cluster_parts(root, ClusterConfig(n_clusters=2, random_state=0))
    paint_part_labels(root)
    model = str(tiny_pipeline[0])
    config = InversionConfig(steps=2, batch_size=2)
    setup_embeddings(root, str(corpus), ["noise"], config, "h", 32, store=str(store))
    rows = [train_category(root, str(store), str(corpus), model, c, config) for c in (1, 2)]
    finish_index(str(store), ["noise"], rows)
    return str(store), str(corpus), model
