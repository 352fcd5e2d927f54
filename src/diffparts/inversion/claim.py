"""The seed's claim, measured (docs/embeddings.md "The claim's table").

The claim: a part token learned with the noise-estimation loss approximates the text embedding
that explains the part well enough to *generate* it, while the attention-localisation loss only
learns *where* it is. For every part category k of a store whose embeddings are trained, with
its best-matching true part type p (a word of ``PART_NAMES``: "head", "beak", ...), and every
prompt kind (the untrained initializer, each loss's token, and the references: the class word
and the true part word), on held-out images:

- **explains**: masked denoising MSE of the category's region (``evaluate.denoising_error``)
  with "a photo of a bird with <part-k>" against "a photo of a bird" (class) and "a photo of a
  bird with a <word>" (the true word); ``recovered`` = the share of the word's gain over the
  class prompt that the token reaches.
- **names**: the rank (1 = first) of p's word among all part words by the cosine similarity of
  the text encoder's output (the end-of-text state, which has read the whole prompt) for
  "a photo of <part-k>" and "a photo of a <word>".
- **generates alone**: images generated from "a close-up of <part-k>" (fixed seeds), read by the
  independent judge: the share whose most-read part is p (``judge.shown_parts``); references
  "a close-up of a bird <word>" (the part world's close-up captions: the ceiling) and "a close-up
  of a bird" (the floor).
- **generates in context**: p's true region of held-out birds (dilated by ``dilate`` pixels)
  inpainted with the prompt of "explains" (``occlusion.complete``: an inpainting checkpoint or
  latent blending), the judge's IoU of p with its true mask (``judge.score_completion``).
- **localises**: the prompt's cross-attention of the token (or the word), min-max rescaled per
  image and thresholded at ``attention_threshold``, IoU with p's true mask (``evaluate.token_maps``).
  The rescaling differs from the embeddings stage's measure (a fraction of the raw maximum): a
  toy model's cross-attention can be nearly flat (max/min about 1.25), and the raw threshold then
  keeps the whole image for every token, so every prompt would score the part's area.

Where the corpus has no part masks (a real corpus such as CUB) there is no p: the columns that
need it are None ("n/a" in the tables); explains against the class prompt still applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from diffparts.corpus.synth_species import PART_NAMES


@dataclass(frozen=True)
class ClaimConfig:
    """The prompts and sample sizes of the claim's table (the same for every prompt kind)."""

    template: str = "a photo of a bird with {token}"       # explains, in context: the tokens' training prompt
    class_prompt: str = "a photo of a bird"                 # the class word alone (the floor)
    word_phrase: str = "a {word}"                           # the true word in ``template``'s place of the token
    name_token: str = "a photo of {token}"                  # names: the token's prompt
    name_word: str = "a photo of a {word}"                  # names: each part word's prompt
    closeup_token: str = "a close-up of {token}"            # generates alone: the token
    closeup_word: str = "a close-up of a bird {word}"       # generates alone: the true word (ceiling)
    closeup_class: str = "a close-up of a bird"             # generates alone: the class word (floor)
    part_words: tuple[str, ...] = PART_NAMES                # the words "names" ranks among
    n_context: int = 8                                      # held-out birds inpainted per category
    dilate: int = 1                                         # pixels added around the true part to inpaint
    context_seed: int = 0                                   # the inpainting noise of bird j: seed + j

    def __post_init__(self):
        for name in ("template", "name_token", "closeup_token"):
            if "{token}" not in getattr(self, name):
                raise ValueError(f"{name}={getattr(self, name)!r} must contain {{token}}")
        for name in ("word_phrase", "name_word", "closeup_word"):
            if "{word}" not in getattr(self, name):
                raise ValueError(f"{name}={getattr(self, name)!r} must contain {{word}}")
        if self.n_context < 0 or self.dilate < 0:
            raise ValueError(f"n_context={self.n_context} and dilate={self.dilate} must be >= 0")


def end_states(pipe, prompts: Sequence[str]):
    """(prompt, channel) the text encoder's output at each prompt's end-of-text token."""
    import torch

    from diffparts.inversion.train import prompt_inputs

    eos = pipe.tokenizer.eos_token_id
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = prompt_inputs(pipe.tokenizer, pipe.maybe_convert_prompt(p, pipe.tokenizer))    # 1 token
            hidden = pipe.text_encoder(ids.to(pipe.text_encoder.device))[0][0]                # token channel
            where = (ids[0] == eos).nonzero()
            out.append(hidden[int(where[0]) if len(where) else -1].float().cpu())
    return torch.stack(out)


