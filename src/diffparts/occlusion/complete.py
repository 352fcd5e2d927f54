"""Completion: inpaint the hidden region, the original pasted back outside it (docs/design.md §5.7 "Occlusion").

Two ways, both diffusers' ``StableDiffusionInpaintPipeline``:

- **An inpainting checkpoint** (``--inpaint-model ID_OR_PATH``, :func:`load_inpaint_pipeline`):
  a 9-channel UNet that sees the mask and the masked image's latent at every step, as real SD
  users complete (SD 1.5 / 2 inpainting). For the embedded model the default is the toy
  inpainting checkpoint made from it (:data:`TOY_INPAINT_MODEL`, ``diffparts train-inpaint``;
  :func:`default_inpaint_model`). Part tokens load into its own text encoder with
  ``load_textual_inversion`` (:func:`load_tokens`), only when its tokenizer is the one the tokens
  were learned with (:func:`check_tokenizer` refuses others, naming both models).
- **Latent blending** (the baseline row, :func:`inpaint_pipeline`): the same pipeline class
  built from the components of the pipeline the store was made with. With a standard 4-channel
  UNet it starts the masked latents from noise
  and, at every step, replaces the unmasked latents with the image's own, noised to that step.
It takes the mask down to the latent grid by nearest interpolation, so the mask it gets here is
first dilated to whole latent cells (:func:`latent_cell_mask`): a cell the occluder touched is
regenerated whole, never half-kept. The VAE does not reproduce the outside exactly, so after
decoding the input is pasted back outside the hidden pixel mask: outside it the output equals
the input bit for bit. The generator is seeded per call, so every prompt of one case starts
from the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from diffparts import REPO_ROOT

#: The toy inpainting checkpoint made from the embedded model (docs/model.md).
TOY_INPAINT_MODEL = REPO_ROOT / "data" / "models" / "diffparts-toy-birds-inpaint"


@dataclass(frozen=True)
class CompletionConfig:
    steps: int = 25                                  # DDIM steps (the embeddings stage's generation setting)
    guidance_scale: float = 7.0                      # classifier-free guidance, as the embeddings measures
    template: str = "a photo of a bird with {token}"  # the tokens' training prompt
    class_prompt: str = "a photo of a bird"          # the class prompt without part tokens
    max_tokens: int = 2                              # at most this many missing tokens in one prompt
    inpaint_model: str | None = "default"            # a 9-channel inpainting pipeline (hub id or folder);
                                                     # "default": the toy one for the embedded model, else
                                                     # blending; "blend" or None: latent blending (baseline)


def latent_cell_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """(y, x) bool -> the same shape, True on every whole ``factor`` x ``factor`` cell that holds
    a True pixel (cells aligned to the top-left corner, as the VAE's grid)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (y, x), got shape {mask.shape}")
    if factor < 1 or mask.shape[0] % factor or mask.shape[1] % factor:
        raise ValueError(f"mask shape {mask.shape} is not a multiple of the latent factor {factor}")
    h, w = mask.shape
    cells = mask.reshape(h // factor, factor, w // factor, factor).any((1, 3))    # cy cx
    return np.repeat(np.repeat(cells, factor, 0), factor, 1)


def token_prompt(categories: Sequence[int], template: str = CompletionConfig.template) -> str:
    """The template naming the tokens of ``categories``: "... with <part-3> and <part-5>"."""
    from diffparts.inversion.tokens import part_token

    if not categories:
        raise ValueError("token_prompt needs at least one category")
    return template.format(token=" and ".join(part_token(int(k)) for k in categories))


def inpaint_pipeline(pipe, inpaint_model=None):
    """The completion pipeline: ``load_inpaint_pipeline(inpaint_model)`` on ``pipe``'s device
    and dtype when an inpainting checkpoint is named, else (latent blending) a
    ``StableDiffusionInpaintPipeline`` sharing ``pipe``'s components (no copy of weights)."""
    from diffusers import StableDiffusionInpaintPipeline

    if inpaint_model is not None:
        return load_inpaint_pipeline(inpaint_model, device=pipe.device, dtype=pipe.unet.dtype)
    parts = {k: v for k, v in pipe.components.items() if k in ("vae", "text_encoder", "tokenizer", "unet",
                                                               "scheduler", "image_encoder")}
    out = StableDiffusionInpaintPipeline(**parts, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False)
    out.set_progress_bar_config(disable=True)
    return out


def resolve_inpaint_model(choice: str | None, model) -> str | None:
    """The inpainting checkpoint a completion uses: ``choice`` as given, None for latent blending
    ("blend" or None), and for "default" :func:`default_inpaint_model` of the base ``model``."""
    if choice is None or str(choice) == "blend":
        return None
    if str(choice) == "default":
        found = default_inpaint_model(model)
        return None if found is None else str(found)
    return str(choice)


def check_inpaint_model(choice: str | None) -> None:
    """Refuse, in one line naming it, an ``inpaint_model`` that is a local path which does not
    exist or whose UNet is not a 9-channel inpainting UNet (cheap: reads its config only; a hub id
    is checked when it is loaded)."""
    if choice is None or str(choice) in ("default", "blend"):
        return
    path = Path(str(choice)).expanduser()
    if not path.exists():
        if str(choice).startswith((".", "/", "~")) or str(choice).count("/") != 1:
            raise ValueError(f"inpaint model {str(choice)!r} does not exist: give a diffusers inpainting folder, "
                             f"a hub id, 'default' or 'blend'")
        return
    config = path / "unet" / "config.json"
    if not config.is_file():
        raise ValueError(f"inpaint model {str(choice)!r} is not a diffusers pipeline folder (no unet/config.json)")
    import json

    channels = json.loads(config.read_text()).get("in_channels")
    if channels != 9:
        raise ValueError(f"inpaint model {str(choice)!r} is not an inpainting pipeline: its UNet takes "
                         f"{channels} input channels, not 9 (latents + mask + masked-image latents)")


def default_inpaint_model(model) -> Path | None:
    """The inpainting checkpoint to use for ``model`` when none is given: the toy inpainting
    checkpoint for the embedded model (None or its folder), else None (latent blending)."""
    from diffparts.model.load import DEFAULT_MODEL

    if model is not None and Path(str(model)).expanduser().resolve() != DEFAULT_MODEL.resolve():
        return None
    return TOY_INPAINT_MODEL if (TOY_INPAINT_MODEL / "model_index.json").is_file() else None


def load_inpaint_pipeline(model, device: str = "cpu", dtype=None):
    """A ``StableDiffusionInpaintPipeline`` with a 9-channel UNet from a hub id or folder.

    Safetensors only, no safety checker, local files when offline (as ``model.load``). A model
    that is not an inpainting pipeline (its UNet does not take latents + mask + masked-image
    latents, 9 channels) is refused with a one-line ValueError naming it.
    """
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    from diffparts.model.load import _check_folder, _dtype_argument, _hub_offline, _resolve

    if model is None or not str(model).strip():
        raise ValueError(f"inpaint model must be a hub id or a diffusers folder, got {model!r}")
    source, local = _resolve(str(model))
    if local:
        _check_folder(Path(source))
        unet_config = Path(source) / "unet" / "config.json"
        if unet_config.is_file():
            import json

            channels = json.loads(unet_config.read_text()).get("in_channels")
            if channels != 9:
                raise ValueError(f"inpaint model {str(model)!r} is not an inpainting pipeline: its UNet takes "
                                 f"{channels} input channels, not 9 (latents + mask + masked-image latents)")
    try:
        pipe = StableDiffusionInpaintPipeline.from_pretrained(
            source, use_safetensors=True, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False, local_files_only=local or _hub_offline(),
            **{_dtype_argument(): dtype or torch.float32})
    except Exception as err:      # OSError, hub errors, missing components
        raise ValueError(f"could not load inpaint model {str(model)!r} as a StableDiffusionInpaintPipeline: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    if pipe.unet.config.in_channels != 9:
        raise ValueError(f"inpaint model {str(model)!r} is not an inpainting pipeline: its UNet takes "
                         f"{pipe.unet.config.in_channels} input channels, not 9 (latents + mask + masked-image latents)")
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_tokenizer(inpaint, tokenizer, inpaint_name: str = "the inpaint model", tokens_from: str = "the base model") -> None:
    """ValueError naming both models unless ``inpaint``'s tokenizer and text-encoder width are
    those the tokens were learned with (``tokenizer``: the base pipeline's tokenizer)."""
    theirs, ours = inpaint.tokenizer, tokenizer
    if theirs.get_vocab() != ours.get_vocab() or getattr(theirs, "bpe_ranks", None) != getattr(ours, "bpe_ranks", None):
        raise ValueError(f"inpaint model {inpaint_name!s} has another tokenizer than {tokens_from!s} "
                         f"({len(theirs)} vs {len(ours)} tokens, or other merges): part tokens learned with "
                         f"{tokens_from!s} cannot be loaded into it")


def load_tokens(inpaint, directory, categories=None, tokenizer=None, inpaint_name: str = "the inpaint model",
                tokens_from: str = "the base model") -> list[str]:
    """Load the part tokens of ``directory`` (an embeddings loss folder) into ``inpaint``'s text
    encoder with ``load_textual_inversion``; refused (ValueError) when ``tokenizer`` (the one the
    tokens were learned with) is given and is not ``inpaint``'s. Unload with
    ``inpaint.unload_textual_inversion()``."""
    from diffparts.inversion.saving import load_part_embeddings

    if tokenizer is not None:
        check_tokenizer(inpaint, tokenizer, inpaint_name, tokens_from)
    return load_part_embeddings(inpaint, Path(directory), categories)


def encode_prompts(pipe, prompts: Sequence[str]) -> list[tuple]:
    """(prompt embeds, negative embeds) per prompt, through ``pipe``'s own ``encode_prompt``
    (which expands multi-vector textual-inversion tokens); the negative prompt is empty."""
    import torch

    with torch.no_grad():
        return [tuple(e.detach().clone() for e in pipe.encode_prompt(p, pipe.device, 1, True, ""))
                for p in prompts]


def complete(inpaint, image: np.ndarray, mask: np.ndarray, prompt, seed: int,
             config: CompletionConfig = CompletionConfig()) -> np.ndarray:
    """(y, x, 3) uint8: ``image`` with its ``mask`` pixels inpainted from ``prompt``.

    prompt: a string, or a (prompt embeds, negative embeds) pair from :func:`encode_prompts`
    (so tokens loaded in another pipeline can be used here).

    The image is resized to the model's native size for the pipeline (if it is not already) and
    the result resized back; outside ``mask`` the output is ``image`` exactly.
    """
    import torch
    from PIL import Image

    from diffparts.model.extract import native_image_size, prepare_images

    image, mask = np.asarray(image), np.asarray(mask, bool)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (y, x, 3) uint8, got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    if not mask.any():
        return image.copy()
    # 1. Model size; the mask to whole latent cells there.
    size = native_image_size(inpaint)
    factor = int(inpaint.vae_scale_factor)
    model_image = prepare_images(image[None], size)[0]
    model_mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST), bool)
    cells = latent_cell_mask(model_mask, factor)
    # 2. Inpaint (known latents blended at every step for a 4-channel UNet).
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    text = {"prompt": prompt} if isinstance(prompt, str) else {"prompt_embeds": prompt[0],
                                                                "negative_prompt_embeds": prompt[1]}
    out = inpaint(**text, image=Image.fromarray(model_image), mask_image=Image.fromarray(cells.astype(np.uint8) * 255),
                  height=size, width=size, strength=1.0, num_inference_steps=config.steps,
                  guidance_scale=config.guidance_scale, generator=generator, output_type="np").images[0]
    generated = np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)             # y x 3
    if generated.shape[:2] != image.shape[:2]:
        generated = np.asarray(Image.fromarray(generated).resize(image.shape[1::-1], Image.Resampling.BICUBIC))
    # 3. Paste the input back outside the hidden pixels.
    return np.where(mask[..., None], generated, image)
