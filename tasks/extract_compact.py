"""The worker's side of a compact store (docs/store.md "Compact stores"; issue 20, item 3).

Called by ``tasks.extract.extract_batch`` right after a batch's forward, per image:
``stored_attention`` rounds the attention to the store's precision as a read would give it back;
``compact_image`` segments it with the segment stage's own function and writes the segments,
the attention pooled per object-box bin and the cross-attention.
"""

from __future__ import annotations

import numpy as np


def stored_attention(attn, precision: str):
    """The attention as a store of ``precision`` would give it back (``store.stored_self_attention``):
    numpy on the CPU (bit for bit what the segment stage reads), torch on a GPU for float16."""
    import torch

    from diffparts.store import stored_self_attention

    if isinstance(attn, np.ndarray) or attn.device.type == "cpu" or precision != "float16":
        values = stored_self_attention(attn if isinstance(attn, np.ndarray) else attn.cpu().numpy(), precision)
        return values if isinstance(attn, np.ndarray) or attn.device.type == "cpu" else torch.from_numpy(values).to(
            attn.device)
    rounded = attn.half().float()
    total = rounded.sum((-2, -1), keepdim=True)
    return torch.where(total > 0, rounded / torch.where(total > 0, total, 1.0), 0.0)


def compact_image(root, index: int, attn, cross: np.ndarray, compact: dict, bbox, size) -> int:
    """Segment one image's attention and write its segments, pooled box bins and cross-attention.

    attn: (qy, qx, ky, kx) float32, numpy or a torch tensor on the model's device; it is first
    rounded to the store's precision as a read would give it (so the segments and descriptors
    equal those of the two-step path on a kept tensor). The segmenter is the segment stage's own
    (``tasks.segment.compute_levels``, settings recorded in ``segments/``); the bins are
    ``attn (q, k) @ box_bins(...) (k, bin)`` for the image's object box (``store.compact``).
    Returns the bytes handed to Zarr.
    """
    import torch

    from diffparts.parts.descriptors import DescriptorConfig, box_bins, image_box, scale_box
    from diffparts.store import write_attention, write_box_bins
    from diffparts.store.attention import to_float16, to_float32
    from tasks.segment import _pad_levels, compute_levels, write_levels

    settings, descriptor = compact["settings"], compact["descriptor"]
    attn = stored_attention(attn, compact["precision"])            # qy qx ky kx, as read back
    cross_read = to_float32(to_float16(np.asarray(cross, np.float32)))  # token qy qx, as read back
    levels = compute_levels(attn, settings)                           # level y x
    write_levels(root, index, levels, settings, cross_read)
    labels = _pad_levels(levels, settings["n_levels"])[int(descriptor["level"])]  # y x, as segment_map reads
    h, w = labels.shape
    box = None if bbox is None else scale_box(bbox, size, (w, h))
    config = DescriptorConfig(**descriptor)
    box_arr, _ = image_box(labels, box, config)
    res = int(attn.shape[0])
    onehot = box_bins((h, w), box_arr, res, config.box_grid)          # k bin
    if isinstance(attn, np.ndarray):
        bins = attn.reshape(res * res, res * res) @ onehot             # q bin
    else:
        bins = (attn.reshape(res * res, res * res) @ torch.from_numpy(onehot).to(attn.device)).cpu().numpy()
    nbytes = write_box_bins(root, index, bins)
    return nbytes + write_attention(root, index, None, cross)