def name_rank(pipe, token: str, true_word: str, config: ClaimConfig = ClaimConfig()) -> tuple[int, dict]:
    """(rank of ``true_word`` among ``config.part_words``, 1 = nearest; {word: cosine}) for the
    token's prompt against each word's prompt."""
    import torch

    if true_word not in config.part_words:
        raise ValueError(f"{true_word!r} is not one of the part words {config.part_words}")
    states = end_states(pipe, [config.name_token.format(token=token)]
                        + [config.name_word.format(word=w) for w in config.part_words])
    sims = torch.nn.functional.cosine_similarity(states[:1], states[1:], dim=1).numpy()
    order = list(np.argsort(-sims, kind="stable"))
    return order.index(config.part_words.index(true_word)) + 1, {w: round(float(s), 4)
                                                                 for w, s in zip(config.part_words, sims)}


def context_iou(inpaint, judge, images: np.ndarray, truth: np.ndarray, part: int, prompt,
                config: ClaimConfig = ClaimConfig(), completion=None) -> float | None:
    """Mean judge IoU of ``part`` after inpainting its true region (dilated) of each image with
    ``prompt`` (a string or ``occlusion.complete.encode_prompts`` embeddings); None without a part."""
    from diffparts.judge import score_completion
    from diffparts.occlusion.complete import CompletionConfig, complete
    from diffparts.train.renders import dilate

    completion = completion or CompletionConfig()
    scores = []
    for j, (img, lab) in enumerate(zip(images, truth)):
        hidden = dilate(lab == part, config.dilate)
        if not (lab == part).any():
            continue
        done = complete(inpaint, img, hidden, prompt, config.context_seed + j, completion)
        value = score_completion(judge, done, hidden, lab, [part])["iou"]
        if value is not None:
            scores.append(value)
    return float(np.mean(scores)) if scores else None


def closeup_reading(pipe, judge, measure, config: ClaimConfig = ClaimConfig()) -> dict:
    """How the judge reads close-ups generated from each part word (the checkpoint's card):
    {word: {"right": share whose most-read part is the word's, "shown": {part: share}}}, and the
    same for the class word alone under ``"(class)"`` (no right answer: its ``right`` is None)."""
    from diffparts.corpus.synth_species import PART_INDEX
    from diffparts.inversion.evaluate import generate_images
    from diffparts.judge import shown_parts

    def read(prompt):
        shown = shown_parts(judge.labels(generate_images(pipe, prompt, measure)))
        names = ["none", *PART_NAMES]
        return shown, {names[p]: round(float(np.mean(shown == p)), 4) for p in np.unique(shown)}

    out = {}
    for word in config.part_words:
        shown, dist = read(config.closeup_word.format(word=word))
        out[word] = {"right": round(float(np.mean(shown == PART_INDEX[word])), 4), "shown": dist}
    out["(class)"] = {"right": None, "shown": read(config.closeup_class)[1]}
    return out


@dataclass
class CategoryData:
    """One category's held-out material (arrays at the model's size)."""

    category: int
    indices: np.ndarray          # store indices of the held-out images
    images: np.ndarray           # image y x 3 uint8
    masks: np.ndarray            # image y x float: the discovered region (explains)
    latents: object              # image channel ly lx (torch)
    truth: np.ndarray | None     # image y x: true part ids, None without part masks
    part: int | None             # the best-matching true part id (1..9), None without part masks
    part_iou: float              # its pooled IoU with the discovered masks


def category_data(root, corpus, pipe, categories: Sequence[int], max_images: int, min_pixels: int = 4) -> dict:
    """{category: CategoryData} for the categories with held-out images."""
    import torch

    from diffparts.inversion.data import category_indices, category_pixels, load_examples, subset
    from diffparts.inversion.evaluate import best_gt_part
    from diffparts.inversion.stage import gt_part_masks
    from diffparts.inversion.train import encode_latents
    from diffparts.model.extract import native_image_size

    size = native_image_size(pipe)
    pixels = category_pixels(root)
    out = {}
    for c in categories:
        idx = subset(category_indices(root, c, held_out=True, min_pixels=min_pixels, pixels=pixels), max_images)
        if len(idx) == 0:
            continue
        ex = load_examples(root, corpus, c, idx, size)
        truth = gt_part_masks(root, corpus, idx, size)
        part, part_iou = best_gt_part(ex.masks > 0.5, truth) if truth is not None else (None, float("nan"))
        with torch.no_grad():
            latents = encode_latents(pipe, ex.images)
        out[c] = CategoryData(c, np.asarray(ex.indices), ex.images, ex.masks, latents, truth, part, part_iou)
    return out


