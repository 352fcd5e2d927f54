"""diffparts.store: the Zarr v3 store every stage reads and writes (DESIGN.md section 6).

``layout``: opening, versions, per-image arrays, done markers, failures.
``manifest``: model/config/image hashes and the single-writer set-up before a fan-out.
``attention``: the ``attention/`` group, its storage precision, per-image writes and reads.
"""

from diffparts.store.attention import (
    PRECISIONS,
    STAGE,
    StoreConfig,
    attention_tokens,
    create_attention_arrays,
    dequantise_key_maps,
    has_attention_arrays,
    quantise_key_maps,
    read_cross_attention,
    read_self_attention,
    write_attention,
)
from diffparts.store.layout import (
    clear_failure,
    create_stage_array,
    done_mask,
    ensure_stage,
    failures,
    grow_image_axis,
    image_count,
    image_table,
    is_done,
    mark_done,
    open_store,
    record_failure,
    stage_arrays,
    version_group,
)
from diffparts.store.manifest import (
    PreparedStore,
    StoreMismatchError,
    build_manifest,
    code_version,
    config_hash,
    file_sha256,
    manifest,
    model_hash,
    prepare_store,
)

__all__ = [
    "PRECISIONS",
    "STAGE",
    "PreparedStore",
    "StoreConfig",
    "StoreMismatchError",
    "attention_tokens",
    "build_manifest",
    "clear_failure",
    "code_version",
    "config_hash",
    "create_attention_arrays",
    "create_stage_array",
    "dequantise_key_maps",
    "done_mask",
    "ensure_stage",
    "failures",
    "file_sha256",
    "grow_image_axis",
    "has_attention_arrays",
    "image_count",
    "image_table",
    "is_done",
    "manifest",
    "mark_done",
    "model_hash",
    "open_store",
    "prepare_store",
    "quantise_key_maps",
    "read_cross_attention",
    "read_self_attention",
    "record_failure",
    "stage_arrays",
    "version_group",
    "write_attention",
]
