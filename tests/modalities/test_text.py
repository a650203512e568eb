"""Text: byte and BPE tokenizers, truncation counts, empty cells, config round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from omnifuse.config import parse_config
from omnifuse.errors import DataError
from omnifuse.manifest import Manifest
from omnifuse.modalities.text import BYTE_VOCAB, TextConfig, TextModality, bpe_tokenizer
from omnifuse.registry import create_modality
from omnifuse.train.run import prepare

TEXTS = ["a red circle in the market", "a blue square in the harbour", "the red square"] * 5
ROOT = Path(".")


def fitted_bpe(vocab_size: int = 300, max_length: int = 32) -> TextModality:
    manifest = Manifest(Path("m.jsonl"), [{"text": t} for t in [*TEXTS, None, ""]])
    config = TextConfig(tokenizer="bpe", vocab_size=vocab_size, max_length=max_length)
    fitted = create_modality("text", config).fit(manifest, range(len(manifest.rows)))
    modality = create_modality("text", fitted)
    assert isinstance(modality, TextModality)
    return modality


def test_bytes_are_shifted_by_one_and_empty_text_is_absent():
    modality = create_modality("text", TextConfig(max_length=4))
    assert modality.load({"text": "hé"}, ROOT).tolist() == [105, 196, 170]
    assert modality.load({"text": ""}, ROOT) is None
    assert modality.load({"text": None}, ROOT) is None
    assert modality.build_encoder(8).embed.num_embeddings == BYTE_VOCAB


def test_bpe_learns_merges_and_shortens_known_words():
    modality = fitted_bpe()
    merges = modality.config.merges
    assert merges and len(merges) <= 300 - 257
    ids = modality.load({"text": "the red square"}, ROOT)
    assert 0 < len(ids) < len("the red square")  # merged words are single tokens
    assert ids.min() >= 1 and ids.max() < modality.vocab_size  # 0 stays the padding id
    assert modality.build_encoder(8).embed.num_embeddings == modality.vocab_size


def test_bpe_falls_back_to_bytes_for_unseen_characters():
    from tokenizers import decoders

    modality = fitted_bpe()
    text = "日本 ☃ zq"
    ids = modality.load({"text": text}, ROOT).tolist()
    assert min(ids) >= 1
    tokenizer = bpe_tokenizer(modality.config.merges or [])
    tokenizer.decoder = decoders.ByteLevel()
    assert tokenizer.decode(ids) == text  # nothing lost: every byte has an id
    assert len(ids) >= len(text.encode()) - 2  # unseen characters cost about one id per byte


def test_bpe_tokenizer_is_rebuilt_from_the_saved_config_alone():
    modality = fitted_bpe()
    saved = json.loads(json.dumps(modality.config.model_dump(mode="json")))
    restored = create_modality("text", TextConfig.model_validate(saved))
    for text in ("the red square", "unseen words ü"):
        assert torch.equal(modality.load({"text": text}, ROOT), restored.load({"text": text}, ROOT))


def test_bpe_fit_is_deterministic_and_keeps_pinned_merges():
    a, b = fitted_bpe(), fitted_bpe()
    assert a.config.merges == b.config.merges
    manifest = Manifest(Path("m.jsonl"), [{"text": "zz zz zz"}] * 3)
    assert a.fit(manifest, [0, 1, 2]).merges == a.config.merges


def test_truncation_is_counted_and_reported():
    modality = fitted_bpe(max_length=3)
    modality.load({"text": "the red square in the market"}, ROOT)
    modality.load({"text": "a"}, ROOT)
    bytes_modality = create_modality("caption", TextConfig(max_length=5))
    for text in ("short", "longer text", "x"):
        bytes_modality.load({"caption": text}, ROOT)
    notes = bytes_modality.notes()
    assert notes == {
        "texts": 3,
        "truncated": 1,
        "message": "caption: 1 of 3 texts truncated to 5 tokens",
    }
    assert modality.notes()["truncated"] == 1
    assert create_modality("t", TextConfig()).notes() == {}


def test_prepare_reports_truncation_in_notes_and_log(tmp_path: Path, caplog):
    rows = [
        {"text": "x" * (10 if i % 4 == 0 else 3), "y": str(i % 2), "split": split}
        for i, split in enumerate(["train"] * 8 + ["val"] * 4)
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = parse_config(
        {
            "data": {"manifest": str(manifest)},
            "modalities": {"text": {"kind": "text", "max_length": 6}},
            "model": {"dim": 8, "tasks": {"y": {"type": "classification", "target": "y"}}},
        }
    )
    with caplog.at_level(logging.WARNING):
        prepared = prepare(config, progress=False)
    assert prepared.notes == {
        "text": {
            "texts": 12,
            "truncated": 3,
            "message": "text: 3 of 12 texts truncated to 6 tokens",
        }
    }
    assert "text: 3 of 12 texts truncated to 6 tokens" in caplog.text


def test_bad_text_cells_and_bpe_with_a_byte_encoder_are_clear_errors():
    with pytest.raises(DataError, match=r"column 'text': expected text, got int"):
        create_modality("text", TextConfig()).load({"text": 5}, ROOT)
    manifest = Manifest(Path("m.jsonl"), [{"text": "ok"}, {"text": 3}])
    with pytest.raises(DataError, match=r"m.jsonl row 2, column 'text': expected text, got int"):
        create_modality("text", TextConfig(tokenizer="bpe")).fit(manifest, [0, 1])
    with pytest.raises(DataError, match="not fitted"):
        create_modality("text", TextConfig(tokenizer="bpe")).load({"text": "hi"}, ROOT)
