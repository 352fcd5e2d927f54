"""The model card is written from training.json (+ quality.json) and states the figures."""

from __future__ import annotations

import json

from diffparts.train.card import model_card, train_command, write_model_card

TRAINING = {
    "final": True, "vae_steps": 900, "unet_steps": 1500, "vae_loss": 0.1, "vae_psnr_db": 24.5,
    "unet_loss": 0.21, "unet_val_loss": 0.2, "scaling_factor": 0.8, "vae_seconds": 900.0,
    "unet_seconds": 4000.0, "n_train": 3936, "n_val": 64,
    "params": {"vae": 921031, "unet": 2765540, "text_encoder": 108352},
    "config": {
        "seed": 0, "vae_batch_size": 16, "vae_crop": 32, "kl_weight": 1e-6, "unet_batch_size": 16,
        "unet_lr": 7e-4, "caption_dropout": 0.1, "ema_decay": 0.995, "log_every": 50, "threads": 1,
        "budget_s": 5400.0, "vae_budget_fraction": 0.17, "checkpoint_every_s": 600.0,
        "arch": {"sample_size": 64, "vae_block_out_channels": [32, 64, 64], "latent_channels": 4,
                 "unet_down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 "unet_block_out_channels": [64, 96], "unet_attention_heads": 4, "text_layers": 2,
                 "cross_attention_dim": 64, "max_length": 32},
    },
}


def _method(miou):
    return {"miou": miou, "pixel_accuracy": 0.5, "segments_per_image": 9.0, "threshold": 0.01, "quantile": 0.05,
            "test_miou_at_quantile_0.05": miou, "kmeans_on_attention_true_k": {"miou": miou},
            "attention_row_entropy_of_max": 0.9}


def test_train_command_replays_the_budget_and_the_steps():
    cmd = train_command(TRAINING)
    assert "--n-images 4000" in cmd and "--budget-minutes 90" in cmd and "--vae-fraction 0.17" in cmd
    fixed = train_command({**TRAINING, "config": {**TRAINING["config"], "budget_s": None}})
    assert "--vae-steps 900 --unet-steps 1500" in fixed


def test_card_states_architecture_training_and_all_four_scores(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps(TRAINING))
    text = model_card(tmp_path, "CMD-TRAIN", "CMD-BENCH")
    assert "CMD-TRAIN" in text and "latent 16x16x4" in text and "16x16 and 8x8" in text
    assert "--vae-steps 900 --unet-steps 1500" in text  # how to reproduce a budget-ended run
    assert "What it scores" not in text  # no quality.json yet
    quality = {"n_test": 64, "n_val": 16, "corpus_seed": 1, "image_size": 64, "n_classes": 10,
               "vae_psnr_db_test": 24.0,
               "methods": {"trained": _method(0.41), "random_init": _method(0.2),
                           "kmeans_vae_latent": _method(0.3), "kmeans_pixels": _method(0.35)}}
    (tmp_path / "quality.json").write_text(json.dumps(quality))
    path = write_model_card(tmp_path, "CMD-TRAIN", "CMD-BENCH", notes="a note")
    text = path.read_text()
    for figure in ("0.410", "0.200", "0.300", "0.350", "+0.210", "CMD-BENCH", "a note"):
        assert figure in text, figure


def test_card_of_a_continued_run_states_both_stages_and_their_commands(tmp_path):
    from diffparts.train.card import stages, train_commands

    stage2 = {**TRAINING, "vae_steps": 0, "unet_steps": 7000, "unet_seconds": 3600.0, "vae_seconds": 12.0,
              "unet_val_loss": 0.11,
              "config": {**TRAINING["config"], "unet_batch_size": 32, "unet_lr": 4e-4, "ema_decay": 0.999,
                         "snr_gamma": 5.0, "threads": 2, "budget_s": 3840.0, "init_from": "somewhere"},
              "previous": TRAINING}
    assert [s["unet_steps"] for s in stages(stage2)] == [1500, 7000]
    first, second = train_commands(stage2).splitlines()
    assert "--out work/toy-stage1" in first and "--init-from" not in first
    assert "--init-from work/toy-stage1" in second and "--out data/models/diffparts-toy-birds" in second
    for flag in ("--unet-batch-size 32", "--unet-lr 0.0004", "--ema-decay 0.999", "--snr-gamma 5", "--threads 2"):
        assert flag in second and flag not in first, flag
    assert "--vae-fraction" not in second  # no VAE phase when continuing
    (tmp_path / "training.json").write_text(json.dumps(stage2))
    text = model_card(tmp_path, train_commands(stage2), "CMD-BENCH")
    assert "Stage 1, UNet + text encoder from scratch: 1500 steps at batch 16" in text
    assert "Stage 2, UNet + text encoder continued from stage 1: 7000 steps at batch 32" in text
    assert "Min-SNR-5" in text and "VAE 900 steps" not in text  # the VAE line counts steps as "900 steps at batch"
    assert "stage 1: `--vae-steps 900 --unet-steps 1500`; stage 2: `--unet-steps 7000`" in text
    # 900 + 4000 s (stage 1) + 12 + 3600 s (stage 2: loading, no VAE phase) = 142 min
    assert "142 min in all" in text


def test_part_world_card_names_the_world_and_reads_the_closeups(tmp_path):
    from diffparts.train.card import train_commands

    record = {**TRAINING, "config": {**TRAINING["config"], "vocabulary": "parts"}}
    (tmp_path / "training.json").write_text(json.dumps(record))
    cmds = train_commands(record)
    assert "--world parts --corpus work/partworld" in cmds and "data/models/diffparts-toy-parts" in cmds
    closeups = {"n_generate": 4, "steps": 25, "guidance": 7.0, "mean_right": 0.625, "command": "CMD-CLOSEUPS",
                "closeup_parts": ["head", "beak"], "mean_right_closeup_parts": 0.625,
                "words": {"head": {"right": 0.75, "shown": {"head": 0.75, "beak": 0.25}},
                          "beak": {"right": 0.5, "shown": {"beak": 0.5, "head": 0.5}},
                          "(class)": {"right": None, "shown": {"wing": 1.0}}}}
    (tmp_path / "closeups.json").write_text(json.dumps(closeups))
    text = model_card(tmp_path, cmds, "unused")
    assert text.startswith("# diffparts-toy-parts") and "part-world images" in text
    assert "| head | 0.75 | beak (0.25) |" in text and "| beak | 0.50 | head (0.50) |" in text
    assert "alone shows: wing 1.00" in text and "**0.62**" in text and "CMD-CLOSEUPS" in text
    assert "samples.png" not in text                                   # no grid was written
    assert "close-ups of (head, beak; an eye never fills a crop): **0.62**" in text
    # a record that names its corpus (train-toy writes it) gives that corpus in the command
    assert "--corpus work/partworld-s3" in train_commands({**record, "corpus": "work/partworld-s3"})
    assert "--corpus work/partworld " in train_commands({**record, "corpus": "/tmp/diffparts-birds-x1y2"})
