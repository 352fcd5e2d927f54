"""Capture head-averaged attention probabilities from a UNet forward (docs/design.md §5.1 "Extract").

A :class:`CaptureProcessor` replaces the processor of every ``attn1`` (self-attention) and
``attn2`` (cross-attention) of a ``UNet2DConditionModel`` through ``unet.set_attn_processor``;
:class:`AttentionCapture` installs them and restores the originals in a ``finally``.

The processor does the default processor's math (``attn.head_to_batch_dim``,
``attn.get_attention_scores``) and computes the layer output from the same probabilities, so
the attention is computed once. It keeps only the head mean of the probabilities, added to a
running sum per resolution (the side ``r`` of the query grid, read from the query length
``q = r * r``); every layer's per-head probabilities are never held at once. Large maps
(SD at 512 px: 4096 x 4096 per head) go through in chunks of heads, so the peak extra memory
is one chunk plus the running sums.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: Bytes of float32 probabilities one chunk of (image head) rows may hold (64 MiB: one SD head
#: at 64 x 64, where q = k = 4096).
DEFAULT_CHUNK_BYTES = 64 * 2**20


def query_side(q: int) -> int:
    """The side ``r`` of a square query grid of ``q = r * r`` positions."""
    side = math.isqrt(q)
    if side * side != q:
        raise ValueError(
            f"attention query length {q} is not a square grid; capture needs square latents "
            "(resize images to a square size)"
        )
    return side


class CaptureProcessor:
    """Attention processor that records head-mean probabilities into an :class:`AttentionCapture`.

    ``original`` is the processor it replaces; it runs unchanged when the call's kind (self or
    cross) is not captured.
    """

    def __init__(self, capture: "AttentionCapture", name: str, original: Any):
        self.capture = capture
        self.name = name
        self.original = original

    def _probabilities(self, attn, query, key_t, mask):
        """``attn.get_attention_scores`` computed in the capture's reused buffer: rows q k.

        Same math and dtypes (``upcast_attention``, ``upcast_softmax``) as diffusers'
        ``Attention.get_attention_scores``; the scores are written into a buffer kept across
        layers and softmaxed in place, which halves the memory traffic of a 4096 x 4096 map.
        """
        dtype = query.dtype
        if attn.upcast_attention:
            query, key_t = query.float(), key_t.float()
        rows, n_q, n_k = query.shape[0], query.shape[1], key_t.shape[2]
        scores = self.capture.buffer((rows, n_q, n_k), query.dtype, query.device)
        if mask is None:
            torch.baddbmm(scores, query, key_t, beta=0, alpha=attn.scale, out=scores)
        else:
            torch.baddbmm(mask.to(scores.dtype), query, key_t, beta=1, alpha=attn.scale, out=scores)
        if attn.upcast_softmax and scores.dtype != torch.float32:
            return scores.softmax(-1, dtype=torch.float32).to(dtype)
        torch.softmax(scores, -1, out=scores)
        return scores if scores.dtype == dtype else scores.to(dtype)

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        kind = "self" if encoder_hidden_states is None else "cross"
        if not self.capture.wants(kind):
            return self.original(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )

        # 1. Inputs, as diffusers' AttnProcessor prepares them.
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        # 2. Projections, split into heads.
        query = attn.to_q(hidden_states)  # image q (head d)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)  # image k (head d)
        value = attn.to_v(encoder_hidden_states)  # image k (head d)
        query = attn.head_to_batch_dim(query)  # (image head) q d
        key = attn.head_to_batch_dim(key)  # (image head) k d
        value = attn.head_to_batch_dim(value)  # (image head) k d
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)

        # 3. Probabilities chunk by chunk of (image head) rows, into one reused buffer; the
        #    output and the head mean come from the same probabilities.
        heads = attn.heads
        n_q, n_k = query.shape[1], key.shape[1]
        side = query_side(n_q)
        running = self.capture.running_sum(kind, side, (batch_size, n_q, n_k), query.device)  # image q k
        out = torch.empty(query.shape[0], n_q, value.shape[2], dtype=value.dtype, device=value.device)
        key_t = key.transpose(1, 2)  # (image head) d k
        for start, stop in self.capture.row_chunks(batch_size, heads, n_q * n_k):
            mask = None if attention_mask is None else attention_mask[start:stop]
            probs = self._probabilities(attn, query[start:stop], key_t[start:stop], mask)  # rows q k
            torch.bmm(probs, value[start:stop], out=out[start:stop])  # rows q d
            if stop - start >= heads:  # whole images: rows = (image head)
                i0, i1 = start // heads, stop // heads
                head_sum = probs.unflatten(0, (i1 - i0, heads)).sum(1, dtype=torch.float32)  # image q k
                running[i0:i1].add_(head_sum, alpha=1.0 / heads)
            else:  # some heads of one image, added one by one (no temporary)
                for row in probs:  # q k
                    running[start // heads].add_(row, alpha=1.0 / heads)
            del probs

        # 4. Output projection, as diffusers' AttnProcessor.
        hidden_states = attn.batch_to_head_dim(out)  # image q (head d)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class AttentionCapture:
    """Context manager capturing head-averaged attention of every ``attn1``/``attn2`` of a UNet.

    ```python
    with AttentionCapture(unet) as capture:
        unet(latents, t, encoder_hidden_states=embeddings)
    capture.self_maps    # {r: (image, q, k) float32}   layer mean of head means, q = k = r*r
    capture.cross_maps   # {r: (image, q, token) float32}
    ```

    Several forwards inside one ``with`` (several timesteps) add to the same running sums, so the
    maps are then also the mean over forwards; their batch sizes must agree. Maps stay on the
    UNet's device in float32. The original processors are restored on exit, also when the
    forward raises.
    """

    def __init__(
        self,
        unet,
        self_attn: bool = True,
        cross_attn: bool = True,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ):
        if not (self_attn or cross_attn):
            raise ValueError("AttentionCapture with self_attn=False and cross_attn=False captures nothing")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.unet = unet
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        self.chunk_bytes = int(chunk_bytes)
        self._originals: dict[str, Any] | None = None
        self.reset()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything captured so far."""
        self._sums: dict[str, dict[int, torch.Tensor]] = {"self": {}, "cross": {}}
        self._counts: dict[str, dict[int, int]] = {"self": {}, "cross": {}}
        self._buffers: dict = {}

    def wants(self, kind: str) -> bool:
        return self.self_attn if kind == "self" else self.cross_attn

    def row_chunks(self, images: int, heads: int, qk: int):
        """Contiguous (start, stop) slices of the (image head) rows, each within ``chunk_bytes``.

        A slice is either several whole images (all their heads) or some heads of one image.
        """
        rows = max(1, self.chunk_bytes // (4 * qk))
        if rows >= heads:
            step = (rows // heads) * heads
            for start in range(0, images * heads, step):
                yield start, min(start + step, images * heads)
        else:
            for image in range(images):
                for h0 in range(0, heads, rows):
                    yield image * heads + h0, image * heads + min(h0 + rows, heads)

    def running_sum(self, kind: str, side: int, shape: tuple[int, ...], device) -> torch.Tensor:
        """The float32 running sum of head means at resolution ``side``, counting one more layer.

        The caller adds its layer's head mean (image, q, k|token) into the returned tensor.
        """
        sums = self._sums[kind]
        if side not in sums:
            sums[side] = torch.zeros(shape, dtype=torch.float32, device=device)
            self._counts[kind][side] = 0
        elif tuple(sums[side].shape) != tuple(shape):
            raise ValueError(
                f"{kind}-attention at resolution {side} has shape {tuple(shape)}, earlier layers had "
                f"{tuple(sums[side].shape)} (different batch sizes in one capture?)"
            )
        self._counts[kind][side] += 1
        return sums[side]

    def buffer(self, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
        """A scratch tensor of ``shape``, reused across heads and layers (freed on exit).

        Allocating a fresh 64 MiB map per head costs page faults on every call; one buffer of the
        largest chunk serves every smaller one through a view of its start.
        """
        numel = math.prod(shape)
        key = (dtype, torch.device(device))
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = self._buffers[key] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)

    def _means(self, kind: str) -> dict[int, torch.Tensor]:
        return {
            side: total / self._counts[kind][side]
            for side, total in sorted(self._sums[kind].items(), reverse=True)
        }

    @property
    def self_maps(self) -> dict[int, torch.Tensor]:
        """{r: (image, q, k)} self-attention: mean over layers of resolution r of the head mean."""
        return self._means("self")

    @property
    def cross_maps(self) -> dict[int, torch.Tensor]:
        """{r: (image, q, token)} cross-attention: mean over layers of resolution r of the head mean."""
        return self._means("cross")

    @property
    def layer_counts(self) -> dict[str, dict[int, int]]:
        """{"self"|"cross": {r: number of layer calls added}}."""
        return {kind: dict(counts) for kind, counts in self._counts.items()}

    # -- install / restore ------------------------------------------------------------------
    def __enter__(self) -> "AttentionCapture":
        if self._originals is not None:
            raise RuntimeError("AttentionCapture is already installed (nested use of one capture)")
        originals = dict(self.unet.attn_processors)
        if any(isinstance(p, CaptureProcessor) for p in originals.values()):
            # Two captures on one UNet (e.g. two threads sharing a pipeline) would mix their maps.
            raise RuntimeError("another AttentionCapture is already installed on this UNet; use one at a time")
        processors = {}
        for name, original in originals.items():
            layer = name.rsplit(".", 2)[-2] if name.endswith(".processor") else ""
            if layer in ("attn1", "attn2"):
                processors[name] = CaptureProcessor(self, name, original)
            else:
                processors[name] = original
        self._originals = originals
        try:
            self.unet.set_attn_processor(processors)
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self) -> None:
        self._buffers = {}
        originals, self._originals = self._originals, None
        if originals is not None:
            # set_attn_processor pops from the dict it is given: hand it a copy.
            self.unet.set_attn_processor(dict(originals))

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()  # runs whether or not the with-body raised
