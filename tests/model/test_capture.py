"""AttentionCapture: same output as the default processors, correct head-mean maps, restored."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from diffusers import UNet2DConditionModel

from diffparts.model.build import SDArchConfig, build_components
from diffparts.model.capture import AttentionCapture


@pytest.fixture(scope="module")
def unet():
    return build_components(SDArchConfig(), seed=0).unet.eval()  # attention at 16 and 8


def inputs(batch: int = 2, size: int = 16, tokens: int = 16, width: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, size, size, generator=g)  # image channel y x
    embedding = torch.randn(batch, tokens, width, generator=g)  # image token channel
    return latents, torch.tensor([300]), embedding


def forward(unet, latents, t, embedding):
    return unet(latents, t, encoder_hidden_states=embedding).sample


def reference_maps(unet, latents, t, embedding):
    """Head-mean softmax(q k^T * scale) per attn1/attn2 from the layers' inputs, mean per resolution."""
    records = []

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        records.append((module, hidden, kwargs.get("encoder_hidden_states")))

    handles = [
        m.register_forward_pre_hook(hook, with_kwargs=True)
        for name, m in unet.named_modules()
        if name.endswith(("attn1", "attn2"))
    ]
    try:
        forward(unet, latents, t, embedding)
    finally:
        for h in handles:
            h.remove()
    sums = {"self": {}, "cross": {}}
    for attn, hidden, context in records:
        kind = "self" if context is None else "cross"
        context = hidden if context is None else context
        q = attn.to_q(hidden).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # image head q d
        k = attn.to_k(context).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # image head k d
        probs = ((q @ k.transpose(-1, -2)) * attn.scale).softmax(-1).mean(1)  # image q k
        side = math.isqrt(probs.shape[1])
        sums[kind].setdefault(side, []).append(probs)
    return {kind: {r: torch.stack(v).mean(0) for r, v in d.items()} for kind, d in sums.items()}


