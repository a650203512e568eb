"""Tiny random Hugging Face models written with save_pretrained into temporary directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "red", "blue", "##s", "##ed"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?")
TOKEN_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with a word-piece tokenizer over a few words and single characters."""
    directory = tmp_path_factory.mktemp("bert")
    vocab = directory / "vocab.txt"
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab.write_text("\n".join(special + WORDS + LETTERS) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab), model_max_length=64)
    config = transformers.BertConfig(
        vocab_size=len(special + WORDS + LETTERS),
        intermediate_size=64,
        max_position_embeddings=64,
        **SMALL,
    )
    transformers.BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer ViT on 32 x 32 images in 8 x 8 patches, with 0.5/0.5 normalisation."""
    directory = tmp_path_factory.mktemp("vit")
    config = transformers.ViTConfig(image_size=32, patch_size=8, intermediate_size=64, **SMALL)
    transformers.ViTModel(config).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    )
    return directory


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole tiny CLIP (text and vision towers); image_hf uses its vision tower."""
    directory = tmp_path_factory.mktemp("clip")
    config = transformers.CLIPConfig(
        text_config={"vocab_size": 99, "intermediate_size": 64, **SMALL, **TOKEN_IDS},
        vision_config={"image_size": 32, "patch_size": 8, "intermediate_size": 64, **SMALL},
        projection_dim=16,
    )
    transformers.CLIPModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def wav2vec2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer wav2vec2 whose two convolutions make one frame per 10 samples."""
    directory = tmp_path_factory.mktemp("wav2vec2")
    config = transformers.Wav2Vec2Config(
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        layerdrop=0.0,  # no random layer skipping or time masking while training: exact tests
        mask_time_prob=0.0,
        **SMALL,
    )
    transformers.Wav2Vec2Model(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Whisper with a one-second window: 100 mel frames of 16 bins, 50 tokens."""
    directory = tmp_path_factory.mktemp("whisper")
    config = transformers.WhisperConfig(
        vocab_size=99,
        num_mel_bins=16,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=50,
        max_target_positions=16,
        decoder_start_token_id=3,
        suppress_tokens=None,
        begin_suppress_tokens=None,
        **TOKEN_IDS,
    )
    transformers.WhisperModel(config).save_pretrained(directory)
    transformers.WhisperFeatureExtractor(feature_size=16, chunk_length=1).save_pretrained(directory)
    return directory
