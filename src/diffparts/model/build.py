"""Build Stable-Diffusion-format components from scratch (docs/design.md §4 "The embedded default").

The same builders make the tiny random pipelines of the tests and the embedded toy
checkpoint: a VAE (``AutoencoderKL``), a ``UNet2DConditionModel`` with self- and
cross-attention, a small ``CLIPTextModel`` and a ``CLIPTokenizer`` whose vocabulary and merges
files are written here (no hub download). The result saves as a complete diffusers Stable
Diffusion folder that ``StableDiffusionPipeline.from_pretrained`` loads. :data:`SD15_ARCH` has
Stable Diffusion 1.5's shapes (random weights: for sizes, memory and time, never for results).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

# Words every tokenizer knows as single tokens, on top of any caller-given vocabulary.
BASE_WORDS = ("a", "photo", "of", "bird", "with", "the", "and", "on", "in", "background")


@dataclass(frozen=True)
class SDArchConfig:
    """Architecture of a small Stable-Diffusion-format model. Defaults: the tests' tiny model."""

    sample_size: int = 32  # image side in pixels
    vae_block_out_channels: tuple[int, ...] = (8, 16)  # len-1 halvings: 32 px -> 16 latent
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 4
    vae_mid_block_attention: bool = True  # False: a convolution-only VAE, trainable on crops
    latent_channels: int = 4  # SD's latent depth, so the pipeline code needs no change
    unet_block_out_channels: tuple[int, ...] = (16, 32)
    # CrossAttn blocks carry attn1 (self) and attn2 (cross); one per resolution at least.
    unet_down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    unet_up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    unet_layers_per_block: int = 1
    unet_norm_num_groups: int = 8
    unet_attention_heads: int = 2  # diffusers' (misnamed) attention_head_dim = number of heads
    cross_attention_dim: int = 32  # = text encoder hidden size
    text_layers: int = 2
    text_heads: int = 2
    text_intermediate_size: int = 64
    max_length: int = 16  # tokenizer model_max_length = text encoder positions
    # Rows of the text encoder's embedding: None = the tokenizer's own size; a larger number pads
    # the vocabulary with unused entries up to it (the special tokens then take the last two ids).
    text_vocab_size: int | None = None
    # SD-1.x noise schedule, so that t=300 means the same noise level as in DiffSeg's setting.
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    num_train_timesteps: int = 1000
    vae_scaling_factor: float = 1.0  # set from the latent std after VAE training


# Stable Diffusion 1.5's architecture (runwayml / stable-diffusion-v1-5 configs): 512 px, a VAE
# with 8x downsampling to 64 x 64 x 4, the 860 M-parameter UNet with attention at 64, 32 and 16
# (and the 8 x 8 mid block), CLIP ViT-L/14's text encoder (768 wide, 12 layers, 77 positions,
# 49,408 tokens). About 1.07 G parameters.
SD15_ARCH = SDArchConfig(
    sample_size=512,
    vae_block_out_channels=(128, 256, 512, 512),
    vae_layers_per_block=2,
    vae_norm_num_groups=32,
    unet_block_out_channels=(320, 640, 1280, 1280),
    unet_down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    unet_up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    unet_layers_per_block=2,
    unet_norm_num_groups=32,
    unet_attention_heads=8,
    cross_attention_dim=768,
    text_layers=12,
    text_heads=12,
    text_intermediate_size=3072,
    max_length=77,
    text_vocab_size=49408,
    vae_scaling_factor=0.18215,
)


@dataclass
class SDComponents:
    vae: "object"
    unet: "object"
    text_encoder: "object"
    tokenizer: "object"
    scheduler: "object"
    extra: dict = field(default_factory=dict)

    def pipeline(self):
        """A ``StableDiffusionPipeline`` over these components (no safety checker)."""
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def caption_words(captions: Iterable[str]) -> list[str]:
    """The distinct lower-case words of some captions, in first-seen order."""
    seen: dict[str, None] = {}
    for text in captions:
        for word in re.findall(r"[a-z]+", text.lower()):
            seen.setdefault(word, None)
    return list(seen)