def test_output_and_maps_equal_the_default_processor(unet):
    x = inputs()
    with torch.no_grad():
        plain = forward(unet, *x)
        ref = reference_maps(unet, *x)
        with AttentionCapture(unet) as capture:
            captured = forward(unet, *x)
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-4)
    assert sorted(capture.self_maps) == [8, 16] and sorted(capture.cross_maps) == [8, 16]
    assert capture.layer_counts == {"self": {16: 3, 8: 4}, "cross": {16: 3, 8: 4}}
    for r in (16, 8):
        assert capture.self_maps[r].shape == (2, r * r, r * r)  # image q k
        assert capture.cross_maps[r].shape == (2, r * r, 16)  # image q token
        torch.testing.assert_close(capture.self_maps[r], ref["self"][r], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(capture.cross_maps[r], ref["cross"][r], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(capture.self_maps[r].sum(-1), torch.ones(2, r * r))


def test_head_chunks_give_the_same_maps(unet):
    x = inputs()
    with torch.no_grad():
        with AttentionCapture(unet) as whole:
            out_whole = forward(unet, *x)
        with AttentionCapture(unet, chunk_bytes=1) as per_head:  # one head at a time
            out_heads = forward(unet, *x)
    torch.testing.assert_close(out_heads, out_whole)
    for r in (16, 8):
        torch.testing.assert_close(per_head.self_maps[r], whole.self_maps[r])
    assert list(whole.row_chunks(images=3, heads=4, qk=1)) == [(0, 12)]
    assert list(whole.row_chunks(images=2, heads=3, qk=whole.chunk_bytes // 4)) == [
        (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)
    ]


def test_batch_of_two_equals_two_batches_of_one(unet):
    latents, t, embedding = inputs()
    with torch.no_grad():
        with AttentionCapture(unet) as both:
            forward(unet, latents, t, embedding)
        singles = []
        for i in range(2):
            with AttentionCapture(unet) as one:
                forward(unet, latents[i : i + 1], t, embedding[i : i + 1])
            singles.append(one.self_maps)
    for r in (16, 8):
        torch.testing.assert_close(both.self_maps[r], torch.cat([s[r] for s in singles]), atol=1e-5, rtol=1e-4)


def test_processors_restored_after_exit_and_after_a_failing_forward(unet):
    before = unet.attn_processors
    x = inputs()
    with torch.no_grad():
        with AttentionCapture(unet):
            inside = unet.attn_processors
            forward(unet, *x)
        assert all(type(p).__name__ == "CaptureProcessor" for n, p in inside.items() if "attn" in n)
        after = unet.attn_processors
        assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)

        bad = (x[0], x[1], torch.randn(2, 16, 31))  # wrong embedding width: attn2's to_k raises
        with pytest.raises(RuntimeError):
            with AttentionCapture(unet):
                forward(unet, *bad)
    after = unet.attn_processors
    assert all(after[n] is before[n] for n in before)


def test_a_second_capture_on_the_same_unet_is_refused(unet):
    before = unet.attn_processors
    with AttentionCapture(unet):
        with pytest.raises(RuntimeError, match="already installed"):
            with AttentionCapture(unet):
                pass
    assert all(unet.attn_processors[n] is p for n, p in before.items())


def test_only_cross_attention(unet):
    x = inputs(batch=1)
    with torch.no_grad():
        with AttentionCapture(unet, self_attn=False) as capture:
            forward(unet, *x)
    assert capture.self_maps == {} and sorted(capture.cross_maps) == [8, 16]
    with pytest.raises(ValueError, match="captures nothing"):
        AttentionCapture(unet, self_attn=False, cross_attn=False)


def test_resolutions_come_from_the_model_layout():
    # Latent 12 with attention at 12 and 3 only (the 6 x 6 block has none): no power-of-2 constants.
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=12,
        block_out_channels=(8, 8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=2,
        cross_attention_dim=8,
        upcast_attention=True,  # as SD 2.x: the scores in float32
    ).eval()
    x = inputs(batch=1, size=12, tokens=5, width=8)
    with torch.no_grad():
        plain = forward(unet, *x)
        with AttentionCapture(unet) as capture:
            torch.testing.assert_close(forward(unet, *x), plain, atol=1e-5, rtol=1e-4)
    assert capture.layer_counts["self"] == {12: 3, 3: 4}
    assert capture.self_maps[12].shape == (1, 144, 144) and capture.cross_maps[3].shape == (1, 9, 5)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_precision_on_cpu(unet, dtype, tol):
    # torch 2.13 runs half-precision conv / baddbmm / softmax on CPU, so fp16 is tested directly.
    x = inputs(batch=1)
    low = [t.to(dtype) if t.is_floating_point() else t for t in x]
    half = copy.deepcopy(unet).to(dtype)
    with torch.no_grad():
        with AttentionCapture(unet) as full:
            forward(unet, *x)
        plain = forward(half, *low)
        with AttentionCapture(half) as capture:
            out = forward(half, *low)
    assert out.dtype == dtype
    # the default processor (SDPA) accumulates differently from baddbmm + softmax in low precision
    torch.testing.assert_close(out, plain, atol=5 * tol, rtol=5 * tol)
    for r in (16, 8):
        assert capture.self_maps[r].dtype == torch.float32
        torch.testing.assert_close(capture.self_maps[r], full.self_maps[r], atol=tol, rtol=10 * tol)
        torch.testing.assert_close(capture.self_maps[r].sum(-1), torch.ones(1, r * r), atol=tol, rtol=0)


def test_encoder_attention_mask_is_honoured(unet):
    latents, t, embedding = inputs()
    mask = torch.ones(2, 16)
    mask[:, 5:] = 0  # padding tokens 5.. are masked out
    with torch.no_grad():
        plain = unet(latents, t, encoder_hidden_states=embedding, encoder_attention_mask=mask).sample
        for chunk_bytes in (2**26, 1):  # whole batch, and head by head
            with AttentionCapture(unet, chunk_bytes=chunk_bytes) as capture:
                out = unet(latents, t, encoder_hidden_states=embedding, encoder_attention_mask=mask).sample
            torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-4)
            for r, cross in capture.cross_maps.items():
                assert cross[..., 5:].abs().max() < 1e-6
                torch.testing.assert_close(cross.sum(-1), torch.ones(2, r * r))
