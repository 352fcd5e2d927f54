"""A store after parts and embeddings (K = 2, noise-loss tokens), with a folder corpus.

Built on the shared ``parts_store`` fixture (tests/conftest.py), so the embeddings and the
occlusion stages test against the same store.
"""

from __future__ import annotations

import pytest


@pytest.fixture()
def occlusion_store(parts_store, tiny_pipeline):
    """(store path, corpus folder, model path): 8 images, segments, parts, tokens of both categories."""
    from diffparts.inversion.stage import finish_index, setup_embeddings, train_category
    from diffparts.inversion.train import InversionConfig
    from diffparts.store import open_store

    store, corpus = parts_store
    root = open_store(store, "r+")
    model = str(tiny_pipeline[0])
    config = InversionConfig(steps=2, batch_size=2)
    setup_embeddings(root, corpus, ["noise"], config, "h", 32, store=store)
    rows = [train_category(root, store, corpus, model, c, config) for c in (1, 2)]
    finish_index(store, ["noise"], rows)
    return store, corpus, model