def measure_kind(pipe, inpaint, judge, data: dict, kind: str, config: ClaimConfig, measure,
                 say: Callable[[str], None] = lambda _m: None, completion=None) -> list[dict]:
    """The rows of one prompt kind: ``class``, ``word``, or a token kind (``initializer`` or a
    loss; ``pipe`` and ``inpaint`` then hold the tokens ``<part-k>``)."""
    import torch

    from diffparts.inversion.evaluate import denoising_error, generate_images, iou, threshold_maps, token_maps
    from diffparts.inversion.tokens import part_token
    from diffparts.judge import part_shown_share
    from diffparts.model.extract import native_image_size
    from diffparts.occlusion.complete import encode_prompts

    size = native_image_size(pipe)
    rows = []
    for c, d in data.items():
        word = PART_NAMES[d.part - 1] if d.part else None
        if kind == "class":
            prompt, closeup, name, target = config.class_prompt, config.closeup_class, None, None
        elif kind == "word":
            if word is None:
                continue
            prompt = config.template.format(token=config.word_phrase.format(word=word))
            closeup, name, target = config.closeup_word.format(word=word), None, word
        else:
            token = part_token(c)
            prompt, closeup = config.template.format(token=token), config.closeup_token.format(token=token)
            name, target = token, token
        row = {"kind": kind, "category": c, "part": word, "images": len(d.indices),
               "mse": denoising_error(pipe, d.latents, torch.from_numpy(d.masks), prompt, measure, d.indices)}
        if name is not None and word is not None:
            row["name_rank"], _ = name_rank(pipe, name, word, config)
        if judge is not None and d.part:
            row["closeup_shows_part"] = part_shown_share(judge, generate_images(pipe, closeup, measure), d.part)
            if config.n_context and inpaint is not None:
                n = config.n_context
                embeds = encode_prompts(inpaint, [prompt])[0]
                row["context_iou"] = context_iou(inpaint, judge, d.images[:n], d.truth[:n], d.part, embeds, config,
                                                 completion)
        if target is not None and d.truth is not None:
            maps = token_maps(pipe, d.latents, prompt, target, size, measure, d.indices)
            row["attention_iou"] = iou(threshold_maps(maps, measure.attention_threshold, minmax=True), d.truth == d.part)
        rows.append(row)
        say(f"{kind}: category {c} ({word or 'n/a'}) measured")
    return rows


def with_relative(rows: list[dict]) -> list[dict]:
    """Adds ``mse_vs_class_pct`` (negative: explains more than the class prompt) and, for token
    kinds, ``recovered``: (class - token) / (class - word) of the masked MSE, the share of the true
    word's gain that the token reaches (None where the word does not beat the class prompt)."""
    ref = {(r["kind"], r["category"]): r["mse"] for r in rows if r["kind"] in ("class", "word")}
    out = []
    for r in rows:
        r = dict(r)
        cls, word = ref.get(("class", r["category"])), ref.get(("word", r["category"]))
        if cls:
            r["mse_vs_class_pct"] = 100.0 * (r["mse"] / cls - 1.0)
        if r["kind"] not in ("class", "word") and cls is not None and word is not None:
            r["recovered"] = (cls - r["mse"]) / (cls - word) if cls > word else None
        out.append(r)
    return out


COLUMNS = ("mse", "mse_vs_class_pct", "recovered", "name_rank", "closeup_shows_part", "context_iou", "attention_iou")


def means(rows: Sequence[dict]) -> list[dict]:
    """Mean of every column per kind over its categories (None where no category has it);
    ``recovered`` of a token kind is computed from the mean MSEs over the categories that have a
    true word, (class - token) / (class - word), so categories where the word barely beats the
    class prompt do not blow the share up."""
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        sub = [r for r in rows if r["kind"] == kind]
        mean = {"kind": kind, "categories": len(sub)}
        for key in COLUMNS:
            vals = [r[key] for r in sub if r.get(key) is not None and np.isfinite(r[key])]
            mean[key] = round(float(np.mean(vals)), 5) if vals else None
        out.append(mean)
    mse = {(r["kind"], r["category"]): r["mse"] for r in rows}
    with_word = sorted({c for k, c in mse if k == "word" and ("class", c) in mse})
    for mean in out:
        mean["recovered"] = None
        if mean["kind"] in ("class", "word") or not with_word or not all((mean["kind"], c) in mse for c in with_word):
            continue
        cls, word, tok = (float(np.mean([mse[(k, c)] for c in with_word])) for k in ("class", "word", mean["kind"]))
        mean["recovered"] = round((cls - tok) / (cls - word), 4) if cls > word else None
    return out


