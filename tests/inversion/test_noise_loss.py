"""The masked noise loss ignores what lies outside the mask."""

import pytest
import torch

from diffparts.inversion.noise_loss import latent_mask, masked_mse


def test_masked_mse_ignores_cells_outside_the_mask():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    mask = torch.zeros(2, 8, 8)
    mask[:, 2:5, 1:6] = 1.0
    base = masked_mse(pred, target, mask)
    changed = pred.clone()
    changed[:, :, mask[0] == 0] += 100.0                              # every cell outside the part
    assert torch.equal(masked_mse(changed, target, mask), base)
    inside = pred.clone()
    inside[:, :, 3, 3] += 1.0
    assert masked_mse(inside, target, mask) > base
    p = pred.clone().requires_grad_(True)
    masked_mse(p, target, mask).backward()
    assert torch.all(p.grad[:, :, mask[0] == 0] == 0) and torch.any(p.grad[:, :, mask[0] == 1] != 0)
    expected = ((pred - target) ** 2)[:, :, 2:5, 1:6].mean()
    assert torch.allclose(base, expected)
    assert torch.allclose(masked_mse(pred, target), ((pred - target) ** 2).mean())


def test_latent_mask_is_the_area_share_and_empty_masks_refused():
    mask = torch.zeros(1, 32, 32)
    mask[0, :2, :4] = 1.0                                            # half of the first 4 x 4 cell... twice
    cells = latent_mask(mask, (8, 8))
    assert cells.shape == (1, 8, 8) and cells[0, 0, 0] == 0.5 and cells[0, 0, 1] == 0 and cells.sum() == 0.5
    with pytest.raises(ValueError, match="empty"):
        masked_mse(torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 8, 8), torch.zeros(1, 8, 8))
