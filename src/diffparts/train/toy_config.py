"""The toy trainer's settings and its record of a run (docs/design.md §4 "The embedded default").

Holds the two architectures (the embedded checkpoint's ``TOY_ARCH``, the tests' ``QUICK_ARCH``),
``ToyTrainConfig`` with the --quick setting, ``TrainResult`` and the dicts ``training.json`` is
written from. The training loop is ``train.toy``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from diffparts.model.build import SDArchConfig

# The toy checkpoint's architecture: 64 px birds, a 4x VAE (latent 16 x 16 x 4), a UNet with
# self- and cross-attention at 16 x 16 and 8 x 8 (plus the 8 x 8 mid block), a 2-layer CLIP text
# encoder. About 3.9 M parameters, 15.5 MB in float32 safetensors; a training step at batch 32
# takes about 0.5 s on 2 CPU cores.
TOY_ARCH = SDArchConfig(
    sample_size=64,
    vae_block_out_channels=(32, 64, 64),
    vae_layers_per_block=1,
    vae_norm_num_groups=8,
    vae_mid_block_attention=False,  # convolution only, so training on 32 px crops generalises
    unet_block_out_channels=(64, 96),
    unet_down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    unet_up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    unet_layers_per_block=1,
    unet_norm_num_groups=8,
    unet_attention_heads=4,
    cross_attention_dim=64,
    text_layers=2,
    text_heads=4,
    text_intermediate_size=128,
    max_length=32,
)

# The --quick setting's architecture: the tests' tiny model (32 px, latent 16, attention 16 and 8).
QUICK_ARCH = SDArchConfig()


@dataclass(frozen=True)
class ToyTrainConfig:
    """Everything that determines a toy training run (with the corpus it reads)."""

    arch: SDArchConfig = TOY_ARCH  # model shapes; arch.sample_size is the training image side
    seed: int = 0  # seeds initialisation, batch order, noise and caption dropout
    n_val: int = 64  # images held out of training for the VAE PSNR and the validation loss
    vae_steps: int = 3000  # VAE optimiser steps (a budget may stop earlier)
    vae_batch_size: int = 16  # images per VAE step
    vae_lr: float = 1e-3  # AdamW learning rate of the VAE (constant after warm-up)
    vae_crop: int | None = 32  # train the (fully convolutional) VAE on random crops: 4x cheaper; None = whole images
    kl_weight: float = 1e-6  # KL weight of the VAE loss; tiny, as in SD's first stage
    unet_steps: int = 20000  # UNet + text encoder steps (a budget may stop earlier)
    unet_batch_size: int = 16  # latents per UNet step (more small steps beat fewer big ones on 2 cores)
    unet_lr: float = 7e-4  # AdamW learning rate (constant after warm-up; the EMA anneals)
    weight_decay: float = 1e-2  # AdamW weight decay of both phases
    warmup_steps: int = 100  # linear learning-rate warm-up of both phases
    caption_dropout: float = 0.1  # share of captions replaced by "" (trains the unconditional branch)
    ema_decay: float = 0.995  # EMA of UNet and text-encoder weights (what gets saved)
    flip: bool = True  # random horizontal flips (the corpus' captions do not name a side)
    budget_s: float | None = None  # wall-clock budget of both phases together; None = step counts only
    vae_budget_fraction: float = 0.22  # share of budget_s the VAE phase may use
    checkpoint_every_s: float = 600.0  # write the folder this often during the UNet phase
    log_every: int = 50  # steps between progress lines and loss-history entries
    threads: int = 1  # torch CPU threads; on 2 cores shared with other jobs, 2 threads ran 5-10x slower than 1
    snr_gamma: float | None = None  # Min-SNR loss weighting min(SNR, gamma) / SNR; None = plain MSE
    init_from: str | None = None  # continue from a folder this trainer saved (phase 1 skipped); None = scratch

    def __post_init__(self):
        for name in ("vae_steps", "unet_steps", "n_val"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("vae_batch_size", "unet_batch_size", "log_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ValueError(f"budget_s must be positive, got {self.budget_s}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be positive, got {self.snr_gamma}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


# The --quick setting: seconds on 2 cores, for tests and smoke runs.
QUICK_CONFIG = ToyTrainConfig(
    arch=QUICK_ARCH,
    n_val=2,
    vae_steps=3,
    vae_batch_size=4,
    vae_crop=None,
    unet_steps=3,
    unet_batch_size=4,
    warmup_steps=1,
    log_every=1,
)


@dataclass
class TrainResult:
    """What a run did: the saved folder, the steps run, the losses and the times."""

    path: Path
    vae_steps: int
    unet_steps: int
    vae_loss: float  # mean training loss over the last log window
    vae_psnr_db: float  # reconstruction PSNR on the held-out images (posterior mean)
    unet_loss: float  # mean training loss over the last log window
    unet_val_loss: float  # noise-prediction MSE on the held-out images (fixed noise and timesteps)
    scaling_factor: float
    vae_seconds: float
    unet_seconds: float
    n_train: int
    n_val: int
    params: dict = field(default_factory=dict)  # component -> parameter count
    history: dict = field(default_factory=dict)  # phase -> [(step, loss)]
    previous: dict | None = None  # the training.json of the run continued from (init_from), else None


def _config_dict(config: ToyTrainConfig) -> dict:
    out = asdict(config)
    out["arch"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["arch"].items()}
    return out


def _result_dict(result: TrainResult) -> dict:
    out = asdict(result)
    out["path"] = str(result.path)
    return out


def quick_config(**overrides) -> ToyTrainConfig:
    """The --quick setting with some fields replaced."""
    return replace(QUICK_CONFIG, **overrides)
