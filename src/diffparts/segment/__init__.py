"""Segmentation of one image from its aggregated self-attention (docs/design.md §5.2-5.4).

- ``diffseg``: DiffSeg's iterative KL merge (``DiffSeg``, ``diffseg_segment``)
- ``ncut``: recursive Normalised Cuts (``RecursiveNCut``, DiffCut's affinity by default), with its
  parts ``ncut_affinity``, ``ncut_spectrum``, ``ncut_cut``, ``ncut_assign`` and ``ncut_torch``
- ``hierarchy``: nested levels and HSG transition matrices
- ``thresholds``: KL thresholds chosen from the data
- ``naming``: semantic names of segments from cross-attention
- ``synthetic``: attention with regions known in advance (tests, benchmarks)

Import from the submodules; this package imports nothing eagerly.
"""
