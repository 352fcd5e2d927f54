"""Parts across the dataset (docs/design.md §5.5 "Parts"): segment descriptors, streaming clustering into part
categories, per-pixel part maps consistent across images, keypoint transfer and its scores,
and pictures (galleries, overlays).

``descriptors``: one descriptor per segment, foreground/background.
``cluster``: ``StreamingPartClusterer`` (streaming k-means over Zarr blocks, K by silhouette).
``dataset``: the ``parts/`` group of the store: build descriptors, cluster, paint label maps.
``transfer``: keypoint transfer through part categories; ``matching``: by UNet features.
``evaluate``: PCK, NMI/ARI of part maps at keypoints (diffparts.metrics), by either transfer.
``gallery``: per-category crop galleries and colour-consistent overlays (PNG).
``synthetic``: tiny stores and descriptors with known parts (tests, benchmarks).
"""

from diffparts.parts.cluster import ClusterConfig, KSelection, StreamingPartClusterer, cluster_segments
from diffparts.parts.dataset import (ImageInfo, build_descriptors, cluster_parts, image_infos,
                                     paint_part_labels, read_part_labels, require_segments)
from diffparts.parts.descriptors import DescriptorConfig, ImageDescriptors, describe_image
from diffparts.parts.evaluate import evaluate_parts
from diffparts.parts.transfer import transfer_points

__all__ = [
    "ClusterConfig", "DescriptorConfig", "ImageDescriptors", "ImageInfo", "KSelection",
    "StreamingPartClusterer", "build_descriptors", "cluster_parts", "cluster_segments",
    "describe_image", "evaluate_parts", "image_infos", "paint_part_labels", "read_part_labels",
    "require_segments", "transfer_points",
]
