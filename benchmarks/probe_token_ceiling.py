"""How much ONE prompt word can explain a part category, and how noisy the noise loss's
gradient is for a new token; prints JSON (the README's embeddings findings).

On a store whose parts stage (and the embeddings set-up: the held-out split) is done, for each
category k on its TRAINING images:

- ``best_words``: the masked denoising MSE of "a photo of a bird with <w>" for every word w of
  the synthetic captions' vocabulary, relative to the initializer word "bird" (negative =
  explains more), best first; a trained token that explains the category should reach at least
  the best word.
- ``gradient_snr``: over ``--draws`` micro-batches of ``--batch-size``, the median per-coordinate
  |mean| / std of the masked noise loss's gradient with respect to a new token's vector.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_token_ceiling.py --store runs/emb-val/store.zarr \\
        --corpus runs/emb-val/corpus --categories 1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import numpy as np
    import torch

    from diffparts.corpus import CAPTION_WORDS
    from diffparts.inversion.data import category_indices, load_examples
    from diffparts.inversion.evaluate import MeasureConfig, denoising_error
    from diffparts.inversion.tokens import TrainableTokens, add_part_tokens, freeze
    from diffparts.inversion.train import (InversionConfig, _Batches, _step_loss, encode_latents, prompt_inputs,
                                           step_generator, training_scheduler)
    from diffparts.model.extract import native_image_size
    from diffparts.model.load import load_pipeline
    from diffparts.store import open_store

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--categories", default="1,2,3,4")
    ap.add_argument("--draws", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    root = open_store(args.store)
    pipe = load_pipeline(args.model)
    size = native_image_size(pipe)
    vocab = CAPTION_WORDS.values() if isinstance(CAPTION_WORDS, dict) else [CAPTION_WORDS]
    words = sorted({w for group in vocab for w in ([group] if isinstance(group, str) else group)})
    config = InversionConfig(loss="noise", batch_size=args.batch_size)
    out = {"store": args.store, "words": len(words), "batch_size": args.batch_size, "categories": {}}
    for c in [int(v) for v in args.categories.split(",")]:
        ex = load_examples(root, args.corpus, c, category_indices(root, c, held_out=False), size)
        latents, masks = encode_latents(pipe, ex.images), torch.from_numpy(ex.masks)
        measure = MeasureConfig()
        base = denoising_error(pipe, latents, masks, "a photo of a bird with bird", measure, ex.indices)
        change = {w: 100 * (denoising_error(pipe, latents, masks, f"a photo of a bird with {w}", measure,
                                            ex.indices) / base - 1) for w in words}
        best = sorted(change.items(), key=lambda kv: kv[1])
        token = f"<probe-{c}>"
        added = add_part_tokens(pipe.tokenizer, pipe.text_encoder, [token])
        freeze(pipe.unet, pipe.vae, pipe.text_encoder)
        trainable = TrainableTokens.from_encoder(pipe.text_encoder, added)
        ids = prompt_inputs(pipe.tokenizer, config.template.format(token=token))
        batches, scheduler = _Batches(pipe, ex, config), training_scheduler(pipe)
        grads = []
        for s in range(args.draws):
            tg, ng = step_generator(5, s, 0)
            lat, m = batches.draw(tg, ng)
            trainable.vectors.grad = None
            _step_loss(pipe, scheduler, config, ids, trainable, [], [], lat, m, tg).backward()
            grads.append(trainable.vectors.grad.flatten().clone())
        g = torch.stack(grads)
        snr = float((g.mean(0).abs() / g.std(0).clamp_min(1e-20)).median())
        out["categories"][c] = {"train_images": len(ex), "best_words": [[w, round(v, 3)] for w, v in best[:5]],
                                "worst_words": [[w, round(v, 3)] for w, v in best[-3:]],
                                "gradient_snr": round(snr, 3)}
        print(f"category {c}: best {best[0]}, snr {snr:.3f}", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
