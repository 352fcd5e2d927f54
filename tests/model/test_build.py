import json

from diffparts.model.build import build_tokenizer, caption_words, write_clip_tokenizer_files


def test_caption_words_are_distinct_lowercase_in_order():
    assert caption_words(["A red bird", "a Blue bird, red wings"]) == ["a", "red", "bird", "blue", "wings"]


def test_tokenizer_keeps_vocabulary_words_whole_and_spells_unknown_ones(tmp_path):
    tok = build_tokenizer(tmp_path, ["crimson", "wing"], max_length=16)
    pieces = tok.convert_ids_to_tokens(tok("a crimson wing qz").input_ids)
    assert pieces == ["<|startoftext|>", "a</w>", "crimson</w>", "wing</w>", "q", "z</w>", "<|endoftext|>"]
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    merges = (tmp_path / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version")
    # every merge product is itself a token, so no text maps to an unknown
    for line in merges[1:]:
        a, b = line.split(" ")
        assert a + b in vocab


def test_tiny_pipeline_saves_complete_sd_folder(tiny_pipeline):
    path, pipe = tiny_pipeline
    for sub in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        assert (path / sub).is_dir()
    assert not list(path.rglob("*.bin")), "weights must be safetensors only"
    assert list(path.rglob("*.safetensors"))
    out = pipe("a red bird", num_inference_steps=2, output_type="np", height=32, width=32)
    assert out.images.shape == (1, 32, 32, 3)