def learn_bpe_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Byte-level BPE merges learned on ``words`` until every word is one symbol.

    Plain BPE training (merge the most frequent adjacent pair everywhere, ties broken by the
    smaller pair, for determinism). Applying merges in rank order to a training word replays
    its training merges, so every given word tokenizes to a single token; hand-made merge
    chains do not have that property (an early ``o n</w>`` splits ``crimson``).
    """
    from collections import Counter

    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_map = bytes_to_unicode()
    corpus: list[list[str]] = []
    for word in dict.fromkeys(words):
        symbols = [byte_map[b] for b in word.encode("utf-8")]
        if len(symbols) >= 2:
            symbols[-1] += "</w>"
            corpus.append(symbols)
    merges: list[tuple[str, str]] = []
    while True:
        counts = Counter(pair for symbols in corpus for pair in zip(symbols, symbols[1:]))
        if not counts:
            return merges
        top = max(counts.values())
        best = min(pair for pair, n in counts.items() if n == top)
        merges.append(best)
        for i, symbols in enumerate(corpus):
            out, j = [], 0
            while j < len(symbols):
                if j + 1 < len(symbols) and (symbols[j], symbols[j + 1]) == best:
                    out.append(symbols[j] + symbols[j + 1])
                    j += 2
                else:
                    out.append(symbols[j])
                    j += 1
            corpus[i] = out
        corpus = [symbols for symbols in corpus if len(symbols) > 1]


def write_clip_tokenizer_files(out_dir: str | Path, words: Iterable[str],
                               vocab_size: int | None = None) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` for a byte-level BPE CLIP tokenizer.

    The vocabulary holds the 256 byte symbols (alone and word-final, as CLIP's does), every
    merge product of :func:`learn_bpe_merges` over the words (so each word is one token) and the
    two special tokens. Any text tokenizes without unknowns. ``vocab_size``: pad with unused
    entries ``<|unused_i|>`` (never produced by the merges) to that many tokens, the special
    tokens last, as in CLIP's 49,408-token vocabulary.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for tok in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(tok, len(vocab))
    merges = learn_bpe_merges(w.lower() for w in [*BASE_WORDS, *words])
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    if vocab_size is not None:
        if vocab_size < len(vocab) + 2:
            raise ValueError(f"vocab_size {vocab_size} is below the {len(vocab) + 2} tokens the words need")
        for i in range(vocab_size - 2 - len(vocab)):
            vocab[f"<|unused_{i}|>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False))
    merges_path.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return vocab_path, merges_path


def build_tokenizer(out_dir: str | Path, words: Iterable[str] = (), max_length: int = 16,
                    vocab_size: int | None = None):
    """A ``CLIPTokenizer`` over :func:`write_clip_tokenizer_files`' files in ``out_dir``."""
    from transformers import CLIPTokenizer

    vocab_path, merges_path = write_clip_tokenizer_files(out_dir, words, vocab_size)
    merges = merges_path.read_text().splitlines()[1:]
    return CLIPTokenizer(
        vocab=json.loads(vocab_path.read_text()),
        merges=[tuple(line.split(" ")) for line in merges if line],
        model_max_length=max_length,
        pad_token="<|endoftext|>",
    )


def build_unet(config: SDArchConfig = SDArchConfig()):
    """A randomly initialised ``UNet2DConditionModel`` for ``config`` (seed torch first).

    Its latent side is ``sample_size`` over the VAE's downsampling (SD15_ARCH: 512 px -> 64).
    """
    from diffusers import UNet2DConditionModel

    latent_size = config.sample_size // 2 ** (len(config.vae_block_out_channels) - 1)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=config.unet_down_block_types,
        up_block_types=config.unet_up_block_types,
        block_out_channels=config.unet_block_out_channels,
        layers_per_block=config.unet_layers_per_block,
        norm_num_groups=config.unet_norm_num_groups,
        attention_head_dim=config.unet_attention_heads,
        cross_attention_dim=config.cross_attention_dim,
    )


def build_components(
    config: SDArchConfig = SDArchConfig(),
    tokenizer_dir: str | Path | None = None,
    words: Iterable[str] = (),
    seed: int = 0,
) -> SDComponents:
    """Randomly initialised SD components for ``config`` (deterministic for ``seed``).

    ``tokenizer_dir`` receives the tokenizer's vocabulary files (a temporary folder if None).
    """
    import tempfile

    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    if tokenizer_dir is None:
        tokenizer_dir = tempfile.mkdtemp(prefix="diffparts-tok-")
    tokenizer = build_tokenizer(tokenizer_dir, words, config.max_length, config.text_vocab_size)
    n_down = len(config.vae_block_out_channels)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_down,
        up_block_types=("UpDecoderBlock2D",) * n_down,
        block_out_channels=config.vae_block_out_channels,
        layers_per_block=config.vae_layers_per_block,
        norm_num_groups=config.vae_norm_num_groups,
        latent_channels=config.latent_channels,
        sample_size=config.sample_size,
        scaling_factor=config.vae_scaling_factor,
        mid_block_add_attention=config.vae_mid_block_attention,
    )
    unet = build_unet(config)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),  # = config.text_vocab_size when that is set
            hidden_size=config.cross_attention_dim,
            intermediate_size=config.text_intermediate_size,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads,
            max_position_embeddings=config.max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        clip_sample=False,
        steps_offset=1,
    )
    return SDComponents(vae, unet, text_encoder, tokenizer, scheduler)


# Config keys that record how a component was loaded (path, hub flags), not what it is.
_LOAD_TIME_KEYS = ("_name_or_path", "is_local", "local_files_only")


def save_components(components: SDComponents, path: str | Path) -> Path:
    """Save as a diffusers Stable Diffusion folder, safetensors only.

    Besides the ``tokenizer.json`` transformers writes, ``tokenizer/`` gets the BPE's
    ``vocab.json`` and ``merges.txt`` (CLIP's classic files), from which the tokenizer loads alike.
    """
    path = Path(path)
    components.pipeline().save_pretrained(path, safe_serialization=True)
    backend = getattr(components.tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.model.save(str(path / "tokenizer"))  # vocab.json + merges.txt
    # Components that were loaded from a folder remember where (and how) they were loaded; that
    # is about the loading machine, not the model, so it is not saved with it.
    for config_path in (*path.glob("*/config.json"), path / "tokenizer" / "tokenizer_config.json"):
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            stale = [key for key in _LOAD_TIME_KEYS if key in config]
            if stale:
                for key in stale:
                    del config[key]
                config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path