def claim_table(root, store: str, corpus, model: str, losses: Sequence[str], categories: Sequence[int] | None = None,
                config: ClaimConfig = ClaimConfig(), measure=None, inversion=None, out_dir=None,
                inpaint_model: str | None = "default", judge_path=None, device: str = "cpu",
                say: Callable[[str], None] = lambda _m: None, completion=None) -> dict:
    """The claim's table on the held-out images of a store whose embeddings (``losses``) are
    trained: {"rows": one per (kind, category), "means": per kind, ...}. ``judge_path``: the part
    judge (default: the part world's, ``judge.PARTS_JUDGE``), used only where the corpus has part
    masks. ``inpaint_model``: as the occlusion stage's ``--inpaint-model`` ("default", "blend",
    a hub id or folder); ``completion``: its ``CompletionConfig`` (steps, guidance)."""
    import dataclasses

    import torch

    from diffparts.inversion.saving import require_parts
    from diffparts.inversion.evaluate import MeasureConfig
    from diffparts.inversion.saving import embeddings_dir, load_part_embeddings
    from diffparts.inversion.stage import untrained_pipeline
    from diffparts.inversion.tokens import add_part_tokens, part_token
    from diffparts.inversion.train import InversionConfig
    from diffparts.model.load import load_pipeline
    from diffparts.occlusion.complete import inpaint_pipeline, load_tokens, resolve_inpaint_model

    measure, inversion = measure or MeasureConfig(), inversion or InversionConfig()
    k1 = require_parts(root)
    cats = list(range(1, k1)) if categories is None else [int(c) for c in categories]
    base = load_pipeline(model, device=device)
    data = category_data(root, corpus, base, cats, measure.max_images, measure.min_pixels)
    if not data:
        raise ValueError("no part category has held-out images to measure")
    judge = None
    if any(d.part for d in data.values()):
        from diffparts.judge import PARTS_JUDGE, PartJudge

        judge = PartJudge.load(judge_path or PARTS_JUDGE)
    checkpoint = resolve_inpaint_model(inpaint_model, model)
    say(f"{len(data)} categories, {sum(len(d.indices) for d in data.values())} held-out category images; "
        f"in context with {checkpoint or 'latent blending'}")

    rows = []
    for kind in ("class", "word"):
        rows += measure_kind(base, inpaint_pipeline(base, checkpoint), judge, data, kind, config, measure, say, completion)
    for kind in ("initializer", *losses):
        if kind == "initializer":
            pipe = untrained_pipeline(model, device, "float32", cats, inversion)
        else:
            directory = embeddings_dir(store, kind, out_dir)
            pipe = load_pipeline(model, device=device)
            try:
                load_part_embeddings(pipe, directory, cats)
            except FileNotFoundError as err:
                say(f"{kind}: skipped ({err})")
                continue
        inpaint = inpaint_pipeline(pipe, checkpoint)
        if checkpoint is not None:        # the tokens into the inpainting checkpoint's own text encoder
            if kind == "initializer":
                add_part_tokens(inpaint.tokenizer, inpaint.text_encoder, [part_token(c) for c in cats],
                                inversion.num_vectors, inversion.initializer)
            else:
                load_tokens(inpaint, embeddings_dir(store, kind, out_dir), cats, tokenizer=base.tokenizer,
                            inpaint_name=checkpoint, tokens_from=model)
        rows += measure_kind(pipe, inpaint, judge, data, kind, config, measure, say, completion)
        del pipe, inpaint
    rows = with_relative(rows)
    return {"rows": rows, "means": means(rows), "categories": sorted(data),
            "category_part": {c: {"part": PART_NAMES[d.part - 1] if d.part else None, "iou": round(d.part_iou, 4),
                                  "held_out_images": len(d.indices)} for c, d in data.items()},
            "inpaint": checkpoint or "blend", "judge": None if judge is None else str(judge_path or "parts judge"),
            "config": asdict(config), "measure": dataclasses.asdict(measure), "torch_threads": torch.get_num_threads()}
