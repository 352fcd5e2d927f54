"""Segmentation of one image from its aggregated self-attention (docs/design.md §5.2-5.4).

- ``diffseg``: DiffSeg's iterative KL merge (``DiffSeg``, ``diffseg_segment``)
- ``ncut``: random-walk Normalised Cuts (``RecursiveNCut``)
- ``hierarchy``: nested levels and HSG transition matrices
- ``thresholds``: KL thresholds chosen from the data
- ``naming``: semantic names of segments from cross-attention
- ``synthetic``: attention with regions known in advance (tests, benchmarks)

Import from the submodules; this package imports nothing eagerly.
"""
