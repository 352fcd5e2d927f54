"""The part judge's network, its weights on disk, and reading images with it.

A small fully convolutional encoder-decoder (U-Net shape: four resolutions, skip connections,
GroupNorm + SiLU, a dilated block at the coarsest level so every pixel sees most of the bird)
that maps a (3, 64, 64) image in [-1, 1] to logits over :data:`CLASSES` (background = "no bird
part", which includes occluders, then the nine synthetic part types of
``diffparts.corpus.PART_NAMES``). Weights are one safetensors file; the architecture is fixed by
:class:`JudgeArch`, whose fields are stored in the file's metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffparts import REPO_ROOT

#: Labels the judge reads: 0 = no part (background or occluder), 1..9 = the synthetic part types.
CLASSES: tuple[str, ...] = ("background", "head", "beak", "eye", "breast", "belly", "back", "wing", "tail", "legs")

#: The committed judge (made by ``diffparts train-judge``; card in the same folder).
DEFAULT_JUDGE = REPO_ROOT / "data" / "models" / "diffparts-part-judge" / "judge.safetensors"
#: The part world's judge (``diffparts train-judge --world parts``): also reads close-ups.
PARTS_JUDGE = REPO_ROOT / "data" / "models" / "diffparts-part-judge-parts" / "judge.safetensors"
#: A judge also trained with leaves and branches as occluders (``diffparts train-judge --occluder-fills ...,object``):
#: reads the occlusion benchmark's ``object`` fill as "no part" (card in the same folder).
LEAVES_JUDGE = REPO_ROOT / "data" / "models" / "diffparts-part-judge-leaves" / "judge.safetensors"


@dataclass(frozen=True)
class JudgeArch:
    """Shapes of the judge network."""

    size: int = 64                              # input side in pixels (images are resized to it)
    widths: tuple[int, ...] = (8, 24, 48, 64)   # channels at 64, 32, 16 and 8 px (multiples of 8)
    n_classes: int = len(CLASSES)               # background + nine part types


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation),
                         nn.GroupNorm(8, cout), nn.SiLU())


class JudgeNet(nn.Module):
    """(image, 3, y, x) in [-1, 1] -> (image, class, y, x) logits."""

    def __init__(self, arch: JudgeArch = JudgeArch()):
        super().__init__()
        self.arch = arch
        w = arch.widths
        self.down = nn.ModuleList()
        cin = 3
        for i, c in enumerate(w):
            stride_in = nn.Identity() if i == 0 else nn.Conv2d(cin, cin, 3, stride=2, padding=1)
            self.down.append(nn.Sequential(stride_in, _block(cin, c), _block(c, c)))
            cin = c
        self.middle = nn.Sequential(_block(w[-1], w[-1], 2), _block(w[-1], w[-1], 4))
        self.up = nn.ModuleList(_block(w[i + 1] + w[i], w[i]) for i in range(len(w) - 2, -1, -1))
        self.head = nn.Conv2d(w[0], arch.n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        x = self.middle(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return self.head(x)


def save_judge(net: JudgeNet, path: str | Path, extra: dict | None = None) -> Path:
    """Weights as safetensors, the architecture (and ``extra``) as JSON metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"arch": json.dumps(asdict(net.arch)), "classes": json.dumps(CLASSES), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)
    return path


class PartJudge:
    """The trained judge: ``PartJudge.load()`` then ``labels(images)``.

    For assessment only: it reads what is painted in an image, by appearance, and never feeds
    the pipeline (docs/occlusion.md, "The judge").
    """

    def __init__(self, net: JudgeNet, path: Path | None = None):
        self.net = net.eval()
        self.path = path

    @classmethod
    def load(cls, path: str | Path | None = None) -> "PartJudge":
        """The judge in ``path`` (default :data:`DEFAULT_JUDGE`); FileNotFoundError naming it."""
        from safetensors import safe_open

        path = Path(path) if path is not None else DEFAULT_JUDGE
        if not path.is_file():
            raise FileNotFoundError(f"part judge {str(path)!r} does not exist; train one with `diffparts train-judge`")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        if "arch" not in meta:
            raise ValueError(f"{str(path)!r} is not a part judge (no 'arch' in its metadata)")
        arch = json.loads(meta["arch"])
        net = JudgeNet(JudgeArch(**{**arch, "widths": tuple(arch["widths"])}))
        net.load_state_dict(state)
        return cls(net, path)

    @torch.no_grad()
    def logits(self, images: np.ndarray, batch: int = 64) -> torch.Tensor:
        """(image, class, size, size) logits of (image, y, x, 3) uint8 images (resized to the
        judge's side with PIL's box filter / bicubic, as the models' inputs are)."""
        from diffparts.model.extract import prepare_images

        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (image, y, x, 3) uint8, got {images.dtype} {images.shape}")
        size = self.net.arch.size
        if images.shape[1:3] != (size, size):
            images = prepare_images(images, size)
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        return torch.cat([self.net(x[s:s + batch]) for s in range(0, len(x), batch)])

    def labels(self, images: np.ndarray) -> np.ndarray:
        """(image, y, x) uint8 part labels (``CLASSES`` indices) at the images' own size
        (nearest upsampling when they are not the judge's side); a single (y, x, 3) image gives (y, x)."""
        from diffparts.occlusion.occluders import resize_labels

        single = np.asarray(images).ndim == 3
        images = np.asarray(images)[None] if single else np.asarray(images)
        out = self.logits(images).argmax(1).numpy().astype(np.uint8)
        if out.shape[1:] != images.shape[1:3]:
            out = np.stack([resize_labels(m, images.shape[1:3]) for m in out])
        return out[0] if single else out
